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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rankexp.analysis.cuped import cuped
from rankexp.analysis.drift import ks_binned, psi
from rankexp.analysis.models import METRICS, AnalysisInput, VariantData, parse_input
from rankexp.analysis.power import design_effect, required_samples, required_samples_per_variant
from rankexp.analysis.quantile import quantile_difference
from rankexp.analysis.sequential import (
    cs_half_width,
    mixing_variance,
    msprt_p_value,
    msprt_p_value_below,
)
from rankexp.analysis.stats import (
    fixed_p_below,
    fixed_test,
    holm,
    ratio_estimate,
    srm_test,
    welch_df,
)

DECISIONS = ("Hold", "Continue", "Promote", "Rollback", "Inconclusive")


@dataclass(frozen=True)
class Comparison:
    """One treatment against control on one metric."""

    lift: float
    relative_lift: float | None
    ci: tuple[float, float]
    relative_ci: tuple[float, float] | None
    p_value: float
    test: str


def _num(x: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    f = float(x)
    return f if math.isfinite(f) else None


def compare(
    control: tuple[float, float],
    treatment: tuple[float, float],
    *,
    method: str,
    alpha: float,
    kind: str = "ratio",
    n_buckets: int = 64,
    mde: float = 0.05,
) -> Comparison:
    """Treatment minus control, from (estimate, variance) pairs.

    ``fixed``: z-test for ratio metrics, Welch's t for means (df from the
    bucket replicates). ``sequential``: the mixture SPRT's always-valid
    p-value and confidence sequence. The relative lift's interval uses the
    delta-method variance of ``t / c - 1`` with the same test.
    """
    (rc, vc), (rt, vt) = control, treatment
    diff, var = rt - rc, vt + vc
    rel: float | None = None
    rel_var = float("nan")
    if rc != 0:
        rel = rt / rc - 1.0
        rel_var = vt / rc**2 + rt**2 * vc / rc**4
    if method == "sequential":
        tau2 = mixing_variance(rc, rt, mde)
        p = float(msprt_p_value(diff, var, tau2))
        half = float(cs_half_width(var, tau2, alpha))
        rel_half = float(cs_half_width(rel_var, mde**2, alpha)) if rel is not None else math.nan
        test = "msprt"
    else:
        df = welch_df(vc, vt, n_buckets, n_buckets) if kind == "mean" else None
        p_arr, half_arr = fixed_test(diff, var, alpha, df)
        p, half = float(p_arr), float(half_arr)
        rel_half = math.nan
        if rel is not None:
            df_rel = welch_df(vt / rc**2, rt**2 * vc / rc**4, n_buckets, n_buckets)
            rel_half = float(fixed_test(rel, rel_var, alpha, df_rel if df is not None else None)[1])
        test = "welch-t" if kind == "mean" else "z"
    return Comparison(
        lift=diff,
        relative_lift=rel,
        ci=(diff - half, diff + half),
        relative_ci=(rel - rel_half, rel + rel_half) if rel is not None else None,
        p_value=p,
        test=test,
    )


def inferiority_test(
    control: tuple[float, float],
    treatment: tuple[float, float],
    margin: float,
    *,
    method: str,
    kind: str = "ratio",
    n_buckets: int = 64,
    mde: float = 0.05,
) -> tuple[float, float] | None:
    """Is the treatment worse than control by more than ``margin`` (relative)?

    One-sided test of ``H0: t / c - 1 >= -margin`` against ``< -margin`` on
    the relative lift, with the delta-method variance ``compare`` uses for
    the relative interval. ``fixed``: z (Welch's t for means); ``sequential``:
    the always-valid mixture SPRT (mixing variance ``mde^2`` on the relative
    scale, as for ``relative_ci``), so p <= alpha exactly when the upper end
    of the confidence sequence lies below ``-margin``. Returns (relative lift,
    p-value), or None when the control estimate is 0. A small p means
    inferior with confidence; little data gives a large p.
    """
    (rc, vc), (rt, vt) = control, treatment
    if rc == 0:
        return None
    rel = rt / rc - 1.0
    rel_var = vt / rc**2 + rt**2 * vc / rc**4
    if method == "sequential":
        p = float(msprt_p_value_below(rel + margin, rel_var, mde**2))
    else:
        df = (
            welch_df(vt / rc**2, rt**2 * vc / rc**4, n_buckets, n_buckets)
            if kind == "mean"
            else None
        )
        p = float(fixed_p_below(rel + margin, rel_var, df))
    return rel, p


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
    estimates = _estimates(m, metric_names, holds)
    cuped_out = _cuped(m, estimates) if m.cuped.enabled else None
    comparisons = _comparisons(m, metric_names, estimates)
    adjusted = _holm_families(m, metric_names, comparisons)
    srm_out = _srm(m, holds)
    guardrail_metrics = [str(g) for g in m.non_inferiority if g not in metric_names]
    guardrail_estimates = {**estimates, **_estimates(m, guardrail_metrics, holds)}
    guardrails_out, breaches = _guardrails(m, holds)
    ni_out, ni_breaches = _non_inferiority(m, guardrail_estimates, holds)
    guardrails_out += ni_out
    breaches += ni_breaches
    lat_out, lat_breaches = _latency_guardrails(m, holds)
    guardrails_out += lat_out
    breaches += lat_breaches
    drift_out, drifted = _drift(m, holds)

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
        "samples": {k: _count(v.exposures) for k, v in m.variants.items()},
        "metrics": _metrics_record(m, metric_names, estimates, comparisons, adjusted),
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
        theta=_num(adjusted.theta),
        rho=_num(adjusted.rho),
        variance_reduction={v: _num(r) for v, r in (adjusted.variance_reduction or {}).items()},
        unadjusted={
            v: {"estimate": _num(e[0]), "std_error": _num(math.sqrt(e[1]))}
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
        name: _num(sum(v.buckets[den])) if den in v.buckets else None
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
    out["baseline"] = _num(baseline)
    if required is not None and required > 0:
        out["required_per_variant"] = float(required)
        out["progress"] = {
            name: None if n is None else min(100.0, 100.0 * n / required)
            for name, n in observed.items()
        }
    return out


Estimates = dict[str, dict[str, tuple[float, float] | None]]
Comparisons = dict[str, dict[str, Comparison]]
Adjusted = dict[tuple[str, str], float]


def _treatments(m: AnalysisInput) -> list[str]:
    return [v for v in m.variants if v != m.control]


def _estimates(
    m: AnalysisInput, metric_names: list[str], holds: list[tuple[str, str]]
) -> Estimates:
    """(estimate, variance) per metric and variant; None where data is missing."""
    estimates: Estimates = {}
    for name in metric_names:
        num, den, _ = METRICS[name]
        estimates[name] = {}
        for vname, v in m.variants.items():
            estimates[name][vname] = None
            if num not in v.buckets or den not in v.buckets:
                holds.append(
                    ("MissingData", f"variants.{vname}.buckets has no {num}/{den} for {name}")
                )
                continue
            r, var = ratio_estimate(v.buckets[num], v.buckets[den])
            if not (np.isfinite(r) and np.isfinite(var)):
                holds.append(("MissingData", f"{name} of {vname} has no {den} yet"))
            else:
                estimates[name][vname] = (float(r), float(var))
    return estimates


def _n_buckets(m: AnalysisInput) -> int:
    return next((len(s) for v in m.variants.values() for s in v.buckets.values()), 2)


def _comparisons(m: AnalysisInput, metric_names: list[str], estimates: Estimates) -> Comparisons:
    n_buckets = _n_buckets(m)
    out: Comparisons = {}
    for name in metric_names:
        out[name] = {}
        ctl = estimates[name][m.control]
        for t in _treatments(m):
            trt = estimates[name][t]
            if ctl is not None and trt is not None:
                out[name][t] = compare(
                    ctl,
                    trt,
                    method=m.method,
                    alpha=m.alpha,
                    kind=METRICS[name][2],
                    n_buckets=n_buckets,
                    mde=m.mde,
                )
    return out


def _holm_families(m: AnalysisInput, metric_names: list[str], comparisons: Comparisons) -> Adjusted:
    """Holm within two families: the primary metric across treatments, and
    the secondary metrics x treatments."""
    primary, secondaries = metric_names[0], metric_names[1:]
    families = [
        [(primary, t) for t in comparisons[primary]],
        [(s, t) for s in secondaries for t in comparisons[s]],
    ]
    adjusted: Adjusted = {}
    for family in families:
        p_adj = holm([comparisons[name][t].p_value for name, t in family])
        adjusted.update(zip(family, p_adj, strict=True))
    return adjusted


def _metrics_record(
    m: AnalysisInput,
    metric_names: list[str],
    estimates: Estimates,
    comparisons: Comparisons,
    adjusted: Adjusted,
) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name in metric_names:
        per: dict[str, Any] = {}
        for vname in m.variants:
            est = estimates[name][vname]
            entry: dict[str, Any] = {
                "estimate": _num(est[0]) if est else None,
                "std_error": _num(math.sqrt(est[1])) if est else None,
            }
            c = comparisons[name].get(vname)
            if c is not None:
                p_adj = adjusted[(name, vname)]
                entry.update(
                    lift=_num(c.lift),
                    relative_lift=_num(c.relative_lift) if c.relative_lift is not None else None,
                    ci=[_num(c.ci[0]), _num(c.ci[1])],
                    relative_ci=[_num(x) for x in c.relative_ci] if c.relative_ci else None,
                    p_value=_num(c.p_value),
                    p_value_adjusted=_num(p_adj),
                    significant=p_adj <= m.alpha,
                    test=c.test,
                )
            elif vname != m.control:
                entry.update(dict.fromkeys(_COMPARISON_FIELDS), significant=False)
            per[vname] = entry
        record[name] = per
    return record


_COMPARISON_FIELDS = (
    "lift",
    "relative_lift",
    "ci",
    "relative_ci",
    "p_value",
    "p_value_adjusted",
    "test",
)


def _srm(m: AnalysisInput, holds: list[tuple[str, str]]) -> dict[str, Any]:
    """Sample-ratio check (on ``srm_exposures`` when given) and the minimum-sample rule
    (on exposures)."""
    exposures = {k: v.exposures for k, v in m.variants.items()}
    checked: dict[str, float | None] = (
        {k: m.srm_exposures.get(k) for k in exposures} if m.srm_exposures is not None
        else dict(exposures)
    )  # fmt: skip
    out: dict[str, Any] = {
        "p_value": None,
        "chi2": None,
        "threshold": m.srm_p_value,
        "ok": None,
        "observed": {k: _count(e) for k, e in checked.items()},
        "expected_share": {k: w / 100.0 for k, w in m.weights.items()},
    }
    missing = [k for k, e in exposures.items() if e is None]
    if missing:
        holds.append(("MissingData", f"no exposures for {', '.join(missing)}"))
        return out
    if sum(float(e or 0.0) for e in checked.values()) <= 0:
        holds.append(("MissingData", "no exposures yet for the sample-ratio check"))
        return out
    observed = [float(e or 0.0) for e in checked.values()]
    weights = [m.weights[k] for k in exposures]
    chi2, p = srm_test(observed, weights)
    ok = bool(float(p) >= m.srm_p_value)
    out.update(p_value=_num(p), chi2=_num(chi2), ok=ok)
    if not ok:
        holds.append(
            (
                "SampleRatioMismatch",
                f"sample ratio mismatch: exposures {[_count(x) for x in observed]} against "
                f"weights {[_count(w) for w in weights]} (p = {float(p):.3g} "
                f"< {m.srm_p_value:g})",
            )
        )
    few = [k for k, e in exposures.items() if (e or 0.0) < m.min_samples_per_variant]
    if few:
        holds.append(
            (
                "TooFewSamples",
                f"fewer than {m.min_samples_per_variant:g} exposures in {', '.join(few)}",
            )
        )
    return out


def _guardrails(
    m: AnalysisInput, holds: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Absolute limits, checked on every treatment. Returns (record, breaches)."""
    return absolute_guardrails(m.guardrails, m.variants, _treatments(m), holds)


def at_max_duration(
    decision: str, code: str, reason: str, elapsed: float | None, max_duration: float | None
) -> tuple[str, str, str]:
    """Inconclusive instead of Hold or Continue once the max duration is reached."""
    if (
        decision in ("Hold", "Continue")
        and elapsed is not None
        and max_duration is not None
        and elapsed >= max_duration
    ):
        reason = f"max duration ({max_duration:g} s) reached; {reason}"
        return "Inconclusive", "MaxDurationReached", reason
    return decision, code, reason


def absolute_guardrails(
    limits: Mapping[str, float],
    variants: Mapping[str, VariantData],
    treatments: list[str],
    holds: list[tuple[str, str]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Absolute limits (metric -> max) on each of ``treatments``: a value above its max
    breaches, a treatment without the value (or without data at all) holds. Returns
    (record, breaches)."""
    record: list[dict[str, Any]] = []
    breaches: list[str] = []
    for metric, limit in limits.items():
        for t in treatments:
            v = variants.get(t)
            value = v.scalar(metric) if v is not None else None
            ok = None if value is None else value <= limit
            record.append(
                {
                    "metric": metric,
                    "variant": t,
                    "value": value,
                    "limit": limit,
                    "ok": ok,
                    "kind": "absolute",
                }
            )
            if value is None:
                holds.append(("MissingData", f"no {metric} for {t}"))
            elif not ok:
                breaches.append(f"{t} {metric} = {value:g} > {limit:g}")
    return record, breaches


def _non_inferiority(
    m: AnalysisInput, estimates: Estimates, holds: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Non-inferiority against control, on every treatment: breached when
    the relative lift is below ``-margin`` with confidence (one-sided, Holm
    across all non-inferiority checks at ``alpha``). A metric that cannot be
    estimated holds (``_estimates`` already said why); it never breaches.
    Returns (record, breaches)."""
    n_buckets = _n_buckets(m)
    margins = {str(k): v for k, v in m.non_inferiority.items()}
    tests: dict[tuple[str, str], tuple[float, float] | None] = {}
    for metric, margin in margins.items():
        ctl = estimates[metric][m.control]
        for t in _treatments(m):
            trt = estimates[metric][t]
            if ctl is None or trt is None:
                tests[(metric, t)] = None
                continue
            tests[(metric, t)] = inferiority_test(
                ctl,
                trt,
                margin,
                method=m.method,
                kind=METRICS[metric][2],
                n_buckets=n_buckets,
                mde=m.mde,
            )
            if tests[(metric, t)] is None:
                holds.append(
                    ("MissingData", f"{metric} of {m.control} is 0: no relative lift for {t}")
                )
    done = [(key, res) for key, res in tests.items() if res is not None]
    adjusted = dict(zip([k for k, _ in done], holm([p for _, (_, p) in done]), strict=True))
    record: list[dict[str, Any]] = []
    breaches: list[str] = []
    for (metric, t), res in tests.items():
        margin = margins[metric]
        ok = None if res is None else adjusted[(metric, t)] > m.alpha
        record.append(
            {
                "metric": metric,
                "variant": t,
                "value": _num(res[0]) if res is not None else None,
                "limit": -margin if margin else 0.0,
                "ok": ok,
                "kind": "non_inferiority",
            }
        )
        if res is not None and not ok:
            breaches.append(
                f"{t} {metric} relative lift {_fmt_pct(res[0])} is below "
                f"-{100.0 * margin:.2f}% (non-inferiority, one-sided adjusted p "
                f"{adjusted[(metric, t)]:.3g} <= {m.alpha:g})"
            )
    return record, breaches


def _latency_guardrails(
    m: AnalysisInput, holds: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Latency non-inferiority (``latency_max_increase_ms``): each treatment's p95 minus
    control's, with a bucket-bootstrap interval (:mod:`rankexp.analysis.quantile`) at the
    two-sided level ``1 - alpha / k`` for ``k`` treatments, i.e. one-sided ``alpha / (2k)``
    per end. Breached when the interval's lower end is above the margin (shown slower by
    more than it). A variant without a latency histogram, or with no request in it, holds
    (never breaches). Returns (record, breaches)."""
    margin = m.latency_max_increase_ms
    if margin is None:
        return [], []
    treatments = _treatments(m)
    alpha_one_sided = m.alpha / (2.0 * max(len(treatments), 1))
    ctl = m.variants[m.control].latency_histogram
    record: list[dict[str, Any]] = []
    breaches: list[str] = []
    for t in treatments:
        trt = m.variants[t].latency_histogram
        entry: dict[str, Any] = {
            "metric": "latency_p95_ms",
            "variant": t,
            "value": None,
            "limit": margin,
            "ok": None,
            "kind": "latency_non_inferiority",
            "ci_low": None,
            "ci_high": None,
        }
        record.append(entry)
        if ctl is None or trt is None:
            missing = ", ".join(v for v, h in ((m.control, ctl), (t, trt)) if h is None)
            holds.append(("MissingData", f"no latency histogram for {missing}"))
            continue
        diff = quantile_difference(ctl.le, ctl.counts, trt.counts, alpha_one_sided=alpha_one_sided)
        if diff is None:
            holds.append(("MissingData", f"no request in the latency histogram of {t} or "
                          f"{m.control}"))  # fmt: skip
            continue
        low, high = 1000.0 * diff.ci[0], 1000.0 * diff.ci[1]
        value = 1000.0 * diff.difference
        entry.update(value=_num(value), ci_low=_num(low), ci_high=_num(high), ok=not low > margin)
        if low > margin:
            breaches.append(
                f"{t} latency_p95_ms is {value:+.1f} ms against {m.control} "
                f"(interval [{low:+.1f}, {high:+.1f}] ms) > +{margin:g} ms "
                f"(latency non-inferiority)"
            )
    return record, breaches


def _drift(
    m: AnalysisInput, holds: list[tuple[str, str]]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """PSI and KS of every control histogram against each treatment's.

    Returns (record, {treatment: [what drifted]})."""
    record: dict[str, Any] = {}
    drifted: dict[str, list[str]] = {}
    for hname, ref in m.variants[m.control].histograms.items():
        per: dict[str, Any] = {}
        for t in _treatments(m):
            h = m.variants[t].histograms.get(hname)
            gating = m.drift.gates(hname)
            if h is None or sum(h.counts) <= 0 or sum(ref.counts) <= 0:
                per[t] = {
                    "psi": None,
                    "ks_statistic": None,
                    "ks_p_value": None,
                    "ok": None,
                    "gating": gating,
                }
                if gating:
                    holds.append(("MissingData", f"no {hname} histogram for {t} or {m.control}"))
                continue
            value_psi = psi(ref.counts, h.counts)
            d, p_ks = ks_binned(ref.counts, h.counts)
            # Material and significant: KS alone flags negligible shifts in large samples
            # (and at every look); PSI alone flags noise in small ones.
            ok = not (value_psi > m.drift.psi and p_ks < m.drift.ks_p_value)
            gating = m.drift.gates(hname)
            per[t] = {
                "psi": value_psi,
                "ks_statistic": d,
                "ks_p_value": p_ks,
                "ok": ok,
                "gating": gating,
            }
            if not ok and gating:
                drifted.setdefault(t, []).append(f"{hname} (psi {value_psi:.3g}, ks p {p_ks:.3g})")
        record[hname] = per
    return record, drifted


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
            f"(relative {_fmt_pct(c.relative_lift)}), adjusted p "
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


def _count(x: float | None) -> int | float | None:
    """Counters arrive as floats (Prometheus); print whole numbers as integers."""
    return int(x) if x is not None and x.is_integer() else x


def _fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:+.2f}%"
