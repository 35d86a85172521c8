"""CUPED on user buckets: the adjustment, its fallbacks and its place in the decision."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from rankexp.analysis import InputError, analyze
from rankexp.analysis.cuped import cuped, moments
from rankexp.api import AnalysisStatus
from rankexp.experiment import evidence

B = 64


def world(seed: int, lift: float = 0.0, persistent: float = 0.15) -> dict[str, Any]:
    """Two arms whose buckets have a persistent click propensity seen in both periods."""
    rng = np.random.default_rng(seed)
    variants: dict[str, Any] = {}
    for name, ctr in (("control", 0.05), ("treatment", 0.05 * (1 + lift))):
        factor = rng.gamma(1 / persistent**2, persistent**2, size=B)
        imps = rng.poisson(3000, size=B).astype(float)
        pre_imps = rng.poisson(3000, size=B).astype(float)
        variants[name] = {
            "exposures": float(imps.sum() / 10),
            "buckets": {
                "clicks": rng.binomial(imps.astype(int), ctr * factor).astype(float).tolist(),
                "impressions": imps.tolist(),
            },
            "pre_buckets": {
                "clicks": rng.binomial(pre_imps.astype(int), 0.05 * factor).astype(float).tolist(),
                "impressions": pre_imps.tolist(),
            },
        }
    return {
        "weights": {"control": 50, "treatment": 50},
        "method": "fixed",
        "min_samples_per_variant": 10,
        "secondary_metrics": [],
        "variants": variants,
    }


def width(record: dict[str, Any]) -> float:
    lo, hi = record["metrics"]["ctr"]["treatment"]["ci"]
    return float(hi - lo)


def test_identical_periods_leave_no_variance_and_theta_one() -> None:
    y = ([5.0, 7, 9, 4], [100.0, 110, 120, 90])
    m = moments(*y, *y)
    assert m.cov == pytest.approx(m.var_y) and m.var_x == pytest.approx(m.var_y)
    adjusted = cuped({"a": y, "b": ([6.0, 6, 8, 5], [100.0, 105, 119, 95])}, {"a": y, "b": y})
    assert adjusted.applied and adjusted.estimates is not None
    # b's pre-period is a's: pooled theta is between, a's own variance falls to ~ 0 only
    # at theta 1; check the algebra against the definition instead
    assert adjusted.theta is not None and 0 < adjusted.theta
    est, var = adjusted.estimates["a"]
    pooled_x = sum(y[0]) * 2 / (sum(y[1]) * 2)
    assert est == pytest.approx(float(m.r_y) - adjusted.theta * (float(m.r_x) - pooled_x))
    t = adjusted.theta
    assert var == pytest.approx(float(m.var_y - 2 * t * m.cov + t * t * m.var_x))


def test_cuped_narrows_the_interval_by_about_sqrt_one_minus_rho_squared() -> None:
    payload = world(1)
    plain = analyze(payload)
    adjusted = analyze({**payload, "cuped": {"enabled": True}})
    info = adjusted["cuped"]
    assert info["applied"] and info["metric"] == "ctr"
    rho = info["rho"]
    assert 0.3 < rho < 1
    ratio = width(adjusted) / width(plain)
    assert ratio < 0.95
    assert ratio == pytest.approx(math.sqrt(1 - rho**2), abs=0.08)
    assert (
        info["unadjusted"]["control"]["estimate"] == plain["metrics"]["ctr"]["control"]["estimate"]
    )
    assert all(0 < r < 1 for r in info["variance_reduction"].values())
    # the decision's own estimates are the adjusted ones
    assert (
        adjusted["metrics"]["ctr"]["control"]["std_error"]
        < plain["metrics"]["ctr"]["control"]["std_error"]
    )


def test_a_true_lift_stays_and_an_a_a_stays_near_zero() -> None:
    lifts = [analyze({**world(s, lift=0.10), "cuped": {"enabled": True}}) for s in range(20)]
    mean = np.mean([r["metrics"]["ctr"]["treatment"]["relative_lift"] for r in lifts])
    assert 0.05 < mean < 0.15
    aa = [analyze({**world(100 + s), "cuped": {"enabled": True}}) for s in range(40)]
    rejected = sum(r["metrics"]["ctr"]["treatment"]["p_value"] <= 0.05 for r in aa)
    assert rejected <= 6  # ~ 2 expected at alpha 0.05


def test_without_a_pre_period_it_runs_unadjusted_and_says_why() -> None:
    payload = world(2)
    del payload["variants"]["treatment"]["pre_buckets"]
    plain = analyze(payload)
    record = analyze({**payload, "cuped": {"enabled": True}})
    assert record["cuped"] == {
        "enabled": True,
        "metric": "ctr",
        "applied": False,
        "reason": "no pre-period data for treatment",
    }
    assert record["metrics"] == plain["metrics"]
    empty = world(2)
    empty["variants"]["control"]["pre_buckets"]["impressions"] = [0.0] * B
    empty["variants"]["control"]["pre_buckets"]["clicks"] = [0.0] * B
    record = analyze({**empty, "cuped": {"enabled": True}})
    assert not record["cuped"]["applied"] and "empty" in record["cuped"]["reason"]
    assert "cuped" not in analyze(world(2))  # off unless enabled


def test_pre_buckets_of_another_length_name_the_field() -> None:
    payload = world(3)
    payload["variants"]["control"]["pre_buckets"]["clicks"] = [1.0] * 8
    with pytest.raises(InputError) as info:
        analyze({**payload, "cuped": {"enabled": True}})
    assert info.value.field == "variants.control.pre_buckets.clicks"


def test_the_status_block_fits_the_crd_shape() -> None:
    record = analyze({**world(4), "cuped": {"enabled": True}})
    status = evidence.analysis_status(
        record,
        time="2026-12-04T19:00:00Z",
        window=("2026-12-04T18:00:00Z", "2026-12-04T19:00:00Z"),
        expected_share={"control": 0.5, "treatment": 0.5},
        pre_window=("2026-11-27T18:00:00Z", "2026-12-04T18:00:00Z"),
    )
    block = status["cuped"]
    assert block["applied"] and block["preWindow"]["end"] == "2026-12-04T18:00:00Z"
    assert {v["variant"] for v in block["varianceReduction"]} == {"control", "treatment"}
    parsed = AnalysisStatus.model_validate(status)
    assert parsed.cuped is not None and parsed.cuped.theta == block["theta"]
