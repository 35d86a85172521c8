"""Treatment against control on one metric: the estimate, its interval and the tests
(sequential or fixed), Holm families, and the per-metric part of the decision record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rankexp.analysis.models import METRICS, AnalysisInput
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
    welch_df,
)


@dataclass(frozen=True)
class Comparison:
    """One treatment against control on one metric."""

    lift: float
    relative_lift: float | None
    ci: tuple[float, float]
    relative_ci: tuple[float, float] | None
    p_value: float
    test: str


def finite(x: Any) -> float | None:
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


Estimates = dict[str, dict[str, tuple[float, float] | None]]
Comparisons = dict[str, dict[str, Comparison]]
Adjusted = dict[tuple[str, str], float]


def treatments_of(m: AnalysisInput) -> list[str]:
    return [v for v in m.variants if v != m.control]


def estimates_of(
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


def bucket_count(m: AnalysisInput) -> int:
    return next((len(s) for v in m.variants.values() for s in v.buckets.values()), 2)


def comparisons_of(m: AnalysisInput, metric_names: list[str], estimates: Estimates) -> Comparisons:
    n_buckets = bucket_count(m)
    out: Comparisons = {}
    for name in metric_names:
        out[name] = {}
        ctl = estimates[name][m.control]
        for t in treatments_of(m):
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


def holm_families(m: AnalysisInput, metric_names: list[str], comparisons: Comparisons) -> Adjusted:
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


def metrics_record(
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
                "estimate": finite(est[0]) if est else None,
                "std_error": finite(math.sqrt(est[1])) if est else None,
            }
            c = comparisons[name].get(vname)
            if c is not None:
                p_adj = adjusted[(name, vname)]
                entry.update(
                    lift=finite(c.lift),
                    relative_lift=finite(c.relative_lift) if c.relative_lift is not None else None,
                    ci=[finite(c.ci[0]), finite(c.ci[1])],
                    relative_ci=[finite(x) for x in c.relative_ci] if c.relative_ci else None,
                    p_value=finite(c.p_value),
                    p_value_adjusted=finite(p_adj),
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


def count_value(x: float | None) -> int | float | None:
    """Counters arrive as floats (Prometheus); print whole numbers as integers."""
    return int(x) if x is not None and x.is_integer() else x


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:+.2f}%"
