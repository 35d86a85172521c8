"""From counters to a decision record: Hold | Continue | Promote | Rollback | Inconclusive.

Order of the rules (the first that applies wins):

1. Hold: missing data (no exposures, a metric the decision needs cannot be
   estimated, a guardrail value or drift histogram missing), sample-ratio
   mismatch (SRM p < ``srm_p_value``), or fewer exposures than
   ``min_samples_per_variant`` in some variant. Missing data never promotes
   or rolls back.
2. Rollback: a treatment breaches a guardrail (above an absolute limit, or
   shown inferior to control beyond a non-inferiority margin, or its p95 latency shown
   above control's by more than ``latency_max_increase_ms``), loses significantly on
   the primary metric (Holm across treatments) or on a secondary metric
   (Holm across secondary metrics x treatments), or drifts when the drift
   action is ``rollback``.
3. Promote: a treatment wins significantly on the primary metric and its
   drift is clean; with several winners, the largest lift.
4. Inconclusive: instead of Hold or Continue once ``elapsed_seconds`` reaches
   ``max_duration_seconds``.
5. Continue.

The comparisons are :mod:`rankexp.analysis.compare`, the checks that hold or roll back
before any metric wins :mod:`rankexp.analysis.checks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rankexp.analysis.checks import (
    at_max_duration,
    drift_check,
    guardrail_checks,
    latency_guardrails,
    non_inferiority_checks,
    srm_check,
)
from rankexp.analysis.compare import (
    Adjusted,
    Comparisons,
    Estimates,
    comparisons_of,
    count_value,
    estimates_of,
    finite,
    fmt_pct,
    holm_families,
    metrics_record,
)
from rankexp.analysis.cuped import cuped
from rankexp.analysis.models import METRICS, AnalysisInput, parse_input
from rankexp.analysis.power import design_effect, required_samples, required_samples_per_variant

DECISIONS = ("Hold", "Continue", "Promote", "Rollback", "Inconclusive")


def analyze(payload: Mapping[str, Any] | AnalysisInput) -> dict[str, Any]:
    """Validate ``payload`` and return the decision record (JSON-ready dict).

    ``mode: "interleaving"`` selects the interleaving input and test
    (:mod:`rankexp.analysis.interleaving`); without it (or ``mode: "ab"``) the A/B one.
    Raises :class:`rankexp.analysis.InputError` on bad input.
    """
    if isinstance(payload, Mapping) and payload.get("mode", "ab") != "ab":
        from rankexp.analysis.interleaving import analyze_interleaving, check_mode

        check_mode(payload.get("mode"))
        return analyze_interleaving(payload)
    m = parse_input(payload)
    holds: list[tuple[str, str]] = []  # (reason code, message), in rule order
    metric_names = [m.primary_metric, *m.secondaries()]
    estimates = estimates_of(m, metric_names, holds)
    cuped_out = _cuped(m, estimates) if m.cuped.enabled else None
    comparisons = comparisons_of(m, metric_names, estimates)
    adjusted = holm_families(m, metric_names, comparisons)
    srm_out = srm_check(m, holds)
    guardrail_metrics = [str(g) for g in m.non_inferiority if g not in metric_names]
    guardrail_estimates = {**estimates, **estimates_of(m, guardrail_metrics, holds)}
    guardrails_out, breaches = guardrail_checks(m, holds)
    ni_out, ni_breaches = non_inferiority_checks(m, guardrail_estimates, holds)
    guardrails_out += ni_out
    breaches += ni_breaches
    lat_out, lat_breaches = latency_guardrails(m, holds)
    guardrails_out += lat_out
    breaches += lat_breaches
    drift_out, drifted = drift_check(m, holds)

    decision, code, reason, winner = _decide(
        m, metric_names, comparisons, adjusted, holds, breaches, drifted
    )
    decision, code, reason = at_max_duration(
        decision, code, reason, m.elapsed_seconds, m.max_duration_seconds
    )

    out = {
        "decision": decision,
        "reason_code": code,
        "reason": reason,
        "winner": winner,
        "control": m.control,
        "method": m.method,
        "alpha": m.alpha,
        "primary_metric": m.primary_metric,
        "secondary_metrics": metric_names[1:],
        "samples": {k: count_value(v.exposures) for k, v in m.variants.items()},
        "metrics": metrics_record(m, metric_names, estimates, comparisons, adjusted),
        "srm": srm_out,
        "drift": drift_out,
        "guardrails": guardrails_out,
        "power": _power(m, estimates),
    }
    if cuped_out is not None:
        out["cuped"] = cuped_out
    return out


def _cuped(m: AnalysisInput, estimates: Estimates) -> dict[str, Any]:
    """CUPED on the primary metric: replaces its estimates in place when a pre-period is
    there, and returns the record (applied or not, and why)."""
    metric = m.primary_metric
    num, den, _ = METRICS[metric]
    out: dict[str, Any] = {"enabled": True, "metric": metric, "applied": False}
    if any(estimates[metric][v] is None for v in m.variants):
        out["reason"] = f"no {metric} estimate for every variant yet"
        return out
    current = {v: (d.buckets[num], d.buckets[den]) for v, d in m.variants.items()}
    pre = {
        v: (d.pre_buckets[num], d.pre_buckets[den])
        if num in d.pre_buckets and den in d.pre_buckets
        else None
        for v, d in m.variants.items()
    }
    adjusted = cuped(current, pre)
    out["reason"] = adjusted.reason
    if not adjusted.applied or adjusted.estimates is None:
        return out
    unadjusted = {v: estimates[metric][v] for v in m.variants}
    for v, pair in adjusted.estimates.items():
        estimates[metric][v] = pair
    out.update(
        applied=True,
        theta=finite(adjusted.theta),
        rho=finite(adjusted.rho),
        variance_reduction={v: finite(r) for v, r in (adjusted.variance_reduction or {}).items()},
        unadjusted={
            v: {"estimate": finite(e[0]), "std_error": finite(math.sqrt(e[1]))}
            for v, e in unadjusted.items()
            if e is not None
        },
    )
    return out


PLANNING_POWER = 0.8


def _power(m: AnalysisInput, estimates: Estimates) -> dict[str, Any]:
    """Units each arm needs for a fixed-horizon test of the primary metric to detect a
    relative lift of ``mde`` with 80 % power, at control's current rate and design
    effect (users as the unit), and each variant's progress towards it. Ratio metrics
    count impressions, dwell_time counts dwell events. A sequential test needs more
    (about 1.5-2x, see the power module)."""
    metric = m.primary_metric
    num, den, kind = METRICS[metric]
    observed = {
        name: finite(sum(v.buckets[den])) if den in v.buckets else None
        for name, v in m.variants.items()
    }
    out: dict[str, Any] = {
        "metric": metric,
        "unit": den,
        "mde": m.mde,
        "alpha": m.alpha,
        "power": PLANNING_POWER,
        "baseline": None,
        "design_effect": None,
        "required_per_variant": None,
        "observed": observed,
        "progress": dict.fromkeys(m.variants),
    }
    ctl = estimates[metric][m.control]
    buckets = m.variants[m.control].buckets
    if ctl is None or ctl[0] <= 0 or num not in buckets or den not in buckets:
        return out
    baseline, variance = ctl
    required: float | None = None
    try:
        if kind == "ratio":
            deff = design_effect(buckets[num], buckets[den])
            deff = deff if math.isfinite(deff) and deff > 0 else 1.0
            out["design_effect"] = deff
            required = required_samples_per_variant(baseline, m.mde, m.alpha, PLANNING_POWER, deff)
        else:
            n = float(sum(buckets[den]))
            sd = math.sqrt(variance * n)
            required = required_samples(sd, m.mde * baseline, m.alpha, PLANNING_POWER)
    except ValueError:
        required = None
    out["baseline"] = finite(baseline)
    if required is not None and required > 0:
        out["required_per_variant"] = float(required)
        out["progress"] = {
            name: None if n is None else min(100.0, 100.0 * n / required)
            for name, n in observed.items()
        }
    return out


def _decide(
    m: AnalysisInput,
    metric_names: list[str],
    comparisons: Comparisons,
    adjusted: Adjusted,
    holds: list[tuple[str, str]],
    breaches: list[str],
    drifted: dict[str, list[str]],
) -> tuple[str, str, str, str | None]:
    """The rules of the module docstring: (decision, reason code, reason, winner)."""
    if holds:
        return "Hold", holds[0][0], "; ".join(dict.fromkeys(msg for _, msg in holds)), None
    if breaches:
        return "Rollback", "GuardrailBreached", "guardrail breached: " + "; ".join(breaches), None

    def significant(name: str, t: str) -> bool:
        return adjusted.get((name, t), 1.0) <= m.alpha

    losses = [
        f"{t} loses on {name} (lift {c.lift:.4g}, adjusted p {adjusted[(name, t)]:.3g})"
        for name in metric_names
        for t, c in comparisons[name].items()
        if significant(name, t) and c.lift < 0
    ]
    if losses:
        return "Rollback", "SignificantLoss", "significant loss: " + "; ".join(losses), None
    if drifted and m.drift.action == "rollback":
        reason = "; ".join(f"{t} drifted: {', '.join(items)}" for t, items in drifted.items())
        return "Rollback", "DriftDetected", reason, None

    primary = comparisons[m.primary_metric]
    winners = [t for t, c in primary.items() if significant(m.primary_metric, t) and c.lift > 0]
    clean = [t for t in winners if t not in drifted]
    if clean:
        winner = max(clean, key=lambda t: primary[t].lift)
        c = primary[winner]
        reason = (
            f"{winner} beats {m.control} on {m.primary_metric}: lift {c.lift:.4g} "
            f"(relative {fmt_pct(c.relative_lift)}), adjusted p "
            f"{adjusted[(m.primary_metric, winner)]:.3g} <= {m.alpha:g}"
        )
        return "Promote", "SignificantWin", reason, winner
    if winners:
        reason = "winner blocked by drift: " + "; ".join(
            f"{t}: {', '.join(drifted[t])}" for t in winners
        )
        return "Continue", "DriftDetected", reason, None
    reason = f"no significant difference on {m.primary_metric} yet"
    return "Continue", "NoSignificantDifference", reason, None
