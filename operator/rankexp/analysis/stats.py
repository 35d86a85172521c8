"""Estimators and classical tests on user-bucket replicates.

Users are the randomisation unit, but the ranker only exports counters summed
per *bucket* (an independent stable hash of the user into B buckets, B = 64).
Because users land in buckets independently, the B per-bucket sums are i.i.d.
replicates of "the sums over a random 1/B of the users", which is all a
delta-method variance needs. Impressions of one user are correlated; treating
impressions as the unit (a binomial variance) would understate the variance.

Every function here is vectorised over leading axes: the last axis holds the
buckets, so the simulation benchmark runs thousands of experiments in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

FloatArray = NDArray[np.float64]


def ratio_estimate(num: ArrayLike, den: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Ratio of sums R = sum(x) / sum(y) and its delta-method variance.

    With bucket sums (x_i, y_i), i = 1..B, as replicates::

        Var(R) ~= B / (B - 1) * sum_i (x_i - R y_i)^2 / (sum_i y_i)^2

    which is the usual ``(s_xx - 2 R s_xy + R^2 s_yy) / (B * mean(y)^2)``
    written on the residuals. It serves ratio metrics (ctr = clicks /
    impressions) and per-event means (dwell_time = dwell_seconds /
    dwell_events) alike. Both outputs are NaN where ``sum(y) == 0``.
    """
    x = np.asarray(num, dtype=np.float64)
    y = np.asarray(den, dtype=np.float64)
    b = x.shape[-1]
    sx = x.sum(axis=-1)
    sy = y.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = sy > 0
        r = np.where(ok, sx / sy, np.nan)
        resid = x - np.where(ok, r, 0.0)[..., None] * y
        var = np.where(ok, b / (b - 1) * np.sum(resid**2, axis=-1) / sy**2, np.nan)
    return np.asarray(r, dtype=np.float64), np.asarray(var, dtype=np.float64)


def welch_df(var_a: ArrayLike, var_b: ArrayLike, n_a: int, n_b: int) -> FloatArray:
    """Welch-Satterthwaite degrees of freedom for two estimates with variances
    ``var_a``, ``var_b`` computed from ``n_a`` and ``n_b`` replicates."""
    va = np.asarray(var_a, dtype=np.float64)
    vb = np.asarray(var_b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        den = va**2 / (n_a - 1) + vb**2 / (n_b - 1)
        df = np.where(den > 0, (va + vb) ** 2 / den, float(n_a + n_b - 2))
    return np.asarray(df, dtype=np.float64)


def _standardise(diff: FloatArray, var: FloatArray) -> FloatArray:
    """diff / sqrt(var), with a zero variance giving 0 (no difference) or inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(var)
        z = np.where(se > 0, diff / se, np.where(diff == 0, 0.0, np.inf))
    return np.asarray(z, dtype=np.float64)


def fixed_test(
    diff: ArrayLike, var: ArrayLike, alpha: float, df: ArrayLike | None = None
) -> tuple[FloatArray, FloatArray]:
    """Classical two-sided test of ``diff == 0`` given its variance.

    A z-test, or a t-test when ``df`` is given (Welch). Returns the p-value and
    the half-width of the (1 - alpha) confidence interval. Valid at one
    pre-planned look only: checking it at every interval inflates false
    positives (see ``bench/bench_stats.py``).
    """
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    z = np.abs(_standardise(d, v))
    if df is None:
        p = 2.0 * stats.norm.sf(z)
        crit = stats.norm.isf(alpha / 2.0)
    else:
        dfa = np.asarray(df, dtype=np.float64)
        p = 2.0 * stats.t.sf(z, dfa)
        crit = stats.t.isf(alpha / 2.0, dfa)
    half = crit * np.sqrt(v)
    return np.asarray(np.minimum(p, 1.0), dtype=np.float64), np.asarray(half, dtype=np.float64)


def fixed_p_below(diff: ArrayLike, var: ArrayLike, df: ArrayLike | None = None) -> FloatArray:
    """Classical one-sided p-value of ``H0: mean(diff) >= 0`` against ``< 0``.

    ``Phi(diff / se)`` (z), or Student's t CDF with ``df`` degrees of freedom.
    Small when ``diff`` lies clearly below zero.
    """
    z = _standardise(np.asarray(diff, dtype=np.float64), np.asarray(var, dtype=np.float64))
    if df is None:
        p = stats.norm.cdf(z)
    else:
        p = stats.t.cdf(z, np.asarray(df, dtype=np.float64))
    return np.asarray(p, dtype=np.float64)


def srm_test(observed: ArrayLike, weights: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Sample-ratio mismatch: Pearson chi-square of exposures against weights.

    ``observed`` has variants on the last axis; ``weights`` are the intended
    shares (any scale). Variants with zero weight and zero exposures are left
    out; exposures on a zero-weight variant give p = 0. Returns (chi2, p).
    """
    obs = np.asarray(observed, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = ~((w == 0) & np.all(obs == 0, axis=tuple(range(obs.ndim - 1))))
    obs = obs[..., keep]
    w = w[keep]
    total = obs.sum(axis=-1, keepdims=True)
    expected = total * (w / w.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(
            expected > 0, (obs - expected) ** 2 / expected, np.where(obs > 0, np.inf, 0)
        )
    chi2 = terms.sum(axis=-1)
    dof = max(int(keep.sum()) - 1, 1)
    p = np.where(total[..., 0] > 0, stats.chi2.sf(chi2, dof), 1.0)
    return np.asarray(chi2, dtype=np.float64), np.asarray(p, dtype=np.float64)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as the input).

    Controls the family-wise error rate at alpha for any dependence between
    the tests: reject where the adjusted p-value is <= alpha.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
