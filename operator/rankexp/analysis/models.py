"""The analysis input: a pydantic model plus the cross-field checks.

:func:`parse_input` is the one entry point; it raises :class:`InputError`
whose message starts with the dotted path of the offending field
(``variants.treatment.buckets.clicks[3]: ...``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

ModelT = TypeVar("ModelT", bound=BaseModel)

MetricName = Literal["ctr", "engagement_rate", "dwell_time"]

#: metric -> (numerator bucket series, denominator bucket series, kind)
METRICS: dict[str, tuple[str, str, str]] = {
    "ctr": ("clicks", "impressions", "ratio"),
    "engagement_rate": ("engagements", "impressions", "ratio"),
    "dwell_time": ("dwell_seconds", "dwell_events", "mean"),
}

#: Guardrails every variant can report without extra fields.
KNOWN_GUARDRAILS = ("latency_p95_ms", "error_rate")

Count = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
#: A relative non-inferiority margin: 0.02 = treatment may be at most 2 % worse.
Margin = Annotated[float, Field(strict=True, ge=0, lt=1, allow_inf_nan=False)]

#: Keys of a guardrails-list entry that ask for a non-inferiority check.
_MARGIN_KEYS = ("nonInferiorityMargin", "non_inferiority_margin")
#: Keys of a latency_p95_ms entry that bound its p95 increase over control (ms).
_INCREASE_KEYS = ("maxIncreaseMs", "max_increase_ms")
LATENCY_P95 = "latency_p95_ms"

#: Duration strings (key) accepted in place of the seconds fields (value).
DURATION_FIELDS = {"max_duration": "max_duration_seconds", "elapsed": "elapsed_seconds"}

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``time.ParseDuration``): ``"24h"``,
    ``"90m"``, ``"1h30m"``, ``"1.5h"``, ``"45s"``, ``"300ms"`` or ``"0"``.

    Units ns, us, ms, s, m, h (and the micro signs); no days. Raises ``ValueError`` on
    anything else, including negative durations.
    """
    s = text.strip()
    if s.startswith("+"):
        s = s[1:]
    if s == "0":
        return 0.0
    if s.startswith("-"):
        raise ValueError(f"{text!r} is negative")
    pos, total = 0, 0.0
    while pos < len(s):
        match = _GO_PART.match(s, pos)
        if match is None:
            break
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if not s or pos != len(s):
        raise ValueError(
            f"{text!r} is not a duration like '24h', '90m', '1h30m' or '45s' "
            "(units ns, us, ms, s, m, h)"
        )
    if not math.isfinite(total):
        raise ValueError(f"{text!r} is too long")
    return total


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A validation error that :func:`parse_input` reports under ``field``."""
    return PydanticCustomError(
        "rankexp_field", "{field}: {message}", {"field": field, "message": message}
    )


class InputError(ValueError):
    """Bad analysis input; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class Histogram(BaseModel):
    """Per-bin counts (not cumulative) and the ``len(counts) + 1`` bin edges."""

    model_config = ConfigDict(extra="forbid")
    edges: list[Number] = Field(min_length=2)
    counts: list[Count] = Field(min_length=1)


class LatencyHistogram(BaseModel):
    """Request latency per user bucket: ``counts[bucket]`` holds ``len(le) + 1`` per-bin
    counts (not cumulative) over the upper bounds ``le`` (seconds); the last bin is the
    overflow above ``le[-1]`` (Prometheus' ``+Inf``)."""

    model_config = ConfigDict(extra="forbid")
    le: list[Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]] = Field(min_length=1)
    counts: list[list[Count]] = Field(min_length=2)


class VariantData(BaseModel):
    """Counters of one variant over the analysis window.

    ``buckets`` maps a series (clicks, impressions, engagements, dwell_seconds,
    dwell_events) to its per-user-bucket sums. Extra numeric fields are kept
    and can be used as guardrails.
    """

    model_config = ConfigDict(extra="allow")
    exposures: Count | None = None
    requests: Count | None = None
    errors: Count | None = None
    latency_p95_ms: Count | None = None
    error_rate: Count | None = None
    buckets: dict[str, list[Count]] = Field(default_factory=dict)
    #: The same series' per-bucket sums over a window before the experiment started
    #: (CUPED's covariate); only the primary metric's numerator and denominator are used.
    pre_buckets: dict[str, list[Count]] = Field(default_factory=dict)
    histograms: dict[str, Histogram] = Field(default_factory=dict)
    #: For the latency non-inferiority guardrail (``latency_max_increase_ms``).
    latency_histogram: LatencyHistogram | None = None

    def scalar(self, name: str) -> float | None:
        """A guardrail value: a field, an extra field, or error_rate derived."""
        if name == "error_rate" and self.error_rate is None:
            if self.requests is None or self.errors is None or self.requests <= 0:
                return None
            return self.errors / self.requests
        value = getattr(self, name, None)
        if value is None and self.model_extra:
            value = self.model_extra.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)


