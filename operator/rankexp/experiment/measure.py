"""One analysis of one Experiment: read its window from Prometheus, build the analysis input
(A/B or interleaving; CUPED pre-period, drift features, the sample-ratio periods) and run
:func:`rankexp.analysis.analyze`. Returns a :class:`Decision`: the record, or why none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from rankexp.analysis import InputError, analyze, parse_duration
from rankexp.analysis.models import METRICS
from rankexp.api import Analysis, ExperimentSpec
from rankexp.experiment import evidence, rollout
from rankexp.experiment import resources as res
from rankexp.prom.errors import MetricsError, MissingSeries, PrometheusUnavailable
from rankexp.prom.metrics import analysis_input
from rankexp.prom.queries import DEFAULT_FEATURES

SCORE = "score"
#: After the router's rollout is done, its old pods drain (preStop) for a few seconds.
SETTLE_MARGIN = timedelta(seconds=res.PRESTOP_SECONDS + 3)


class MetricsReader(Protocol):
    """The part of :class:`rankexp.prom.metrics.ExperimentMetrics` the loop uses."""

    def read(
        self,
        experiment: str,
        variants: list[str],
        window: timedelta,
        end: datetime | None = None,
        *,
        namespace: str | None = None,
        features: tuple[str, ...] = ...,
        pre_period: tuple[timedelta, datetime] | None = ...,
        pre_series: tuple[str, ...] = ...,
    ) -> dict[str, dict[str, Any]]: ...

    def exposures_between(
        self,
        experiment: str,
        segments: list[tuple[datetime, datetime]],
        *,
        namespace: str | None = None,
    ) -> list[dict[str, float]]: ...

    def stale(
        self,
        experiment: str,
        variants: list[str],
        at: datetime | None = None,
        *,
        namespace: str | None = None,
    ) -> list[str]: ...

    def interleaving(
        self,
        experiment: str,
        window: timedelta,
        end: datetime | None = None,
        *,
        namespace: str | None = None,
    ) -> tuple[dict[str, list[float]], float]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Settings:
    """How the loop runs: Prometheus and the interval scale (tests shrink every interval)."""

    prometheus_url: str | None = None
    interval_scale: float = 1.0
    timeout: float = 10.0


def fmt_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Decision:
    record: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    observations: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (condition reason, message) when there is no decision record
    error: tuple[str, str] | None = None


def _features(analysis: Analysis) -> tuple[tuple[str, ...], list[str]]:
    """(features to read, histograms that gate drift). The score histogram is always
    read and reported; it gates only when listed, because two different models score
    differently by design (a model's drift over time is the model_drift alert's job)."""
    listed = list(analysis.drift.features) if analysis.drift else list(DEFAULT_FEATURES)
    listed = listed or list(DEFAULT_FEATURES)
    read = tuple(f for f in dict.fromkeys(listed) if f != SCORE)
    return read, list(dict.fromkeys(listed))


def decide_tick(
    spec: ExperimentSpec,
    analysis: Analysis,
    experiment: res.ExperimentRef,
    status: Mapping[str, Any],
    started: datetime,
    now: datetime,
    settings: Settings,
    reader_factory: Callable[[], MetricsReader],
) -> Decision:
    if not settings.prometheus_url:
        return Decision(
            error=("PrometheusUnavailable", "no Prometheus URL is configured (--prometheus-url)")
        )
    names = [v.name for v in spec.variants]
    read_features, gating = _features(analysis)
    try:
        reader = reader_factory()
    except MetricsError as exc:
        return Decision(error=("PrometheusUnavailable", str(exc)))
    try:
        stale = reader.stale(experiment.name, names, now, namespace=experiment.namespace)
        if stale:
            return Decision(
                error=(
                    "MissingData",
                    f"no live series for {', '.join(stale)} (not scraped now); "
                    "old samples in the window are not trusted",
                )
            )
        pre = _pre_period(analysis, started)
        # only with CUPED on: readers that predate the pre-period need not know of it
        extra: dict[str, Any] = {"pre_period": pre[0], "pre_series": pre[1]} if pre else {}
        data = reader.read(
            experiment.name,
            names,
            now - started,
            now,
            namespace=experiment.namespace,
            features=read_features,
            **extra,
        )
        periods = rollout.srm_segments(
            status.get("trafficHistory") or [], started, now, SETTLE_MARGIN
        )
        counts = reader.exposures_between(
            experiment.name, [(a, b) for a, b, _ in periods], namespace=experiment.namespace
        )
        interleaved = (
            reader.interleaving(experiment.name, now - started, now, namespace=experiment.namespace)
            if spec.mode == "interleaving"
            else None
        )
    except PrometheusUnavailable as exc:
        return Decision(error=("PrometheusUnavailable", str(exc)))
    except MissingSeries as exc:
        return Decision(error=("MissingData", str(exc)))
    except MetricsError as exc:
        return Decision(error=("MissingData", f"metrics unreadable: {exc}"))
    finally:
        reader.close()

    traffic = {str(t["variant"]): int(t["weight"]) for t in status.get("traffic") or []}
    # The sample-ratio check counts only settled traffic: after a weight change the
    # router's rollout serves the old split for a few seconds more.
    expected = rollout.expected_weights(
        [(w, sum(c.values())) for (_, _, w), c in zip(periods, counts, strict=True)], traffic
    )
    srm_exposures = {n: sum(c.get(n, 0.0) for c in counts) for n in names}
    drift: dict[str, Any] = (
        analysis.drift.model_dump(by_alias=True)
        if analysis.drift
        else {"action": "alert"}  # defaults: drift blocks promotion, never rolls back
    )
    drift["histograms"] = gating
    guardrails = [g.model_dump(by_alias=True, exclude_none=True) for g in analysis.guardrails]
    try:
        elapsed = (now - started).total_seconds()
        if interleaved is not None:
            record = analyze(_interleaving_input(spec, analysis, experiment, data, interleaved,
                                                 guardrails, elapsed))  # fmt: skip
        else:
            record = _ab_record(spec, analysis, experiment, data, expected, srm_exposures, drift,
                                guardrails, elapsed)  # fmt: skip
    except InputError as exc:
        return Decision(error=("MissingData", f"analysis input rejected: {exc}"))
    # rounded: the time-weighted mix of periods is a sum of floats (0.5000000000000001)
    shares = {k: round(v / 100.0, 6) for k, v in expected.items()}
    window = (fmt_time(started), fmt_time(now))
    pre_window = (fmt_time(started - pre[0][0]), fmt_time(started)) if pre is not None else None
    return Decision(
        record=record,
        status=evidence.analysis_status(
            record, time=fmt_time(now), window=window, expected_share=shares, pre_window=pre_window
        ),
        observations=evidence.variant_observations(data, record),
    )


def _pre_period(
    analysis: Analysis, started: datetime
) -> tuple[tuple[timedelta, datetime], tuple[str, ...]] | None:
    """((pre window, its end), bucket series to read) when CUPED is on: the primary
    metric's numerator and denominator over ``cuped.preWindow`` before the start."""
    if analysis.cuped is None or not analysis.cuped.enabled:
        return None
    num, den, _ = METRICS[analysis.primary_metric]
    window = timedelta(seconds=parse_duration(analysis.cuped.pre_window))
    return (window, started), (num, den)


