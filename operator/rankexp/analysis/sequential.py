"""Always-valid inference: the normal-mixture sequential probability ratio test.

Let ``d`` be the estimated difference (treatment - control) at a look and ``V``
its variance (delta method, from the bucket replicates). Under the null the
sequence of estimates behaves like a Gaussian random walk in information time
``1/V``. Mixing the likelihood ratio over a prior ``theta ~ N(0, tau^2)`` gives
(Johari, Pekelis & Walsh 2017, "Always valid inference"; Howard et al. 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences")::

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

``Lambda`` is a nonnegative martingale under the null, so by Ville's
inequality ``P(Lambda ever >= 1/alpha) <= alpha``: the always-valid p-value
``p = min(1, 1/Lambda)`` may be checked at every look (and its running
minimum taken) without inflating false positives. Inverting the test gives
the matching confidence sequence ``d +/- half_width`` below.

The mixing variance ``tau^2`` decides where the test is most powerful: effects
of size about ``tau`` are detected soonest. The default ties it to the minimum
detectable effect: ``tau = mde * |pooled estimate|`` with ``mde = 0.05``
(a 5 % relative lift). A larger ``tau`` stops sooner on large effects and
later on small ones; the error guarantee holds for every ``tau > 0``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from rankexp.analysis.stats import FloatArray


def msprt_log_lr(diff: ArrayLike, var: ArrayLike, tau2: ArrayLike) -> FloatArray:
    """log Lambda of the normal-mixture SPRT (``+inf`` when ``V == 0 != d``)."""
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    t = np.asarray(tau2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = v + t
        log_lr = 0.5 * np.log(v / s) + t * d**2 / (2.0 * v * s)
        degenerate = np.where(d == 0, 0.0, np.inf)
        out = np.where((v > 0) & (t > 0), log_lr, np.where(v > 0, 0.0, degenerate))
    return np.asarray(out, dtype=np.float64)


def msprt_p_value(diff: ArrayLike, var: ArrayLike, tau2: ArrayLike) -> FloatArray:
    """Always-valid two-sided p-value ``min(1, 1/Lambda)``."""
    log_lr = msprt_log_lr(diff, var, tau2)
    with np.errstate(over="ignore"):
        p = np.exp(-np.maximum(log_lr, 0.0))
    return np.asarray(p, dtype=np.float64)


def msprt_p_value_below(diff: ArrayLike, var: ArrayLike, tau2: ArrayLike) -> FloatArray:
    """Always-valid one-sided p-value of ``H0: theta >= 0`` against ``theta < 0``.

    The two-sided p-value where the estimate is below zero, else 1. It is at
    most alpha exactly when the upper end of the (1 - alpha) confidence
    sequence is below zero; since that sequence covers theta at every look
    with probability >= 1 - alpha, so does the one-sided bound (conservative:
    it spends all of alpha on one side's boundary but is checked one-sidedly).
    """
    d = np.asarray(diff, dtype=np.float64)
    p = np.where(d < 0, msprt_p_value(d, var, tau2), 1.0)
    return np.asarray(p, dtype=np.float64)


def cs_half_width(var: ArrayLike, tau2: ArrayLike, alpha: float) -> FloatArray:
    """Half-width of the (1 - alpha) confidence sequence around the estimate::

        sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))

    It contains 0 exactly when the always-valid p-value exceeds alpha.
    """
    v = np.asarray(var, dtype=np.float64)
    t = np.asarray(tau2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = v + t
        w2 = v * s / t * (2.0 * math.log(1.0 / alpha) + np.log(s / v))
        half = np.where(v > 0, np.where(t > 0, np.sqrt(w2), np.inf), 0.0)
    return np.asarray(half, dtype=np.float64)


def mixing_variance(control: ArrayLike, treatment: ArrayLike, mde: float) -> FloatArray:
    """``tau^2 = (mde * |(control + treatment) / 2|)^2``.

    Pooled (not control-only) so that swapping the two arms leaves the test
    unchanged; the estimates settle within a few looks, so ``tau`` is in
    effect fixed in advance.
    """
    c = np.asarray(control, dtype=np.float64)
    t = np.asarray(treatment, dtype=np.float64)
    return np.asarray((mde * np.abs(c + t) / 2.0) ** 2, dtype=np.float64)
