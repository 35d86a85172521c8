"""The PromQL of AlertPolicy's named metrics, grouped by namespace, experiment, variant."""

from __future__ import annotations

import math

from rankexp.prom.queries import (
    BUCKET_SERIES,
    ERRORS,
    LATENCY_HISTOGRAM,
    REQUESTS,
    SCORE_HISTOGRAM,
    Sample,
    format_window,
    histogram_bins,
)

# ----------------------------------------------------------------------------- alerting

#: Every named alert metric is one value per (namespace, experiment, variant).
ALERT_GROUP = "namespace, experiment, variant"


def _ratio(num: str, den: str, sel: str, window: str, fn: str = "rate") -> str:
    return (
        f"sum by ({ALERT_GROUP}) ({fn}({num}{sel}[{window}])) / "
        f"sum by ({ALERT_GROUP}) ({fn}({den}{sel}[{window}]))"
    )


def alert_query(metric: str, window: str, matchers: str = "") -> str:
    """PromQL of a named alert metric (all but ``drift_psi``, which needs the histograms'
    bins: :meth:`ExperimentMetrics.alert_values`). ``matchers`` scopes it, e.g.
    ``namespace="team-a",experiment=~"feed|ads"``."""
    w = format_window(window)
    sel = "{" + matchers + "}" if matchers else ""
    rank = "{" + ",".join(x for x in (matchers, 'endpoint="rank"') if x) + "}"
    g = ALERT_GROUP
    queries = {
        "latency_p95_ms": (
            f"histogram_quantile(0.95, sum by ({g}, le) "
            f"(rate({LATENCY_HISTOGRAM}_bucket{sel}[{w}]))) * 1000"
        ),
        # errors appear only after a first 5xx: "or requests * 0" keeps healthy variants at 0
        "error_rate": (
            f"(sum by ({g}) (rate({ERRORS}{sel}[{w}])) or sum by ({g}) "
            f"(rate({REQUESTS}{sel}[{w}])) * 0) / sum by ({g}) (rate({REQUESTS}{sel}[{w}]))"
        ),
        "cache_hit_rate": _ratio(
            "ranking_cache_hits_total", "ranking_cache_requests_total", sel, w
        ),
        "ctr": _ratio(BUCKET_SERIES["clicks"], BUCKET_SERIES["impressions"], sel, w, "increase"),
        "engagement_rate": _ratio(
            BUCKET_SERIES["engagements"], BUCKET_SERIES["impressions"], sel, w, "increase"
        ),
        "request_rate": f"sum by ({g}) (rate({REQUESTS}{rank}[{w}]))",
        "fallback_rate": _ratio("router_fallbacks_total", "router_requests_total", sel, w),
    }
    if metric not in queries:
        raise ValueError(f"no PromQL for the alert metric {metric!r}")
    # Only processes that are scraped now: a range still holds a dead process's samples,
    # which would keep (or bring back) its alerts for a whole window.
    live = "router_requests_total" if metric == "fallback_rate" else REQUESTS
    return f"({queries[metric]}) and on ({g}) count by ({g}) ({live}{sel})"


#: drift_psi: a variant's score distribution over the rule's window against its own
#: trailing hour; no value below this many scores in the window.
DRIFT_BASELINE = "1h"
DRIFT_MIN_COUNT = 100


def drift_queries(window: str, matchers: str = "") -> tuple[str, str]:
    """The recent and the baseline score histograms, of live processes only."""
    sel = "{" + matchers + "}" if matchers else ""
    live = f"count by ({ALERT_GROUP}) ({REQUESTS}{sel})"
    q = "sum by ({g}, le) (increase({h}_bucket{sel}[{w}])) and on ({g}) {live}"
    recent = q.format(g=ALERT_GROUP, h=SCORE_HISTOGRAM, sel=sel, w=format_window(window),
                      live=live)  # fmt: skip
    baseline = q.format(g=ALERT_GROUP, h=SCORE_HISTOGRAM, sel=sel, w=DRIFT_BASELINE, live=live)
    return recent, baseline


def drift_values(recent: list[Sample], baseline: list[Sample]) -> list[Sample]:
    """PSI of each (namespace, experiment, variant)'s recent score histogram against its
    baseline (pure; from the answers of :func:`drift_queries`)."""
    from rankexp.analysis import psi

    keys = ("namespace", "experiment", "variant")
    now = _cumulative_by(recent, keys)
    base = _cumulative_by(baseline, keys)
    out: list[Sample] = []
    for key, cum in now.items():
        if key not in base:
            continue
        a = histogram_bins(base[key], SCORE_HISTOGRAM, key[2])["counts"]
        b = histogram_bins(cum, SCORE_HISTOGRAM, key[2])["counts"]
        if len(a) != len(b) or sum(b) < DRIFT_MIN_COUNT or sum(a) <= 0:
            continue
        out.append((dict(zip(keys, key, strict=True)), float(psi(a, b))))
    return out


def _cumulative_by(
    samples: list[Sample], keys: tuple[str, ...]
) -> dict[tuple[str, ...], dict[float, float]]:
    out: dict[tuple[str, ...], dict[float, float]] = {}
    for labels, value in samples:
        le = float(labels.get("le", "nan"))
        if math.isnan(le) or not math.isfinite(value):
            continue
        out.setdefault(tuple(labels.get(k, "") for k in keys), {})[le] = max(value, 0.0)
    return out
