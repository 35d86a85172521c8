"""The mixture SPRT: always-valid p-values and the matching confidence sequence."""

from __future__ import annotations

import numpy as np
import pytest

from rankexp.analysis import (
    compare,
    cs_half_width,
    fixed_test,
    mixing_variance,
    msprt_p_value,
    ratio_estimate,
)

ALPHA = 0.05


@pytest.mark.parametrize("var", [1e-8, 1e-6, 1e-4])
def test_p_value_below_alpha_exactly_when_zero_leaves_the_sequence(var: float) -> None:
    tau2 = 1e-6
    half = float(cs_half_width(var, tau2, ALPHA))
    for diff in np.linspace(0, 3 * half, 61):
        p = float(msprt_p_value(diff, var, tau2))
        if abs(diff - half) > 1e-9 * half:
            assert (p <= ALPHA) == (diff > half), (diff, half, p)
    assert float(msprt_p_value(half, var, tau2)) == pytest.approx(ALPHA, rel=1e-9)


def test_p_value_is_one_at_zero_and_falls_with_the_effect() -> None:
    diffs = np.linspace(0, 0.01, 50)
    p = msprt_p_value(diffs, 1e-6, 1e-5)
    assert p[0] == 1.0
    assert np.all(np.diff(p) <= 0) and p[-1] < 1e-6


def test_sequence_is_wider_than_the_fixed_interval() -> None:
    var = np.logspace(-9, -3, 20)
    _, fixed_half = fixed_test(np.zeros_like(var), var, ALPHA)
    assert np.all(cs_half_width(var, 1e-6, ALPHA) > fixed_half)


def test_sequence_shrinks_to_zero_with_data() -> None:
    var = np.logspace(-4, -14, 11)
    half = cs_half_width(var, 1e-6, ALPHA)
    assert np.all(np.diff(half) < 0) and half[-1] < 1e-6
    assert float(cs_half_width(0.0, 1e-6, ALPHA)) == 0.0


def test_degenerate_variances_do_not_warn() -> None:
    assert float(msprt_p_value(0.0, 0.0, 1e-6)) == 1.0
    assert float(msprt_p_value(0.01, 0.0, 1e-6)) == 0.0
    assert float(msprt_p_value(0.01, 1e-6, 0.0)) == 1.0  # no mixing: no evidence


def test_mixing_variance_follows_the_mde() -> None:
    assert float(mixing_variance(0.05, 0.05, 0.05)) == pytest.approx(0.0025**2)
    assert float(mixing_variance(0.04, 0.06, 0.1)) == float(mixing_variance(0.06, 0.04, 0.1))


def test_compare_sequential_interval_contains_the_lift() -> None:
    c = compare((0.050, 1e-7), (0.053, 1.1e-7), method="sequential", alpha=ALPHA)
    assert c.test == "msprt"
    assert c.ci[0] < c.lift < c.ci[1]
    assert c.relative_ci is not None and c.relative_ci[0] < 0.06 < c.relative_ci[1]
    assert (c.p_value <= ALPHA) == (c.ci[0] > 0)


def _peeking_experiment(seed: int, n_exp: int, looks: int) -> tuple[np.ndarray, np.ndarray]:
    """A/A: cumulative bucket counters at every look, p-values per look."""
    rng = np.random.default_rng(seed)
    shape = (2, n_exp, looks, 64)
    imps = rng.poisson(200.0, shape).astype(float)
    clicks = rng.binomial(imps.astype(int), 0.05 * rng.gamma(40, 1 / 40, shape)).astype(float)
    r, v = ratio_estimate(np.cumsum(clicks, axis=2), np.cumsum(imps, axis=2))
    diff, var = r[1] - r[0], v[1] + v[0]
    p_seq = msprt_p_value(diff, var, mixing_variance(r[0], r[1], 0.05))
    p_fix, _ = fixed_test(diff, var, ALPHA)
    return p_seq, p_fix


def test_looking_every_interval_keeps_the_sequential_error_below_alpha() -> None:
    p_seq, p_fix = _peeking_experiment(seed=11, n_exp=600, looks=20)
    fpr_seq = np.mean((p_seq <= ALPHA).any(axis=1))
    fpr_fix = np.mean((p_fix <= ALPHA).any(axis=1))
    assert fpr_seq <= ALPHA
    assert fpr_fix > 2 * ALPHA  # the peeking problem the sequential test solves