def _interleaving_input(
    spec: ExperimentSpec,
    analysis: Analysis,
    experiment: res.ExperimentRef,
    data: Mapping[str, Any],
    interleaved: tuple[dict[str, list[float]], float],
    guardrails: list[dict[str, Any]],
    elapsed: float,
) -> dict[str, Any]:
    """The ``rankexp analyze`` input of an interleaving experiment. Non-inferiority
    margins against control do not apply (both variants serve the same feeds): only the
    absolute guardrails go in."""
    outcomes, clicking = interleaved
    treatment = next(v.name for v in spec.variants if v.name != spec.control)
    return {
        "mode": "interleaving",
        "experiment": experiment.name,
        "control": spec.control,
        "treatment": treatment,
        "method": analysis.method,
        "alpha": analysis.alpha,
        "outcomes": outcomes,
        "clicking_users": clicking,
        "min_users_with_click": analysis.min_users_with_click,
        "guardrails": [g for g in guardrails if "max" in g],
        "variants": dict(data),
        "elapsed_seconds": elapsed,
        "max_duration_seconds": parse_duration(analysis.max_duration),
    }


def _ab_record(
    spec: ExperimentSpec,
    analysis: Analysis,
    experiment: res.ExperimentRef,
    data: Mapping[str, Any],
    expected: Mapping[str, float],
    srm_exposures: Mapping[str, float],
    drift: dict[str, Any],
    guardrails: list[dict[str, Any]],
    elapsed: float,
) -> dict[str, Any]:
    payload = analysis_input(
        control=spec.control,
        weights=expected,
        variants=data,
        method=analysis.method,
        alpha=analysis.alpha,
        primary_metric=analysis.primary_metric,
        secondary_metrics=analysis.secondary_metrics or None,
        guardrails=guardrails,
        min_samples_per_variant=analysis.min_samples_per_variant,
        srm_p_value=analysis.srm_p_value,
        srm_exposures=srm_exposures,
        drift=drift,
        elapsed_seconds=elapsed,
        max_duration_seconds=parse_duration(analysis.max_duration),
        experiment=experiment.name,
        cuped=analysis.cuped is not None and analysis.cuped.enabled,
    )
    return analyze(payload)
