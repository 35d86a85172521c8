"""Read an experiment's series from Prometheus as ``rankexp.analysis`` input.

:func:`build_queries` is the PromQL (pure); :class:`ExperimentMetrics` runs it
at one evaluation time and turns the answers into the ``variants`` part of the
analysis input; :func:`analysis_input` wraps that into the whole payload that
:func:`rankexp.analysis.analyze` takes.

Series are selected by the ``experiment`` (and optionally ``namespace``) labels
that the scrape configuration attaches to every target of an experiment. The
router's ``router_exposures_total`` carries ``experiment`` itself; when the
scraper also sets it as a target label, the target label wins (the scraped one
becomes ``exported_experiment``), so both must name the same experiment.

Missing data is an error, never a zero: Prometheus unreachable raises
:class:`PrometheusUnavailable`, a series absent for a variant (or with fewer
than two samples in the window, which ``increase()`` cannot use) raises
:class:`MissingSeries`. Counts are ``increase()`` values and stay floats:
Prometheus extrapolates to the window's edges, so they are rarely integers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.exceptions import RequestException
from urllib3.util.retry import Retry

from ranker.protocol.hashing import N_ANALYSIS_BUCKETS

#: analysis bucket series -> the ranker's counter
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


class MetricsError(Exception):
    """Base class: the metrics could not be read; no decision should be taken."""


class PrometheusUnavailable(MetricsError):
    """No Prometheus API answered (connection refused, timeout, 5xx, 404)."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"Prometheus at {url} is unavailable: {cause}")
        self.url = url
        self.cause = cause


class QueryError(MetricsError):
    """Prometheus rejected a query (400 or 422, e.g. bad PromQL)."""

    def __init__(self, query: str, cause: str) -> None:
        super().__init__(f"query {query!r} failed: {cause}")
        self.query = query
        self.cause = cause


class MissingSeries(MetricsError):
    """``metric`` has no data for ``variant`` in the window.

    ``missing`` lists every (metric, variant) pair found missing in the same read.
    """

    def __init__(self, metric: str, variant: str, missing: Sequence[tuple[str, str]] = ()) -> None:
        self.metric = metric
        self.variant = variant
        self.missing = list(missing) or [(metric, variant)]
        pairs = ", ".join(f"{m} for {v}" for m, v in self.missing)
        super().__init__(f"no data in the window: {pairs}")


class BadSeries(MetricsError):
    """A series has an unexpected shape (bucket label out of range, histogram edges)."""

    def __init__(self, metric: str, variant: str, detail: str) -> None:
        super().__init__(f"{metric} for {variant}: {detail}")
        self.metric = metric
        self.variant = variant
        self.detail = detail


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


