"""Power and minimum sample size, for planning an experiment.

These are fixed-horizon (z-test) figures. A sequential test pays for being
checkable at every look with a larger sample: plan on roughly 1.5-2x the
fixed figure (``bench/bench_stats.py`` measures it for one setting).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from rankexp.analysis.stats import ratio_estimate


def required_samples(
    sd: float, mde_abs: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> int:
    """Units per control arm for a two-sided z-test to detect ``mde_abs``.

    ``sd`` is the per-unit standard deviation (equal in both arms); the
    treatment arm gets ``ratio`` times as many units.
    """
    _check(alpha, power)
    if sd < 0 or mde_abs == 0 or ratio <= 0:
        raise ValueError("need sd >= 0, mde_abs != 0 and ratio > 0")
    z = stats.norm.isf(alpha / 2.0) + stats.norm.ppf(power)
    return math.ceil(float(z**2 * sd**2 * (1.0 + 1.0 / ratio) / mde_abs**2))


def required_samples_per_variant(
    baseline: float,
    mde_relative: float,
    alpha: float = 0.05,
    power: float = 0.8,
    design_effect: float = 1.0,
) -> int:
    """Impressions per arm to detect a relative lift of a rate (e.g. CTR).

    Binomial variances at ``baseline`` and ``baseline * (1 + mde_relative)``,
    inflated by ``design_effect``: the ratio of the users-as-unit variance to
    the binomial one (measure it with :func:`design_effect`; clicks of one
    user are correlated, so it is usually > 1).
    """
    _check(alpha, power)
    p1 = baseline
    p2 = baseline * (1.0 + mde_relative)
    if not (0.0 < p1 < 1.0 and 0.0 < p2 < 1.0) or mde_relative == 0 or design_effect <= 0:
        raise ValueError("need 0 < baseline, baseline * (1 + mde) < 1, mde != 0, design_effect > 0")
    z = stats.norm.isf(alpha / 2.0) + stats.norm.ppf(power)
    var = p1 * (1.0 - p1) + p2 * (1.0 - p2)
    return math.ceil(float(z**2 * var * design_effect / (p2 - p1) ** 2))


def power_at(
    n_per_variant: float,
    baseline: float,
    mde_relative: float,
    alpha: float = 0.05,
    design_effect: float = 1.0,
) -> float:
    """Power of the two-sided fixed test with ``n_per_variant`` impressions per arm."""
    p1 = baseline
    p2 = baseline * (1.0 + mde_relative)
    se = math.sqrt(design_effect * (p1 * (1.0 - p1) + p2 * (1.0 - p2)) / n_per_variant)
    z = abs(p2 - p1) / se
    crit = stats.norm.isf(alpha / 2.0)
    return float(stats.norm.sf(crit - z) + stats.norm.cdf(-crit - z))


def design_effect(num: ArrayLike, den: ArrayLike) -> float:
    """Delta-method (users-as-unit) variance of a rate over its binomial variance.

    ``num`` / ``den`` are the bucket arrays of one arm (clicks, impressions).
    """
    r, var = ratio_estimate(num, den)
    n = float(np.sum(np.asarray(den, dtype=np.float64)))
    rate = float(r)
    binom = rate * (1.0 - rate) / n if n > 0 else 0.0
    return float(var) / binom if binom > 0 else float("nan")


def _check(alpha: float, power: float) -> None:
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError("alpha and power must lie in (0, 1)")
