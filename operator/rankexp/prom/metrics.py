"""Read an experiment's series from Prometheus as ``rankexp.analysis`` input.

:func:`rankexp.prom.queries.build_queries` is the PromQL (pure); :class:`ExperimentMetrics`
runs it at one evaluation time and turns the answers into the ``variants`` part of the
analysis input; :func:`analysis_input` wraps that into the whole payload that
:func:`rankexp.analysis.analyze` takes.

The router's ``router_exposures_total`` carries ``experiment`` itself; when the
scraper also sets it as a target label, the target label wins (the scraped one
becomes ``exported_experiment``), so both must name the same experiment.

Missing data is an error, never a zero: Prometheus unreachable raises
:class:`~rankexp.prom.errors.PrometheusUnavailable`, a series absent for a variant (or
with fewer than two samples in the window, which ``increase()`` cannot use) raises
:class:`~rankexp.prom.errors.MissingSeries`. Counts are ``increase()`` values and stay
floats: Prometheus extrapolates to the window's edges, so they are rarely integers.
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
from rankexp.prom.alerts import alert_query, drift_queries, drift_values
from rankexp.prom.errors import BadSeries, MissingSeries, PrometheusUnavailable, QueryError
from rankexp.prom.queries import (
    BUCKET_LATENCY_HISTOGRAM,
    BUCKET_SERIES,
    CLICKING_USERS,
    DEFAULT_FEATURES,
    EXPOSURES,
    FEATURE_HISTOGRAM,
    LATENCY_HISTOGRAM,
    OUTCOMES,
    PRE,
    QUERY_LABEL,
    REQUESTS,
    SCORE_HISTOGRAM,
    WINNERS,
    Sample,
    build_queries,
    combine,
    format_window,
    histogram_bins,
    pre_queries,
    selector,
)


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
