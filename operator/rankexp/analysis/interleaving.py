"""Interleaving experiments: the preference share and its decision (pure, no I/O).

In an interleaving experiment each interleaved user sees one feed merged from both variants'
rankings by team draft (``ranker.route.interleave``), and each click credits the team that
contributed the clicked item. The router counts, for each served interleaved feed with
at least one click, which team got more clicks (``control``, ``treatment`` or ``tie``),
per 64-way user bucket (``router_interleaving_outcomes_total``), and the users seen
clicking (``router_interleaving_clicking_users_total``).

Statistic: the preference share

    delta = (treatment wins - control wins) / (wins + ties)

over the feeds with a click, in [-1, 1], 0 when neither variant is preferred. It is a
ratio of bucket sums, numerator ``t_b - c_b`` and denominator ``t_b + c_b + tie_b``,
so its variance is the delta method over the 64 user-bucket replicates
(:func:`rankexp.analysis.stats.ratio_estimate`): users stay the unit, however many
feeds each of them gets.

Test of ``delta == 0`` by the same machinery as the A/B path: ``sequential`` is the
normal-mixture SPRT (always-valid p-value, confidence sequence), ``fixed`` the
classical z-test. ``delta`` is already a difference on an absolute scale with null 0,
so the mixing variance is ``tau^2 = mde^2``: ``mde`` is the preference share the test
is tuned to (0.05: treatment wins 5 % more of the clicked feeds than control, net).

Decision (the first rule that applies, as in :mod:`rankexp.analysis.decide`):

1. Hold: missing data (no clicking-user count, no feed with a click, a guardrail value
   missing) or fewer clicking users than ``min_users_with_click`` (TooFewSamples).
2. Rollback: the treatment breaches an absolute guardrail (GuardrailBreached), or
   ``delta < 0`` significantly (SignificantLoss).
3. Promote the treatment: ``delta > 0`` significantly (SignificantWin).
4. Inconclusive instead of Hold or Continue once ``elapsed_seconds`` reaches
   ``max_duration_seconds``.
5. Continue.

There is no sample-ratio check (an interleaved user sees both variants) and no drift
or non-inferiority check (both variants serve the same feeds, so per-variant CTRs do
not exist).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats as sps

from rankexp.analysis.checks import absolute_guardrails, at_max_duration
from rankexp.analysis.models import (
    Count,
    InputError,
    VariantData,
    _field_error,
    _normalise_durations,
    _split_guardrails,
    check_guardrail_metrics,
    validate,
)
from rankexp.analysis.sequential import cs_half_width, msprt_p_value
from rankexp.analysis.stats import fixed_test, ratio_estimate

MODES = ("ab", "interleaving")
#: The router's user buckets (``ranker.protocol.hashing.N_ANALYSIS_BUCKETS``).
N_BUCKETS = 64
OUTCOMES = ("control", "treatment", "tie")
PRIMARY_METRIC = "preference"
PLANNING_POWER = 0.8
_MARGIN_KEYS = ("nonInferiorityMargin", "non_inferiority_margin")


def check_mode(mode: Any) -> None:
    if mode not in MODES:
        raise InputError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")


class Outcomes(BaseModel):
    """Interleaved feeds with a click, per user bucket, by the team that won them."""

    model_config = ConfigDict(extra="forbid")
    control: list[Count]
    treatment: list[Count]
    tie: list[Count]


class InterleavingInput(BaseModel):
    """One interleaving analysis request (``mode: interleaving``)."""

    model_config = ConfigDict(extra="ignore")
    mode: Literal["interleaving"]
    control: str = "control"
    treatment: str = "treatment"
    method: Literal["sequential", "fixed"] = "sequential"
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    outcomes: Outcomes
    clicking_users: Count | None = None
    min_users_with_click: Count = 200
    #: The preference share the sequential test is tuned to (absolute, in (0, 1]).
    mde: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.05
    guardrails: dict[str, Count] = Field(default_factory=dict)
    variants: dict[str, VariantData] = Field(default_factory=dict)
    elapsed_seconds: Count | None = None
    max_duration_seconds: Count | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        items = out.get("guardrails")
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, Mapping) and any(k in item for k in _MARGIN_KEYS):
                    raise _field_error(
                        f"guardrails[{i}]",
                        "non-inferiority against control does not apply to interleaving "
                        "(both variants serve the same feeds); use an absolute {metric, max}",
                    )
            out["guardrails"] = _split_guardrails(items)[0]
        _normalise_durations(out)
        return out


def parse_interleaving_input(payload: Mapping[str, Any] | InterleavingInput) -> InterleavingInput:
    """Validate an interleaving input; :class:`InputError` names the bad field."""
    m = payload if isinstance(payload, InterleavingInput) else validate(InterleavingInput, payload)
    if m.control == m.treatment:
        raise InputError("treatment", f"must differ from control ({m.control!r})")
    for name in OUTCOMES:
        n = len(getattr(m.outcomes, name))
        if n != N_BUCKETS:
            raise InputError(
                f"outcomes.{name}", f"must have {N_BUCKETS} entries (one per user bucket), got {n}"
            )
    for name in m.variants:
        if name not in (m.control, m.treatment):
            raise InputError(
                f"variants.{name}", f"not a variant of this experiment ({m.control}, {m.treatment})"
            )
    check_guardrail_metrics(m.guardrails, m.variants)
    return m


def preference(control: ArrayLike, treatment: ArrayLike, tie: ArrayLike) -> tuple[float, float]:
    """(delta, variance): the preference share of bucket sums and its delta-method
    variance over the bucket replicates (NaN, NaN without any outcome)."""
    c = np.asarray(control, dtype=np.float64)
    t = np.asarray(treatment, dtype=np.float64)
    e = np.asarray(tie, dtype=np.float64)
    delta, var = ratio_estimate(t - c, t + c + e)
    return float(delta), float(var)


def preference_test(
    delta: float, var: float, *, method: str, alpha: float, mde: float
) -> tuple[float, float, str]:
    """(p-value, half-width of the (1 - alpha) interval, test name) for ``delta == 0``."""
    if method == "sequential":
        tau2 = mde**2
        return (
            float(msprt_p_value(delta, var, tau2)),
            float(cs_half_width(var, tau2, alpha)),
            "msprt",
        )
    p, half = fixed_test(delta, var, alpha)
    return float(p), float(half), "z"


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _count(x: float | None) -> int | float | None:
    return int(x) if x is not None and float(x).is_integer() else x


def analyze_interleaving(payload: Mapping[str, Any] | InterleavingInput) -> dict[str, Any]:
    """The decision record of an interleaving experiment, with the keys of
    :func:`rankexp.analysis.analyze`'s A/B record plus ``interleaving``."""
    m = parse_interleaving_input(payload)
    o = m.outcomes
    wins_c, wins_t, ties = sum(o.control), sum(o.treatment), sum(o.tie)
    feeds = wins_c + wins_t + ties
    holds: list[tuple[str, str]] = []

    if m.clicking_users is None:
        holds.append(("MissingData", "no clicking_users count"))
    delta, var = preference(o.control, o.treatment, o.tie)
    ok = math.isfinite(delta) and math.isfinite(var)
    if not ok:
        holds.append(("MissingData", "no interleaved feed with a click yet"))
    guardrails_out, breaches = absolute_guardrails(m.guardrails, m.variants, [m.treatment], holds)
    if m.clicking_users is not None and m.clicking_users < m.min_users_with_click:
        holds.append(
            (
                "TooFewSamples",
                f"{m.clicking_users:g} users with a click, fewer than "
                f"min_users_with_click = {m.min_users_with_click:g}",
            )
        )

    p = half = math.nan
    test = "msprt" if m.method == "sequential" else "z"
    if ok:
        p, half, test = preference_test(delta, var, method=m.method, alpha=m.alpha, mde=m.mde)
    significant = ok and p <= m.alpha

    decision, code, reason, winner = _decide(m, delta, p, significant, holds, breaches)
    decision, code, reason = at_max_duration(
        decision, code, reason, m.elapsed_seconds, m.max_duration_seconds
    )

    ci: list[float | None] = [_num(delta - half), _num(delta + half)] if ok else [None, None]
    users = _count(m.clicking_users)
    return {
        "decision": decision,
        "reason_code": code,
        "reason": reason,
        "winner": winner,
        "control": m.control,
        "method": m.method,
        "alpha": m.alpha,
        "primary_metric": PRIMARY_METRIC,
        "secondary_metrics": [],
        "samples": {m.control: users, m.treatment: users},
        "metrics": {PRIMARY_METRIC: _metrics(m, delta, var, ci, p, significant, test)},
        "srm": {
            "applicable": False,
            "reason": "interleaving: each interleaved user sees both variants, no split to check",
            "p_value": None,
            "chi2": None,
            "threshold": None,
            "ok": None,
            "observed": {},
            "expected_share": {},
        },
        "drift": {},
        "guardrails": guardrails_out,
        "power": _power(m, var if ok else math.nan),
        "interleaving": {
            "delta": _num(delta),
            "std_error": _num(math.sqrt(var)) if ok else None,
            "ci_low": ci[0],
            "ci_high": ci[1],
            "p_value": _num(p),
            "test": test,
            "wins_control": _count(wins_c),
            "wins_treatment": _count(wins_t),
            "ties": _count(ties),
            "feeds_with_click": _count(feeds),
            "clicking_users": users,
            "min_users_with_click": _count(m.min_users_with_click),
        },
    }