class DriftConfig(BaseModel):
    """Drift thresholds: a histogram drifts when its shift is both material (PSI >
    ``psi``) and significant (KS p < ``ks_p_value``).

    ``action``: ``block`` (drift only blocks promotion) or ``rollback``.
    ``histograms``: the histograms that gate (block or roll back); the others are
    reported only. None: every histogram gates.
    """

    model_config = ConfigDict(extra="ignore")
    psi: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.2
    ks_p_value: Annotated[float, Field(ge=0, le=1)] = 0.05
    action: Literal["block", "rollback"] = "block"
    histograms: list[str] | None = None

    def gates(self, name: str) -> bool:
        return self.histograms is None or name in self.histograms


class CupedConfig(BaseModel):
    """CUPED on the primary metric (:mod:`rankexp.analysis.cuped`): with ``enabled``, the
    variants' ``pre_buckets`` adjust the estimates; without a pre-period the analysis runs
    unadjusted and says why."""

    model_config = ConfigDict(extra="ignore")
    enabled: bool = False


class AnalysisInput(BaseModel):
    """One analysis request, shaped like the Experiment's ``spec.analysis``
    plus the counters read from Prometheus."""

    model_config = ConfigDict(extra="ignore")
    control: str = "control"
    method: Literal["sequential", "fixed"] = "sequential"
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    primary_metric: MetricName = "ctr"
    secondary_metrics: list[MetricName] | None = None
    weights: dict[str, Count]
    #: Absolute limits: metric -> max (a treatment above it breaches).
    guardrails: dict[str, Count] = Field(default_factory=dict)
    #: Non-inferiority against control: metric -> relative margin. Filled
    #: from the guardrails list's ``{metric, nonInferiorityMargin}`` entries.
    non_inferiority: dict[MetricName, Margin] = Field(default_factory=dict)
    #: Latency non-inferiority: a treatment's p95 may be at most this many ms above
    #: control's (bucket-bootstrap interval, :mod:`rankexp.analysis.quantile`). Filled
    #: from the guardrails list's ``{metric: latency_p95_ms, maxIncreaseMs}`` entry.
    latency_max_increase_ms: Count | None = None
    min_samples_per_variant: Count = 1000
    srm_p_value: Annotated[float, Field(ge=0, lt=1)] = 0.001
    #: Exposures for the sample-ratio check, when they differ from ``variants.*.exposures``
    #: (the operator leaves out the seconds after each weight change, while the router
    #: still switches); ``weights`` are then the split those exposures should follow.
    srm_exposures: dict[str, Count] | None = None
    drift: DriftConfig = Field(default_factory=DriftConfig)
    cuped: CupedConfig = Field(default_factory=CupedConfig)
    mde: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.05
    elapsed_seconds: Count | None = None
    max_duration_seconds: Count | None = None
    variants: dict[str, VariantData]

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        # The CRD spells guardrails as a list: [{metric, max}] (absolute) and
        # [{metric, nonInferiorityMargin}] (against control); the dict form is
        # {metric: max}. Durations may come as Go-style strings.
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        if isinstance(out.get("guardrails"), list):
            limits, margins = _split_guardrails(out["guardrails"])
            out["guardrails"] = limits
            if LATENCY_P95 in margins:
                out["latency_max_increase_ms"] = margins.pop(LATENCY_P95)
            out["non_inferiority"] = {**dict(out.get("non_inferiority") or {}), **margins}
        _normalise_durations(out)
        return out

    def secondaries(self) -> list[str]:
        """Secondary metrics: as given, else every other metric with data."""
        if self.secondary_metrics is not None:
            return [m for m in dict.fromkeys(self.secondary_metrics) if m != self.primary_metric]
        out = []
        for name, (num, den, _) in METRICS.items():
            if name == self.primary_metric:
                continue
            if all(num in v.buckets and den in v.buckets for v in self.variants.values()):
                out.append(name)
        return out


