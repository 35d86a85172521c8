"""CUPED on user buckets: variance reduction with the pre-period of the same metric.

Deng, Xu, Kohavi and Walker (2013), "Improving the sensitivity of online controlled
experiments by utilizing pre-experiment data", with the delta method for ratio metrics
(their section 3.3). The unit is the user bucket, as everywhere in this package: each of
the B buckets of a variant carries the metric's numerator and denominator sums over the
experiment window (Y) and over a window before the experiment started (X, the covariate:
the same users, before any of them saw a treatment, so X cannot depend on the
assignment).

With the linearised bucket residuals of each ratio,
``y_i = (Yn_i - R_Y Yd_i) / sum(Yd)`` and ``x_i = (Xn_i - R_X Xd_i) / sum(Xd)``,
the delta method gives, per variant (c = B / (B - 1))::

    Var(R_Y) = c sum y_i^2      Var(R_X) = c sum x_i^2      Cov = c sum x_i y_i

theta is pooled over the variants (one theta for all, so that the adjustment cannot
favour one of them)::

    theta = sum_v Cov_v / sum_v Var(R_X)_v

and each variant's adjusted estimate and variance are::

    R_adj = R_Y - theta (R_X - R_X_pooled)
    Var(R_adj) = Var(R_Y) - 2 theta Cov + theta^2 Var(R_X)

R_X_pooled is the pre-period ratio of all variants together; it cancels in every
difference, so the tests of :mod:`rankexp.analysis.decide` run unchanged on the adjusted
(estimate, variance) pairs. The variance falls by the factor 1 - rho^2 (rho: the
correlation between the pre- and in-experiment bucket residuals), so confidence intervals
narrow by sqrt(1 - rho^2) and a test needs 1 - rho^2 of the users.

Every function is vectorised over leading axes (the last axis holds the buckets), so the
simulation benchmark runs thousands of experiments in one call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def _residuals(num: FloatArray, den: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(ratio of sums, linearised residuals / sum(den)); NaN where sum(den) == 0."""
    sn, sd = num.sum(axis=-1), den.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = sd > 0
        r = np.where(ok, sn / sd, np.nan)
        resid = (num - np.where(ok, r, 0.0)[..., None] * den) / np.where(ok, sd, np.nan)[..., None]
    return r, resid


@dataclass(frozen=True)
class Moments:
    """One variant's ratio, its pre-period ratio and their delta-method (co)variances."""

    r_y: FloatArray
    r_x: FloatArray
    var_y: FloatArray
    var_x: FloatArray
    cov: FloatArray


def moments(y_num: ArrayLike, y_den: ArrayLike, x_num: ArrayLike, x_den: ArrayLike) -> Moments:
    """The delta-method moments of one variant from its bucket sums (vectorised)."""
    yn, yd = np.asarray(y_num, np.float64), np.asarray(y_den, np.float64)
    xn, xd = np.asarray(x_num, np.float64), np.asarray(x_den, np.float64)
    b = yn.shape[-1]
    c = b / (b - 1)
    r_y, y = _residuals(yn, yd)
    r_x, x = _residuals(xn, xd)
    return Moments(
        r_y=r_y,
        r_x=r_x,
        var_y=c * np.sum(y * y, axis=-1),
        var_x=c * np.sum(x * x, axis=-1),
        cov=c * np.sum(x * y, axis=-1),
    )


def pooled_theta(parts: Sequence[Moments]) -> FloatArray:
    """theta = sum of covariances / sum of covariate variances, over the variants."""
    cov = sum(p.cov for p in parts)
    var_x = sum(p.var_x for p in parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(var_x > 0, cov / var_x, 0.0), dtype=np.float64)


def adjust(part: Moments, theta: ArrayLike, pooled_x: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(adjusted estimate, its variance) of one variant."""
    t = np.asarray(theta, np.float64)
    est = part.r_y - t * (part.r_x - np.asarray(pooled_x, np.float64))
    var = part.var_y - 2.0 * t * part.cov + t * t * part.var_x
    return np.asarray(est, np.float64), np.asarray(np.maximum(var, 0.0), np.float64)


@dataclass(frozen=True)
class Adjusted:
    """CUPED over the variants of one metric: estimates, or why it was not applied."""

    applied: bool
    reason: str
    theta: float | None = None
    #: variant -> (adjusted estimate, variance)
    estimates: Mapping[str, tuple[float, float]] | None = None
    #: variant -> 1 - Var(adjusted) / Var(unadjusted)
    variance_reduction: Mapping[str, float] | None = None
    #: correlation of pre- and in-experiment residuals, pooled over the variants
    rho: float | None = None


def cuped(
    current: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    pre: Mapping[str, tuple[Sequence[float], Sequence[float]] | None],
) -> Adjusted:
    """CUPED for one ratio metric: ``current`` and ``pre`` map each variant to its
    (numerator, denominator) bucket sums. Not applied (with the reason) when a variant
    has no pre-period, an empty one, or the pre-period does not vary across buckets."""
    missing = [v for v in current if pre.get(v) is None]
    if missing:
        return Adjusted(False, f"no pre-period data for {', '.join(missing)}")
    parts: dict[str, Moments] = {}
    for v, (yn, yd) in current.items():
        xn, xd = pre[v] or ((), ())
        if len(xn) != len(yn) or len(xd) != len(yd):
            return Adjusted(False, f"pre-period of {v} has {len(xn)} buckets, not {len(yn)}")
        if sum(xd) <= 0:
            return Adjusted(False, f"the pre-period of {v} is empty (no denominator counts)")
        parts[v] = moments(yn, yd, xn, xd)
    if any(not np.isfinite(p.var_y) for p in parts.values()):
        return Adjusted(False, "a variant has no in-experiment data yet")
    var_x = float(sum(p.var_x for p in parts.values()))
    if var_x <= 0:
        return Adjusted(False, "the pre-period does not vary across buckets")
    theta = pooled_theta(list(parts.values()))
    xs = [pre[v] or ((), ()) for v in current]
    pooled_x = float(sum(sum(x[0]) for x in xs) / sum(sum(x[1]) for x in xs))
    estimates: dict[str, tuple[float, float]] = {}
    reduction: dict[str, float] = {}
    for v, p in parts.items():
        est, var = adjust(p, theta, pooled_x)
        estimates[v] = (float(est), float(var))
        reduction[v] = float(1.0 - var / p.var_y) if p.var_y > 0 else 0.0
    var_y = float(sum(p.var_y for p in parts.values()))
    cov = float(sum(p.cov for p in parts.values()))
    rho = cov / np.sqrt(var_x * var_y) if var_y > 0 else 0.0
    return Adjusted(
        True,
        f"theta {float(theta):.4g} from {len(parts)} variants' pre-period",
        theta=float(theta),
        estimates=estimates,
        variance_reduction=reduction,
        rho=float(rho),
    )