def _metrics(
    m: InterleavingInput,
    delta: float,
    var: float,
    ci: list[float | None],
    p: float,
    significant: bool,
    test: str,
) -> dict[str, Any]:
    """``metrics.preference``: each team's share of the clicked feeds it won (estimate,
    std_error), and for the treatment the comparison: lift = delta (treatment share
    minus control share), its interval and p-value (one test: adjusted = raw)."""
    o = m.outcomes
    den = [c + t + e for c, t, e in zip(o.control, o.treatment, o.tie, strict=True)]
    out: dict[str, Any] = {}
    for name, wins in ((m.control, o.control), (m.treatment, o.treatment)):
        share, share_var = ratio_estimate(wins, den)
        out[name] = {
            "estimate": _num(float(share)),
            "std_error": _num(math.sqrt(float(share_var))) if share_var >= 0 else None,
        }
    out[m.treatment].update(
        lift=_num(delta),
        relative_lift=None,
        ci=ci,
        relative_ci=None,
        p_value=_num(p),
        p_value_adjusted=_num(p),
        significant=significant,
        test=test,
    )
    return out


def _power(m: InterleavingInput, var: float) -> dict[str, Any]:
    """Clicking users a fixed-horizon z-test of delta needs to detect ``mde`` with 80 %
    power, from the current variance (which falls as 1 / users); each clicking user
    counts for both variants. A sequential test needs more (about 1.5-2x)."""
    users = m.clicking_users
    observed = {m.control: _count(users), m.treatment: _count(users)}
    out: dict[str, Any] = {
        "metric": PRIMARY_METRIC,
        "unit": "clicking_users",
        "mde": m.mde,
        "alpha": m.alpha,
        "power": PLANNING_POWER,
        "baseline": None,
        "design_effect": None,
        "required_per_variant": None,
        "observed": observed,
        "progress": dict.fromkeys(observed),
    }
    if users is None or users <= 0 or not math.isfinite(var) or var <= 0:
        return out
    z = float(sps.norm.isf(m.alpha / 2.0) + sps.norm.ppf(PLANNING_POWER))
    required = math.ceil(z**2 * var * users / m.mde**2)
    out["required_per_variant"] = float(required)
    out["progress"] = dict.fromkeys(observed, min(100.0, 100.0 * users / required))
    return out


def _decide(
    m: InterleavingInput,
    delta: float,
    p: float,
    significant: bool,
    holds: list[tuple[str, str]],
    breaches: list[str],
) -> tuple[str, str, str, str | None]:
    if holds:
        return "Hold", holds[0][0], "; ".join(dict.fromkeys(msg for _, msg in holds)), None
    if breaches:
        return "Rollback", "GuardrailBreached", "guardrail breached: " + "; ".join(breaches), None
    shown = f"preference share {delta:+.4f}, p {p:.3g}"
    if significant and delta < 0:
        return (
            "Rollback",
            "SignificantLoss",
            f"significant loss: users prefer {m.control} over {m.treatment} ({shown} "
            f"<= {m.alpha:g})",
            None,
        )
    if significant and delta > 0:
        return (
            "Promote",
            "SignificantWin",
            f"users prefer {m.treatment} over {m.control}: {shown} <= {m.alpha:g}",
            m.treatment,
        )
    return "Continue", "NoSignificantDifference", f"no significant preference yet ({shown})", None
