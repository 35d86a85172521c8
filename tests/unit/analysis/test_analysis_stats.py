"""The classical pieces of rankexp.analysis against scipy and statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from rankexp.analysis import (
    compare,
    design_effect,
    fixed_test,
    holm,
    ks_binned,
    power_at,
    psi,
    ratio_estimate,
    required_samples,
    required_samples_per_variant,
    srm_test,
    welch_df,
)

B = 64


def test_ratio_estimate_is_ratio_of_sums() -> None:
    num = np.array([1.0, 2.0, 3.0, 4.0])
    den = np.array([10.0, 10.0, 20.0, 40.0])
    r, var = ratio_estimate(num, den)
    assert float(r) == pytest.approx(10.0 / 80.0)
    resid = num - 0.125 * den
    assert float(var) == pytest.approx(4 / 3 * np.sum(resid**2) / 80.0**2)


def test_ratio_estimate_without_denominator_is_nan() -> None:
    r, var = ratio_estimate(np.zeros(B), np.zeros(B))
    assert math.isnan(float(r)) and math.isnan(float(var))


def test_delta_method_matches_jackknife() -> None:
    rng = np.random.default_rng(1)
    den = rng.poisson(3000, B).astype(float)
    num = rng.binomial(den.astype(int), 0.05 * rng.gamma(30, 1 / 30, B)).astype(float)
    _, var = ratio_estimate(num, den)
    loo = np.array([(num.sum() - num[i]) / (den.sum() - den[i]) for i in range(B)])
    jack = (B - 1) / B * np.sum((loo - loo.mean()) ** 2)
    assert float(var) == pytest.approx(jack, rel=0.05)


def _constant_denominator_arms() -> tuple[np.ndarray, np.ndarray, float]:
    """Bucket sums with equal denominators: the ratio's delta-method variance is
    then exactly var(bucket means) / B, the classical two-sample setting."""
    rng = np.random.default_rng(7)
    den = 500.0
    a = rng.normal(14.0, 1.5, B) * den
    b = rng.normal(14.6, 2.5, B) * den
    return a, b, den


def test_welch_matches_scipy() -> None:
    a, b, den = _constant_denominator_arms()
    ra, va = ratio_estimate(a, np.full(B, den))
    rb, vb = ratio_estimate(b, np.full(B, den))
    df = welch_df(va, vb, B, B)
    p, half = fixed_test(rb - ra, va + vb, 0.05, df)
    ref = stats.ttest_ind(b / den, a / den, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert float(df) == pytest.approx(ref.df, rel=1e-9)
    assert float(p) == pytest.approx(ref.pvalue, rel=1e-9)
    assert float(rb - ra - half) == pytest.approx(ci.low, rel=1e-9)
    assert float(rb - ra + half) == pytest.approx(ci.high, rel=1e-9)


def test_z_test_matches_statsmodels() -> None:
    a, b, den = _constant_denominator_arms()
    ra, va = ratio_estimate(a, np.full(B, den))
    rb, vb = ratio_estimate(b, np.full(B, den))
    p, half = fixed_test(rb - ra, va + vb, 0.05)
    cm = CompareMeans(DescrStatsW(b / den), DescrStatsW(a / den))
    _, p_ref = cm.ztest_ind(usevar="unequal")
    low, high = cm.zconfint_diff(alpha=0.05, usevar="unequal")
    assert float(p) == pytest.approx(p_ref, rel=1e-9)
    assert float(rb - ra - half) == pytest.approx(low, rel=1e-9)
    assert float(rb - ra + half) == pytest.approx(high, rel=1e-9)


def test_compare_fixed_ratio_uses_z_and_mean_uses_welch() -> None:
    a, b, den = _constant_denominator_arms()
    ra, va = ratio_estimate(a, np.full(B, den))
    rb, vb = ratio_estimate(b, np.full(B, den))
    ctl, trt = (float(ra), float(va)), (float(rb), float(vb))
    z = compare(ctl, trt, method="fixed", alpha=0.05, kind="ratio")
    t = compare(ctl, trt, method="fixed", alpha=0.05, kind="mean")
    ref = stats.ttest_ind(b / den, a / den, equal_var=False)
    assert (z.test, t.test) == ("z", "welch-t")
    assert t.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert z.p_value < t.p_value  # the normal tail is thinner than Student's


def test_zero_variance_is_not_a_division_warning() -> None:
    p, half = fixed_test(0.0, 0.0, 0.05)
    assert float(p) == 1.0 and float(half) == 0.0
    p, _ = fixed_test(0.1, 0.0, 0.05)
    assert float(p) == 0.0


@pytest.mark.parametrize(
    ("observed", "weights"),
    [([10_050, 9_950], [50, 50]), ([4_800, 5_200], [50, 50]), ([900, 2_100, 7_000], [10, 20, 70])],
)
def test_srm_matches_scipy_chisquare(observed: list[int], weights: list[int]) -> None:
    chi2, p = srm_test(observed, weights)
    expected = np.array(weights) / sum(weights) * sum(observed)
    ref = stats.chisquare(observed, expected)
    assert float(chi2) == pytest.approx(ref.statistic, rel=1e-9)
    assert float(p) == pytest.approx(ref.pvalue, rel=1e-9)


def test_srm_exposures_on_zero_weight_variant_is_a_mismatch() -> None:
    _, p = srm_test([100, 5], [100, 0])
    assert float(p) == 0.0
    _, p = srm_test([100, 0], [100, 0])
    assert float(p) == 1.0


def test_holm_matches_statsmodels() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.04]
    _, ref, _, _ = multipletests(p, alpha=0.05, method="holm")
    assert holm(p) == pytest.approx(list(ref), rel=1e-12)


def test_ks_binned_matches_scipy_on_integer_samples() -> None:
    # Integer-valued samples binned one integer per bin: the binned CDFs are the
    # exact empirical CDFs, so the statistic and p-value must equal ks_2samp's.
    rng = np.random.default_rng(3)
    a = rng.binomial(20, 0.40, 3000)
    b = rng.binomial(20, 0.42, 2500)
    edges = np.arange(-0.5, 21.0)
    ca, _ = np.histogram(a, edges)
    cb, _ = np.histogram(b, edges)
    d, p = ks_binned(ca, cb)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, rel=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_binned_ks_statistic_is_a_lower_bound_of_the_raw_one() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.beta(2, 5, 4000), rng.beta(2.2, 5, 4000)
    edges = np.linspace(0, 1, 11)
    d, _ = ks_binned(np.histogram(a, edges)[0], np.histogram(b, edges)[0])
    assert 0 < d <= stats.ks_2samp(a, b).statistic + 1e-12


def test_psi_by_hand() -> None:
    ref, cur = [50, 30, 20], [40, 30, 30]
    p = (np.array(ref) / 100 + 1e-4) / (1 + 3e-4)
    q = (np.array(cur) / 100 + 1e-4) / (1 + 3e-4)
    assert psi(ref, cur) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    assert psi([10, 0, 0], [0, 0, 10]) > 10  # empty bins: large but finite


def test_required_samples_matches_statsmodels() -> None:
    for sd, mde, power, ratio in [(1.0, 0.1, 0.8, 1.0), (2.5, 0.3, 0.9, 2.0)]:
        ours = required_samples(sd, mde, alpha=0.05, power=power, ratio=ratio)
        ref = NormalIndPower().solve_power(
            effect_size=mde / sd, alpha=0.05, power=power, ratio=ratio
        )
        assert ours == pytest.approx(ref, rel=2e-3)
        assert ours >= ref  # ours ignores the far tail, so is never smaller


def test_sample_size_and_power_are_inverse() -> None:
    n = required_samples_per_variant(0.05, 0.05, alpha=0.05, power=0.8, design_effect=1.5)
    assert 0.8 <= power_at(n, 0.05, 0.05, alpha=0.05, design_effect=1.5) < 0.801
    assert power_at(n - 1000, 0.05, 0.05, design_effect=1.5) < 0.8
    with pytest.raises(ValueError):
        required_samples_per_variant(0.05, 0.05, power=1.0)


def test_design_effect_is_one_for_independent_impressions_and_more_for_clustered() -> None:
    rng = np.random.default_rng(5)
    den = rng.poisson(5000, (200, B)).astype(float)
    plain = rng.binomial(den.astype(int), 0.05).astype(float)
    clustered = rng.binomial(den.astype(int), 0.05 * rng.gamma(20, 1 / 20, (200, B)))
    de_plain = np.median([design_effect(plain[i], den[i]) for i in range(200)])
    de_clustered = np.median([design_effect(clustered[i], den[i]) for i in range(200)])
    assert 0.9 < de_plain < 1.1
    assert de_clustered > 3
