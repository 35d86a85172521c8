"""What can hold or roll back a run before any metric wins: sample-ratio mismatch, absolute
and non-inferiority guardrails, the p95 latency guardrail, distribution drift, maxDuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rankexp.analysis.compare import (
    Estimates,
    bucket_count,
    count_value,
    finite,
    fmt_pct,
    inferiority_test,
    treatments_of,
)
from rankexp.analysis.drift import ks_binned, psi
from rankexp.analysis.models import METRICS, AnalysisInput, VariantData
from rankexp.analysis.quantile import quantile_difference
from rankexp.analysis.stats import (
    holm,
    srm_test,
)


def srm_check(m: AnalysisInput, holds: list[tuple[str, str]]) -> dict[str, Any]:
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
        "observed": {k: count_value(e) for k, e in checked.items()},
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
    out.update(p_value=finite(p), chi2=finite(chi2), ok=ok)
    if not ok:
        holds.append(
            (
                "SampleRatioMismatch",
                f"sample ratio mismatch: exposures {[count_value(x) for x in observed]} against "
                f"weights {[count_value(w) for w in weights]} (p = {float(p):.3g} "
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


def guardrail_checks(
    m: AnalysisInput, holds: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Absolute limits, checked on every treatment. Returns (record, breaches)."""
    return absolute_guardrails(m.guardrails, m.variants, treatments_of(m), holds)


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


def non_inferiority_checks(
    m: AnalysisInput, estimates: Estimates, holds: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Non-inferiority against control, on every treatment: breached when
    the relative lift is below ``-margin`` with confidence (one-sided, Holm
    across all non-inferiority checks at ``alpha``). A metric that cannot be
    estimated holds (``estimates_of`` already said why); it never breaches.
    Returns (record, breaches)."""
    n_buckets = bucket_count(m)
    margins = {str(k): v for k, v in m.non_inferiority.items()}
    tests: dict[tuple[str, str], tuple[float, float] | None] = {}
    for metric, margin in margins.items():
        ctl = estimates[metric][m.control]
        for t in treatments_of(m):
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
                "value": finite(res[0]) if res is not None else None,
                "limit": -margin if margin else 0.0,
                "ok": ok,
                "kind": "non_inferiority",
            }
        )
        if res is not None and not ok:
            breaches.append(
                f"{t} {metric} relative lift {fmt_pct(res[0])} is below "
                f"-{100.0 * margin:.2f}% (non-inferiority, one-sided adjusted p "
                f"{adjusted[(metric, t)]:.3g} <= {m.alpha:g})"
            )
    return record, breaches


def latency_guardrails(
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
    treatments = treatments_of(m)
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
        entry.update(
            value=finite(value),
            ci_low=finite(low),
            ci_high=finite(high),
            ok=not low > margin,
        )
        if low > margin:
            breaches.append(
                f"{t} latency_p95_ms is {value:+.1f} ms against {m.control} "
                f"(interval [{low:+.1f}, {high:+.1f}] ms) > +{margin:g} ms "
                f"(latency non-inferiority)"
            )
    return record, breaches


def drift_check(
    m: AnalysisInput, holds: list[tuple[str, str]]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """PSI and KS of every control histogram against each treatment's.

    Returns (record, {treatment: [what drifted]})."""
    record: dict[str, Any] = {}
    drifted: dict[str, list[str]] = {}
    for hname, ref in m.variants[m.control].histograms.items():
        per: dict[str, Any] = {}
        for t in treatments_of(m):
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