class ExperimentMetrics:
    """Reads one experiment's window from Prometheus through ``PrometheusConnect``.

    ``retries`` applies to connection errors and 5xx answers; keep it low in a
    reconcile loop, which retries on its own schedule.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retries: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        retry = Retry(
            total=retries, backoff_factor=0.2, status_forcelist=(502, 503, 504),
            raise_on_status=False,
        )  # fmt: skip
        self.client = PrometheusConnect(
            self.url, headers=dict(headers) if headers else None, retry=retry
        )
        self.timeout = timeout

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ExperimentMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, promql: str, at: datetime) -> list[Sample]:
        """Instant query at ``at``: ``[(labels, value)]``; typed errors, never empty on failure."""
        try:
            result = self.client.custom_query(
                promql, params={"time": f"{at.timestamp():.3f}"}, timeout=self.timeout
            )
        except RequestException as exc:
            raise PrometheusUnavailable(self.url, f"{type(exc).__name__}: {exc}") from exc
        except PrometheusApiClientException as exc:
            # Prometheus answers 400 (bad_data) or 422 (execution) to a bad query;
            # anything else (404, 5xx) means no working Prometheus API at this URL.
            text = str(exc)
            if re.search(r"HTTP Status Code (400|422)\b", text):
                raise QueryError(promql, text) from exc
            raise PrometheusUnavailable(self.url, text) from exc
        except ValueError as exc:  # a body that is not JSON: not a Prometheus
            raise PrometheusUnavailable(self.url, f"unexpected answer: {exc}") from exc
        if not isinstance(result, list):
            raise PrometheusUnavailable(self.url, f"unexpected answer to {promql!r}")
        return [(dict(r["metric"]), float(r["value"][1])) for r in result]

    def query_many(self, queries: Mapping[str, str], at: datetime) -> dict[str, list[Sample]]:
        """Several instant queries at ``at`` in one request (:func:`combine`): the samples
        of each, by key, without the key label."""
        out: dict[str, list[Sample]] = {key: [] for key in queries}
        for labels, value in self.query(combine(queries), at):
            key = labels.pop(QUERY_LABEL, None)
            if key in out:
                out[key].append((labels, value))
        return out

    def read(
        self,
        experiment: str,
        variants: Sequence[str],
        window: str | timedelta,
        end: datetime | None = None,
        *,
        namespace: str | None = None,
        features: Sequence[str] = DEFAULT_FEATURES,
        pre_period: tuple[timedelta, datetime] | None = None,
        pre_series: Sequence[str] = (),
    ) -> dict[str, dict[str, Any]]:
        """The ``variants`` part of the analysis input over ``(end - window, end]``.

        With ``pre_period`` = (window, start), also ``pre_buckets`` of the ``pre_series``
        over the window before ``start`` (CUPED's covariate), where Prometheus has them;
        their absence is not missing data (the analysis runs unadjusted and says why).

        ``end`` defaults to now (a naive datetime is taken as UTC); every query is
        evaluated at that same instant.
        Histograms: ``score`` plus one per name in ``features``. ``latency_p95_ms``
        is None when the latency histogram exists but saw no request in the window.
        Raises :class:`MissingSeries` listing every (metric, variant) without data.
        """
        at = datetime.now(UTC) if end is None else end
        if at.tzinfo is None:  # a naive end is UTC, not the machine's local time
            at = at.replace(tzinfo=UTC)
        queries = build_queries(experiment, window, namespace)
        if pre_period is not None and pre_series:
            pre_window, before = pre_period
            queries.update(pre_queries(experiment, pre_series, pre_window, before, namespace))
        answers = self.query_many(queries, at)
        missing: list[tuple[str, str]] = []
        out: dict[str, dict[str, Any]] = {v: {"buckets": {}, "histograms": {}} for v in variants}

        for key, metric in BUCKET_SERIES.items():
            per = _buckets_by_variant(answers[key], metric)
            for v in variants:
                if v in per:
                    out[v]["buckets"][key] = per[v]
                else:
                    missing.append((metric, v))

        scores = _cumulative(answers["score"], SCORE_HISTOGRAM, ())
        feats = _cumulative(answers["features"], FEATURE_HISTOGRAM, ("feature",))
        for v in variants:
            if (v,) in scores:
                out[v]["histograms"]["score"] = histogram_bins(scores[(v,)], SCORE_HISTOGRAM, v)
            else:
                missing.append((SCORE_HISTOGRAM, v))
            for f in features:
                if (v, f) in feats:
                    name = f'{FEATURE_HISTOGRAM}{{feature="{f}"}}'
                    out[v]["histograms"][f] = histogram_bins(feats[(v, f)], name, v)
                else:
                    missing.append((f'{FEATURE_HISTOGRAM}{{feature="{f}"}}', v))

        latency = _by_variant(answers["latency_p95_seconds"])
        # Only the latency non-inferiority guardrail needs these (a ranker image older
        # than the series has none): absent is not missing here, the analysis holds
        # when that guardrail is configured and a variant has none.
        for v, hist in _latency_by_bucket(answers["latency_buckets"]).items():
            if v in out:
                out[v]["latency_histogram"] = hist
        requests = _by_variant(answers["requests"])
        errors = _by_variant(answers["errors"])
        exposures = _by_variant(answers["exposures"])
        for v in variants:
            if v in latency:
                # NaN: the histogram exists but no request fell in the window.
                p95 = latency[v]
                out[v]["latency_p95_ms"] = p95 * 1000.0 if math.isfinite(p95) else None
            else:
                missing.append((LATENCY_HISTOGRAM, v))
            if v in requests:
                out[v]["requests"] = requests[v]
                # ranking_errors_total{endpoint="rank"} only appears after a first 5xx,
                # so its absence next to a present requests series means 0 errors, not
                # missing data. increase() extrapolates each series separately: clamp.
                out[v]["errors"] = min(errors.get(v, 0.0), requests[v])
            else:
                missing.append((REQUESTS, v))
            if v in exposures:
                out[v]["exposures"] = exposures[v]
            else:
                missing.append((EXPOSURES, v))

        for key in pre_series if pre_period is not None else ():
            for v, values in _buckets_by_variant(answers[PRE + key], BUCKET_SERIES[key]).items():
                if v in out:
                    out[v].setdefault("pre_buckets", {})[key] = values

        if missing:
            raise MissingSeries(*missing[0], missing=missing)
        return out

    def exposures_between(
        self,
        experiment: str,
        segments: Sequence[tuple[datetime, datetime]],
        *,
        namespace: str | None = None,
    ) -> list[dict[str, float]]:
        """Feeds the router served per variant in each ``(start, end)``.

        For the sample-ratio check across weight changes. A period too short for
        ``increase()`` (fewer than two samples) served no measurable traffic: empty.
        """
        if not segments:
            return []
        sel = selector(experiment, namespace)
        queries: dict[str, str] = {}
        for i, (start, end) in enumerate(segments):
            window = format_window(max(end - start, timedelta(seconds=1)))
            # each period at its own end (the @ modifier), all in one request
            at_end = f"@ {end.timestamp():.3f}"
            queries[str(i)] = f"sum by (variant) (increase({EXPOSURES}{sel}[{window}] {at_end}))"
        answers = self.query_many(queries, max(end for _, end in segments))
        return [
            {
                labels.get("variant", ""): value
                for labels, value in answers[str(i)]
                if math.isfinite(value) and value > 0
            }
            for i in range(len(segments))
        ]

    def interleaving(
        self,
        experiment: str,
        window: str | timedelta,
        end: datetime | None = None,
        *,
        namespace: str | None = None,
    ) -> tuple[dict[str, list[float]], float]:
        """An interleaving experiment's outcomes over ``(end - window, end]``: per winner
        (control, treatment, tie) the 64 user-bucket counts of clicked feeds, and the
        users seen clicking. The router creates an outcome series at its first count, so
        an absent one is 0, not missing (a router without live series is caught by
        :meth:`stale`)."""
        at = datetime.now(UTC) if end is None else end
        w = format_window(window)
        sel = selector(experiment, namespace)
        answers = self.query_many(
            {
                "outcomes": f"sum by (winner, bucket) (increase({OUTCOMES}{sel}[{w}]))",
                "users": f"sum(increase({CLICKING_USERS}{sel}[{w}]))",
            },
            at,
        )
        out = {name: [0.0] * N_ANALYSIS_BUCKETS for name in WINNERS}
        for labels, value in answers["outcomes"]:
            name, raw = labels.get("winner", ""), labels.get("bucket", "")
            if name not in out or not raw.isdigit() or not 0 <= int(raw) < N_ANALYSIS_BUCKETS:
                raise BadSeries(OUTCOMES, name, f"winner/bucket labels {name!r}/{raw!r}")
            out[name][int(raw)] = _finite(value, OUTCOMES, name)
        users = answers["users"]
        clicking = _finite(users[0][1], CLICKING_USERS, "router") if users else 0.0
        return out, clicking

    def stale(
        self,
        experiment: str,
        variants: Sequence[str],
        at: datetime | None = None,
        *,
        namespace: str | None = None,
    ) -> list[str]:
        """What has no live series at ``at``: each variant without a scraped ranker, and
        ``router`` without a scraped router.

        A range query keeps reading the samples of a process that died; an instant
        query does not (Prometheus marks a target's series stale at its first failed
        scrape), so this tells a window of old data from a live experiment.
        """
        at = datetime.now(UTC) if at is None else at
        sel = selector(experiment, namespace)
        answers = self.query_many(
            {
                "rankers": f"count by (variant) ({REQUESTS}{sel})",
                "router": f"count({EXPOSURES}{sel})",
            },
            at,
        )
        rankers = {labels.get("variant", "") for labels, _ in answers["rankers"]}
        out = [v for v in variants if v not in rankers]
        if not answers["router"]:
            out.append("router")
        return out

    def alert_values(
        self, metric: str, window: str, matchers: str = "", at: datetime | None = None
    ) -> list[Sample]:
        """One named alert metric's values now, per (namespace, experiment, variant)."""
        at = datetime.now(UTC) if at is None else at
        if metric == "drift_psi":
            recent, baseline = drift_queries(window, matchers)
            return drift_values(self.query(recent, at), self.query(baseline, at))
        return [
            (labels, value)
            for labels, value in self.query(alert_query(metric, window, matchers), at)
            if math.isfinite(value)
        ]


def _finite(value: float, metric: str, variant: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise BadSeries(metric, variant, f"value {value} is not a non-negative number")
    return value


def _buckets_by_variant(samples: list[Sample], metric: str) -> dict[str, list[float]]:
    """(variant, bucket) samples -> per variant a list of N_ANALYSIS_BUCKETS values.

    A bucket without a sample is 0, and only when the variant has other buckets
    of the metric: the ranker pre-creates all 64 series at 0, so a present
    metric has every bucket; a variant with none is left out (missing).
    """
    out: dict[str, list[float]] = {}
    for labels, value in samples:
        variant = labels.get("variant", "")
        raw = labels.get("bucket", "")
        if not raw.isdigit() or not 0 <= int(raw) < N_ANALYSIS_BUCKETS:
            raise BadSeries(metric, variant, f"bucket label {raw!r} not in 0..63")
        row = out.setdefault(variant, [0.0] * N_ANALYSIS_BUCKETS)
        row[int(raw)] = _finite(value, metric, variant)
    return out


def _cumulative(
    samples: list[Sample], metric: str, extra: tuple[str, ...]
) -> dict[tuple[str, ...], dict[float, float]]:
    """Histogram bucket samples -> {(variant, *extra labels): {le: cumulative count}}."""
    out: dict[tuple[str, ...], dict[float, float]] = {}
    for labels, value in samples:
        key = (labels.get("variant", ""), *(labels.get(k, "") for k in extra))
        le = float(labels.get("le", "nan"))
        if math.isnan(le):
            raise BadSeries(metric, key[0], f"bad le label {labels.get('le')!r}")
        out.setdefault(key, {})[le] = _finite(value, metric, key[0])
    return out


def _latency_by_bucket(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    """(variant, bucket, le) cumulative samples -> per variant ``{le, counts}``: the finite
    upper bounds, and per user bucket (all 64) the per-bin counts with the ``+Inf``
    overflow last (the analysis' ``latency_histogram``). A bucket without samples is
    zeros; extrapolation noise (a cumulative count a hair below the previous) clamps to 0.
    """
    metric = BUCKET_LATENCY_HISTOGRAM
    cum: dict[str, dict[int, dict[float, float]]] = {}
    for labels, value in samples:
        variant, raw = labels.get("variant", ""), labels.get("bucket", "")
        if not raw.isdigit() or not 0 <= int(raw) < N_ANALYSIS_BUCKETS:
            raise BadSeries(metric, variant, f"bucket label {raw!r} not in 0..63")
        le = float(labels.get("le", "nan"))
        if math.isnan(le):
            raise BadSeries(metric, variant, f"bad le label {labels.get('le')!r}")
        cum.setdefault(variant, {}).setdefault(int(raw), {})[le] = _finite(value, metric, variant)
    out: dict[str, dict[str, Any]] = {}
    for variant, per_bucket in cum.items():
        bounds = sorted({le for b in per_bucket.values() for le in b if math.isfinite(le)})
        if not bounds or bounds[0] <= 0:
            raise BadSeries(metric, variant, f"le bounds {bounds} (need positive finite ones)")
        rows: list[list[float]] = []
        for b in range(N_ANALYSIS_BUCKETS):
            series = per_bucket.get(b, {})
            row, previous = [], 0.0
            for le in (*bounds, math.inf):
                c = series.get(le, previous)
                row.append(max(c - previous, 0.0))
                previous = max(c, previous)
            rows.append(row)
        out[variant] = {"le": bounds, "counts": rows}
    return out


def _by_variant(samples: list[Sample]) -> dict[str, float]:
    return {labels.get("variant", ""): value for labels, value in samples}


_DRIFT_ACTIONS = {"block": "block", "rollback": "rollback", "alert": "block"}


def _guardrails_payload(
    guardrails: Mapping[str, float] | Sequence[Mapping[str, Any]] | None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """``{metric: max}``, or the list as given when it has non-inferiority
    entries (``{metric, nonInferiorityMargin}``), which only the list form holds."""
    if isinstance(guardrails, Mapping):
        return dict(guardrails)
    items = [dict(g) for g in guardrails or ()]
    if any("max" not in g for g in items):
        return items
    return {str(g["metric"]): g["max"] for g in items}


def analysis_input(
    *,
    control: str,
    weights: Mapping[str, float],
    variants: Mapping[str, Mapping[str, Any]],
    method: str = "sequential",
    alpha: float = 0.05,
    primary_metric: str = "ctr",
    secondary_metrics: Sequence[str] | None = None,
    guardrails: Mapping[str, float] | Sequence[Mapping[str, Any]] | None = None,
    min_samples_per_variant: float = 1000,
    srm_p_value: float = 0.001,
    srm_exposures: Mapping[str, float] | None = None,
    drift: Mapping[str, Any] | None = None,
    mde: float | None = None,
    elapsed_seconds: float | None = None,
    max_duration_seconds: float | None = None,
    experiment: str | None = None,
    cuped: bool = False,
) -> dict[str, Any]:
    """The whole ``rankexp.analysis.analyze`` payload, validated with ``parse_input``.

    ``weights`` are the effective weights of the window (percent, summing to 100).
    ``guardrails`` as ``{metric: max}`` or the CRD's ``[{metric, max}]``, whose entries
    may also be ``{metric, nonInferiorityMargin}`` (then passed on as a list). ``drift``:
    ``{psi, ks_p_value (or ksPValue), action}`` where the CRD's ``alert`` maps to
    ``block`` and ``none`` drops the histograms (no drift gating); None keeps the
    analysis defaults. Raises ``rankexp.analysis.InputError`` on an invalid payload.
    """
    from rankexp.analysis import parse_input

    data = {name: dict(v) for name, v in variants.items()}
    payload: dict[str, Any] = {
        "control": control,
        "method": method,
        "alpha": alpha,
        "primary_metric": primary_metric,
        "weights": dict(weights),
        "guardrails": _guardrails_payload(guardrails),
        "min_samples_per_variant": min_samples_per_variant,
        "srm_p_value": srm_p_value,
    }  # fmt: skip
    if experiment is not None:
        payload["experiment"] = experiment
    if cuped:
        payload["cuped"] = {"enabled": True}
    if srm_exposures is not None:
        payload["srm_exposures"] = dict(srm_exposures)
    if secondary_metrics is not None:
        payload["secondary_metrics"] = list(secondary_metrics)
    if drift is not None:
        action = str(drift.get("action", "block"))
        if action == "none":
            for v in data.values():
                v.pop("histograms", None)
        else:
            cfg: dict[str, Any] = {"action": _DRIFT_ACTIONS.get(action, action)}
            if "psi" in drift:
                cfg["psi"] = drift["psi"]
            ks = drift.get("ks_p_value", drift.get("ksPValue"))
            if ks is not None:
                cfg["ks_p_value"] = ks
            if drift.get("histograms") is not None:
                cfg["histograms"] = list(drift["histograms"])
            payload["drift"] = cfg
    for key, value in (
        ("mde", mde),
        ("elapsed_seconds", elapsed_seconds),
        ("max_duration_seconds", max_duration_seconds),
    ):
        if value is not None:
            payload[key] = value
    payload["variants"] = data
    parse_input(payload)
    return payload


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
