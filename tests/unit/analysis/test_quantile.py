"""Latency as a distribution: p95 of binned histograms (Prometheus semantics), the
bucket-bootstrap interval of a p95 difference, and the latency non-inferiority guardrail."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest

from rankexp.analysis import InputError, analyze, parse_input
from rankexp.analysis.quantile import breaches, histogram_quantile, quantile_difference
from rankexp.prom.metrics import analysis_input

LE = [0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0]
BINS = len(LE) + 1


# --- histogram_quantile: what Prometheus' histogram_quantile answers ----------------


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        # cumulative 10, 60, 90, 95, ...: rank 95 lands exactly on the end of (0.02, 0.03]
        ([10, 50, 30, 5, 3, 2, 0, 0, 0, 0, 0, 0, 0], 0.95, 0.03),
        # rank 50 of 100, cumulative 10, 60: (50 - 10) / 50 of the way from 0.005 to 0.01
        ([10, 50, 30, 5, 3, 2, 0, 0, 0, 0, 0, 0, 0], 0.5, 0.005 + 0.005 * 40 / 50),
        # the first bucket interpolates from 0
        ([100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0.95, 0.005 * 0.95),
        # a rank in +Inf answers the largest finite bound
        ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5], 0.95, 1.0),
        ([90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10], 0.95, 1.0),
        # empty bins below the rank's bucket do not move it
        ([0, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0], 0.95, 0.03 + 0.02 * 0.95),
    ],
)
def test_histogram_quantile_is_prometheus(counts: list[int], q: float, expected: float) -> None:
    assert histogram_quantile(q, LE, counts) == pytest.approx(expected)


def test_histogram_quantile_empty_is_nan_and_stacks() -> None:
    assert math.isnan(float(histogram_quantile(0.95, LE, [0] * BINS)))
    stack = np.array([[100] + [0] * 12, [0] * 12 + [5], [0] * BINS])
    out = np.asarray(histogram_quantile(0.95, LE, stack))
    assert out[:2] == pytest.approx([0.00475, 1.0]) and math.isnan(out[2])
    with pytest.raises(ValueError, match="bins"):
        histogram_quantile(0.95, LE, [1, 2])


def test_histogram_quantile_matches_raw_quantile_within_a_bin() -> None:
    rng = np.random.default_rng(7)
    lat = rng.lognormal(math.log(0.012), 0.4, 200_000)
    counts = np.bincount(np.searchsorted(LE, lat, side="left"), minlength=BINS)
    p95 = float(histogram_quantile(0.95, LE, counts))
    raw = float(np.quantile(lat, 0.95))
    b = int(np.searchsorted(LE, raw))
    assert LE[b - 1] <= p95 <= LE[b]  # same bin; linear inside it


# --- the bootstrap interval -------------------------------------------------------


def arm(
    rng: np.random.Generator,
    requests: int,
    *,
    shift: float = 0.0,
    median: float = 0.008,
    sigma: float = 0.6,
    spikes: float = 0.02,
) -> np.ndarray:
    """Per user bucket (64), per bin: ``requests`` latencies (seconds), log-normal with
    a share ``spikes`` of stalls uniform on 50-300 ms, plus ``shift``."""
    lat = rng.lognormal(math.log(median), sigma, requests)
    stall = rng.random(requests) < spikes
    lat[stall] = rng.uniform(0.05, 0.3, int(stall.sum()))
    lat += shift
    bucket = rng.integers(0, 64, requests)
    bins = np.searchsorted(LE, lat, side="left")
    return np.bincount(bucket * BINS + bins, minlength=64 * BINS).reshape(64, BINS).astype(float)


def test_shift_of_50ms_is_detected_with_a_20ms_margin() -> None:
    rng = np.random.default_rng(1)
    c, t = arm(rng, 3000), arm(rng, 3000, shift=0.05)
    d = quantile_difference(LE, c, t)
    assert d is not None
    assert 0.035 < d.difference < 0.065 and d.ci[0] <= d.difference <= d.ci[1]
    assert breaches(d, 0.020)


def test_same_input_same_interval_and_fast() -> None:
    rng = np.random.default_rng(2)
    c, t = arm(rng, 2000), arm(rng, 2000)
    start = time.perf_counter()
    first = quantile_difference(LE, c, t)
    elapsed = time.perf_counter() - start
    assert first == quantile_difference(LE, c.copy(), t.copy())
    assert first is not None and first.resamples == 2000
    assert elapsed < 0.5  # ~5 ms here; generous for a loaded CI machine


def test_no_request_in_an_arm_is_none_and_bad_input_raises() -> None:
    rng = np.random.default_rng(3)
    c = arm(rng, 500)
    assert quantile_difference(LE, c, np.zeros((64, BINS))) is None
    with pytest.raises(ValueError, match="le"):
        quantile_difference([0.01, 0.005], c, c)
    with pytest.raises(ValueError, match="treatment"):
        quantile_difference(LE, c, c[:, :3])
    with pytest.raises(ValueError, match="control"):
        quantile_difference(LE, -c, c)


def test_a_a_false_alarms_over_repeated_looks_stay_rare() -> None:
    """200 A/A experiments, 20 looks each over a growing window (100 requests per arm per
    look, so the first looks are small), at the decision's level (one-sided 0.025) and a
    20 ms margin: the share of experiments ever flagged stays well under 5 %."""
    rng = np.random.default_rng(2024)
    experiments, looks, per_look = 200, 20, 100
    flagged = 0
    for _ in range(experiments):
        c = np.zeros((64, BINS))
        t = np.zeros((64, BINS))
        for _ in range(looks):
            c += arm(rng, per_look)
            t += arm(rng, per_look)
            d = quantile_difference(LE, c, t, alpha_one_sided=0.025, resamples=500)
            if d is not None and breaches(d, 0.020):
                flagged += 1
                break
    assert flagged / experiments <= 0.05, flagged


# --- the guardrail in the analysis ---------------------------------------------------


def variant(rng: np.random.Generator, *, shift: float = 0.0, n: int = 3000) -> dict[str, Any]:
    imps = rng.poisson(500, 64)
    return {
        "exposures": 20_000,
        "requests": float(n),
        "errors": 0.0,
        "latency_p95_ms": 30.0,
        "buckets": {
            "impressions": imps.tolist(),
            "clicks": rng.binomial(imps, 0.05).tolist(),
        },
        "latency_histogram": {"le": LE, "counts": arm(rng, n, shift=shift).tolist()},
    }


def payload(shift: float, seed: int = 0, **extra: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "weights": {"control": 50, "treatment": 50},
        "secondary_metrics": [],
        "guardrails": [
            {"metric": "error_rate", "max": 0.01},
            {"metric": "latency_p95_ms", "maxIncreaseMs": 20},
        ],
        "variants": {"control": variant(rng), "treatment": variant(rng, shift=shift)},
        **extra,
    }


def latency_guardrail(record: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        g for g in record["guardrails"] if g["kind"] == "latency_non_inferiority"
    ]
    assert len(found) == 1, found
    return found[0]


def test_slow_treatment_rolls_back_naming_the_latency_guardrail() -> None:
    out = analyze(payload(0.05))
    assert (out["decision"], out["reason_code"]) == ("Rollback", "GuardrailBreached")
    assert "latency non-inferiority" in out["reason"] and "> +20 ms" in out["reason"]
    g = latency_guardrail(out)
    assert g["ok"] is False and g["variant"] == "treatment" and g["limit"] == 20
    assert 35 < g["value"] < 65 and 20 < g["ci_low"] <= g["value"] <= g["ci_high"]


def test_same_latency_passes_and_a_small_increase_within_the_margin_too() -> None:
    for shift in (0.0, 0.005):
        out = analyze(payload(shift))
        g = latency_guardrail(out)
        assert g["ok"] is True and out["decision"] != "Rollback", (shift, g)


def test_missing_latency_histogram_holds_never_rolls_back() -> None:
    p = payload(0.2)
    del p["variants"]["treatment"]["latency_histogram"]
    out = analyze(p)
    assert (out["decision"], out["reason_code"]) == ("Hold", "MissingData")
    assert "no latency histogram for treatment" in out["reason"]
    assert latency_guardrail(out)["ok"] is None
    # without the guardrail configured, a missing histogram changes nothing
    p["guardrails"] = [{"metric": "error_rate", "max": 0.01}]
    assert analyze(p)["reason_code"] != "MissingData"


def test_empty_latency_histogram_holds() -> None:
    p = payload(0.0)
    p["variants"]["control"]["latency_histogram"]["counts"] = [[0.0] * BINS] * 64
    out = analyze(p)
    assert (out["decision"], out["reason_code"]) == ("Hold", "MissingData")


def test_absolute_and_increase_entries_together() -> None:
    p = payload(0.0)
    p["guardrails"].append({"metric": "latency_p95_ms", "max": 100})
    m = parse_input(p)
    assert m.guardrails == {"error_rate": 0.01, "latency_p95_ms": 100}
    assert m.latency_max_increase_ms == 20
    kinds = {g["kind"] for g in analyze(p)["guardrails"] if g["metric"] == "latency_p95_ms"}
    assert kinds == {"absolute", "latency_non_inferiority"}


def test_operator_payload_passes_the_entry_through() -> None:
    p = payload(0.05)
    built = analysis_input(
        control="control",
        weights=p["weights"],
        variants=p["variants"],
        guardrails=p["guardrails"],
        secondary_metrics=[],
    )
    assert analyze(built)["reason_code"] == "GuardrailBreached"


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"metric": "error_rate", "maxIncreaseMs": 20}, "guardrails[2].metric"),
        ({"metric": "ctr", "maxIncreaseMs": 20}, "guardrails[2].metric"),
        ({"metric": "latency_p95_ms", "maxIncreaseMs": -1}, "guardrails[2].maxIncreaseMs"),
        ({"metric": "latency_p95_ms", "maxIncreaseMs": "20ms"}, "guardrails[2].maxIncreaseMs"),
        ({"metric": "latency_p95_ms", "maxIncreaseMs": True}, "guardrails[2].maxIncreaseMs"),
        (
            {"metric": "latency_p95_ms", "maxIncreaseMs": float("inf")},
            "guardrails[2].maxIncreaseMs",
        ),
        ({"metric": "latency_p95_ms", "maxIncreaseMs": 20, "max": 100}, "guardrails[2]"),
        (
            {"metric": "latency_p95_ms", "maxIncreaseMs": 20, "nonInferiorityMargin": 0.1},
            "guardrails[2]",
        ),
    ],
)
def test_bad_max_increase_entries_name_the_field(entry: dict[str, Any], field: str) -> None:
    p = payload(0.0)
    p["guardrails"].append(entry)
    with pytest.raises(InputError) as err:
        parse_input(p)
    assert err.value.field == field and "maxIncreaseMs" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda h: h.update(le=[0.01, 0.005]), "variants.treatment.latency_histogram.le"),
        (lambda h: h.update(le=[0.0, 0.01]), "variants.treatment.latency_histogram.le[0]"),
        (
            lambda h: h["counts"].__setitem__(5, [1.0]),
            "variants.treatment.latency_histogram.counts[5]",
        ),
        (lambda h: h.update(le=[x * 2 for x in LE]), "variants.treatment.latency_histogram.le"),
        (lambda h: h.update(counts=[[1.0] * BINS]), "variants.treatment.latency_histogram.counts"),
    ],
)
def test_bad_latency_histograms_name_the_field(mutate: Any, field: str) -> None:
    p = payload(0.0)
    mutate(p["variants"]["treatment"]["latency_histogram"])
    with pytest.raises(InputError) as err:
        parse_input(p)
    assert err.value.field == field, str(err.value)
