"""The PromQL of an experiment's window (pure): series names, selectors, one combined request,
and the shape of a histogram's answer.

Series are selected by the ``experiment`` (and optionally ``namespace``) labels that the
scrape configuration attaches to every target of an experiment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from rankexp.prom.errors import BadSeries

BUCKET_SERIES: dict[str, str] = {
    "impressions": "ranking_impressions_total",
    "clicks": "ranking_clicks_total",
    "engagements": "ranking_engagements_total",
    "dwell_seconds": "ranking_dwell_seconds_total",
    "dwell_events": "ranking_dwell_events_total",
}
SCORE_HISTOGRAM = "ranking_score"
FEATURE_HISTOGRAM = "ranking_feature_value"
LATENCY_HISTOGRAM = "ranking_latency_seconds"
#: the same latency by user bucket (the latency non-inferiority guardrail's replicates)
BUCKET_LATENCY_HISTOGRAM = "ranking_bucket_latency_seconds"
REQUESTS = "ranking_requests_total"
ERRORS = "ranking_errors_total"
EXPOSURES = "router_exposures_total"
OUTCOMES = "router_interleaving_outcomes_total"
CLICKING_USERS = "router_interleaving_clicking_users_total"
WINNERS = ("control", "treatment", "tie")
DEFAULT_FEATURES: tuple[str, ...] = ("age", "like_rate", "total_interactions")

_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
#: The label :func:`combine` puts on each answer: which of the combined queries it is.
QUERY_LABEL = "rankexp_query"


def format_window(window: str | timedelta) -> str:
    """A PromQL range duration: ``"5m"`` as given (validated), a timedelta in s or ms."""
    if isinstance(window, timedelta):
        ms = round(window.total_seconds() * 1000)
        if ms <= 0:
            raise ValueError(f"window must be positive, got {window}")
        return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
    if not _DURATION.match(window) or not any(c in "123456789" for c in window):
        raise ValueError(f"window {window!r} is not a positive Prometheus duration like '5m'")
    return window


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def selector(experiment: str, namespace: str | None = None, **labels: str) -> str:
    """Label matchers ``{experiment="...",namespace="...",k="v"}``, values escaped."""
    pairs = {"experiment": experiment, **({"namespace": namespace} if namespace else {}), **labels}
    return "{" + ",".join(f"{k}={_quote(v)}" for k, v in pairs.items()) + "}"


def build_queries(
    experiment: str, window: str | timedelta, namespace: str | None = None
) -> dict[str, str]:
    """PromQL for every input of the analysis, keyed by what it reads.

    Keys: the bucket series (impressions, clicks, engagements, dwell_seconds,
    dwell_events) by (variant, bucket); ``score`` by (variant, le);
    ``features`` by (variant, feature, le); ``latency_buckets`` by (variant, bucket,
    le); ``latency_p95_seconds``,
    ``requests``, ``errors`` (endpoint="rank") and ``exposures`` by variant.
    """
    w = format_window(window)
    sel = selector(experiment, namespace)
    rank = selector(experiment, namespace, endpoint="rank")
    queries = {
        key: f"sum by (variant, bucket) (increase({name}{sel}[{w}]))"
        for key, name in BUCKET_SERIES.items()
    }
    queries["score"] = f"sum by (variant, le) (increase({SCORE_HISTOGRAM}_bucket{sel}[{w}]))"
    queries["features"] = (
        f"sum by (variant, feature, le) (increase({FEATURE_HISTOGRAM}_bucket{sel}[{w}]))"
    )
    queries["latency_p95_seconds"] = (
        f"histogram_quantile(0.95, sum by (variant, le) "
        f"(rate({LATENCY_HISTOGRAM}_bucket{sel}[{w}])))"
    )
    queries["latency_buckets"] = (
        f"sum by (variant, bucket, le) (increase({BUCKET_LATENCY_HISTOGRAM}_bucket{sel}[{w}]))"
    )
    queries["requests"] = f"sum by (variant) (increase({REQUESTS}{rank}[{w}]))"
    queries["errors"] = f"sum by (variant) (increase({ERRORS}{rank}[{w}]))"
    queries["exposures"] = f"sum by (variant) (increase({EXPOSURES}{sel}[{w}]))"
    return queries


Sample = tuple[dict[str, str], float]

#: query keys of the pre-period series: "pre_" + the bucket series key
PRE = "pre_"


def pre_queries(
    experiment: str,
    series: Sequence[str],
    window: str | timedelta,
    before: datetime,
    namespace: str | None = None,
) -> dict[str, str]:
    """PromQL for the per-bucket sums of ``series`` (keys of ``BUCKET_SERIES``) over the
    ``window`` that ends at ``before`` (the run's start), evaluated there with ``@``: the
    covariate of CUPED. Keyed ``pre_<series>``."""
    w = format_window(window)
    sel = selector(experiment, namespace)
    at = f"{before.timestamp():.3f}"
    return {
        PRE + key: f"sum by (variant, bucket) (increase({BUCKET_SERIES[key]}{sel}[{w}] @ {at}))"
        for key in series
    }


def combine(queries: Mapping[str, str]) -> str:
    """One PromQL expression answering every query: each answer labelled with its key
    (``rankexp_query``), the answers joined with ``or`` (whose sides never match, since
    their key labels differ). One HTTP request instead of one per query: a thousand
    Experiments' analyses cost Prometheus (and the operator) a tenth of the requests."""
    return " or ".join(
        f'label_replace({q}, "{QUERY_LABEL}", "{key}", "", "")' for key, q in queries.items()
    )


def histogram_bins(
    cumulative: Mapping[float, float], metric: str = "histogram", variant: str = ""
) -> dict[str, list[float]]:
    """Cumulative ``le`` counts -> ``{edges, counts}`` with per-bin counts.

    Edges are the finite ``le`` bounds preceded by a lower edge: 0 when the first
    bound is positive (every histogram here is of non-negative values), else one
    bin width below it. The ``+Inf`` overflow is folded into the last bin, so the
    counts add up to the histogram's total. ``increase()`` extrapolates each
    ``le`` series separately, so a bin can come out a hair below 0: clamped to 0.
    """
    finite = sorted(le for le in cumulative if math.isfinite(le))
    if not finite:
        raise BadSeries(metric, variant, "no finite le bucket")
    if finite[0] > 0:
        lower = 0.0
    else:
        lower = finite[0] - (finite[1] - finite[0] if len(finite) > 1 else 1.0)
    counts: list[float] = []
    previous = 0.0
    for le in finite:
        counts.append(max(cumulative[le] - previous, 0.0))
        previous = cumulative[le]
    overflow = cumulative.get(math.inf)
    if overflow is not None:
        counts[-1] += max(overflow - previous, 0.0)
    return {"edges": [lower, *finite], "counts": counts}