def _normalise_durations(out: dict[str, Any]) -> None:
    """Go-style duration strings (``max_duration: "24h"``) into their seconds twins."""
    for key, seconds_key in DURATION_FIELDS.items():
        raw = out.get(key)
        if raw is None:
            continue
        if not isinstance(raw, str):
            raise _field_error(key, f"must be a duration string like '24h' (or give {seconds_key})")
        try:
            value = parse_duration(raw)
        except ValueError as exc:
            raise _field_error(key, str(exc)) from None
        given = out.get(seconds_key)
        if given is not None and given != value:
            raise _field_error(key, f"{raw!r} disagrees with {seconds_key} = {given!r}")
        out[seconds_key] = value


def _split_guardrails(items: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The CRD's guardrails list as ({metric: max}, {metric: margin}); a
    ``{metric: latency_p95_ms, maxIncreaseMs}`` entry is the margin of ``latency_p95_ms``
    (in ms, absolute, not relative)."""
    limits: dict[str, Any] = {}
    margins: dict[str, Any] = {}
    for i, item in enumerate(items):
        keys = [k for k in _MARGIN_KEYS if isinstance(item, Mapping) and k in item]
        increase = [k for k in _INCREASE_KEYS if isinstance(item, Mapping) and k in item]
        if (
            not isinstance(item, Mapping)
            or "metric" not in item
            or ("max" not in item and not keys and not increase)
        ):
            raise _field_error(
                "guardrails",
                f"item {i} must be {{metric, max}}, {{metric, nonInferiorityMargin}} or "
                "{metric: latency_p95_ms, maxIncreaseMs}",
            )
        if increase:
            margins[LATENCY_P95] = _max_increase(i, item, increase[0])
            continue
        if not keys:
            limits[str(item["metric"])] = item["max"]
            continue
        where = f"guardrails[{i}]"
        if "max" in item:
            raise _field_error(where, "give max or nonInferiorityMargin, not both")
        metric, margin = item["metric"], item[keys[0]]
        if not isinstance(metric, str) or metric not in METRICS:
            raise _field_error(
                f"{where}.metric",
                f"non-inferiority needs one of {', '.join(METRICS)}, got {metric!r}",
            )
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 1:
            raise _field_error(
                f"{where}.{keys[0]}",
                f"must be a relative margin in [0, 1) (0.02 = 2 % worse), got {margin!r}",
            )
        margins[metric] = float(margin)
    return limits, margins


def _max_increase(i: int, item: Mapping[str, Any], key: str) -> float:
    """A ``{metric: latency_p95_ms, maxIncreaseMs}`` entry's margin, validated."""
    where = f"guardrails[{i}]"
    others = [k for k in ("max", *_MARGIN_KEYS) if k in item]
    if others:
        raise _field_error(where, f"give {key} or {others[0]}, not both")
    if item["metric"] != LATENCY_P95:
        raise _field_error(
            f"{where}.metric", f"{key} is for {LATENCY_P95} only, got {item['metric']!r}"
        )
    value = item[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise _field_error(
            f"{where}.{key}",
            f"must be a non-negative number of milliseconds (20 = treatment p95 at most "
            f"20 ms above control's), got {value!r}",
        )
    return float(value)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_input(payload: Mapping[str, Any] | AnalysisInput) -> AnalysisInput:
    """Validate ``payload`` (a dict shaped like the CLI's JSON, or a model)."""
    model = payload if isinstance(payload, AnalysisInput) else validate(AnalysisInput, payload)
    _check(model)
    return model


def validate(cls: type[ModelT], payload: Any) -> ModelT:
    """``cls.model_validate(payload)`` with the first error as an :class:`InputError`
    naming its field."""
    if not isinstance(payload, Mapping):
        raise InputError("", "input must be a JSON object")
    try:
        return cls.model_validate(dict(payload))
    except ValidationError as exc:
        err = exc.errors()[0]
        extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        if err["type"] == "rankexp_field" and "ctx" in err:
            field, msg = str(err["ctx"]["field"]), str(err["ctx"]["message"])
        else:
            field = _loc(tuple(err["loc"]))
            msg = str(err["msg"]).removeprefix("Value error, ")
        raise InputError(field, msg + extra) from None


def _check(m: AnalysisInput) -> None:
    if m.control not in m.variants:
        raise InputError("control", f"{m.control!r} is not one of the variants")
    for name in m.weights:
        if name not in m.variants:
            raise InputError(f"variants.{name}", "missing (weights names this variant)")
    for name in m.variants:
        if name not in m.weights:
            raise InputError(f"weights.{name}", "missing (every variant needs a weight)")
    if m.srm_exposures is not None and set(m.srm_exposures) != set(m.variants):
        raise InputError("srm_exposures", "must name exactly the variants")
    if len(m.variants) < 2:
        raise InputError("variants", "needs the control and at least one treatment")
    total = sum(m.weights.values())
    if not math.isclose(total, 100.0, abs_tol=1e-6):
        raise InputError("weights", f"must sum to 100, got {total:g}")
    if m.weights[m.control] <= 0:
        raise InputError(f"weights.{m.control}", "the control needs a positive weight")

    length: int | None = None
    first = ""
    for vname, v in m.variants.items():
        where = f"variants.{vname}"
        if v.requests is not None and v.errors is not None and v.errors > v.requests:
            raise InputError(f"{where}.errors", f"{v.errors:g} exceeds requests ({v.requests:g})")
        for series, values in v.buckets.items():
            if length is None:
                length, first = len(values), f"{where}.buckets.{series}"
                if length < 2:
                    raise InputError(first, "needs at least 2 buckets")
            elif len(values) != length:
                raise InputError(
                    f"{where}.buckets.{series}",
                    f"has {len(values)} buckets, {first} has {length}",
                )
        for series, values in v.pre_buckets.items():
            if length is not None and len(values) != length:
                raise InputError(
                    f"{where}.pre_buckets.{series}",
                    f"has {len(values)} buckets, {first} has {length}",
                )
        for hname, h in v.histograms.items():
            hwhere = f"{where}.histograms.{hname}"
            if len(h.edges) != len(h.counts) + 1:
                raise InputError(
                    f"{hwhere}.edges",
                    f"needs len(counts) + 1 = {len(h.counts) + 1} edges, got {len(h.edges)}",
                )
            if any(b <= a for a, b in zip(h.edges, h.edges[1:], strict=False)):
                raise InputError(f"{hwhere}.edges", "must increase strictly")
            ref = m.variants[m.control].histograms.get(hname)
            if ref is not None and ref.edges != h.edges:
                raise InputError(f"{hwhere}.edges", f"differ from variants.{m.control}'s")
        _check_latency_histogram(m, vname, v.latency_histogram)

    check_guardrail_metrics(m.guardrails, m.variants)


def _check_latency_histogram(m: AnalysisInput, vname: str, h: LatencyHistogram | None) -> None:
    if h is None:
        return
    where = f"variants.{vname}.latency_histogram"
    if any(b <= a for a, b in zip(h.le, h.le[1:], strict=False)):
        raise InputError(f"{where}.le", "must increase strictly")
    for b, row in enumerate(h.counts):
        if len(row) != len(h.le) + 1:
            raise InputError(
                f"{where}.counts[{b}]",
                f"needs len(le) + 1 = {len(h.le) + 1} bins (the last is +Inf), got {len(row)}",
            )
    ref = m.variants[m.control].latency_histogram
    if ref is not None and ref.le != h.le:
        raise InputError(f"{where}.le", f"differs from variants.{m.control}'s")


def check_guardrail_metrics(
    guardrails: Mapping[str, float], variants: Mapping[str, VariantData]
) -> None:
    """Every absolute guardrail is a known one or a numeric field some variant reports."""
    for g in guardrails:
        if g in KNOWN_GUARDRAILS:
            continue
        if not any(v.model_extra and g in v.model_extra for v in variants.values()):
            raise InputError(f"guardrails.{g}", "unknown metric (no variant reports it)")
        for vname, v in variants.items():
            raw = (v.model_extra or {}).get(g)
            if raw is not None and (
                isinstance(raw, bool) or not isinstance(raw, int | float) or not raw >= 0
            ):
                raise InputError(f"variants.{vname}.{g}", "must be a non-negative number")
