"""Interleaving analysis: the preference share, its test and the decision record."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from rankexp.analysis import InputError, analyze, ratio_estimate
from rankexp.analysis.interleaving import preference, preference_test
from rankexp.cli.commands import main

B = 64
AB_EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "analyze-input.json"


def outcomes(
    p_control: float, p_treatment: float, feeds: int, seed: int = 0
) -> dict[str, list[float]]:
    """Per-bucket outcome counts: ``feeds`` clicked feeds spread over the buckets,
    each won by control / treatment / tied with the given probabilities."""
    rng = np.random.default_rng(seed)
    per_bucket = rng.multinomial(feeds, [1.0 / B] * B)
    p = [p_control, p_treatment, 1.0 - p_control - p_treatment]
    counts = np.array([rng.multinomial(n, p) for n in per_bucket])
    return {
        "control": [float(x) for x in counts[:, 0]],
        "treatment": [float(x) for x in counts[:, 1]],
        "tie": [float(x) for x in counts[:, 2]],
    }


def payload(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "mode": "interleaving",
        "control": "control",
        "treatment": "treatment",
        "outcomes": outcomes(0.4, 0.4, 1600),
        "clicking_users": 812,
        "min_users_with_click": 200,
        "alpha": 0.05,
        "method": "sequential",
        "mde": 0.05,
        "guardrails": [
            {"metric": "latency_p95_ms", "max": 250},
            {"metric": "error_rate", "max": 0.01},
        ],
        "variants": {
            "control": {"latency_p95_ms": 40, "requests": 1000, "errors": 1},
            "treatment": {"latency_p95_ms": 45, "requests": 1000, "errors": 2},
        },
        "elapsed_seconds": 600,
        "max_duration_seconds": 86400,
        "experiment": "demo",
    }  # fmt: skip
    base.update(over)
    return base


AB_KEYS = {
    "decision", "reason_code", "reason", "winner", "control", "method", "alpha",
    "primary_metric", "secondary_metrics", "samples", "metrics", "srm", "drift",
    "guardrails", "power",
}  # fmt: skip
INTERLEAVING_KEYS = {
    "delta", "ci_low", "ci_high", "p_value", "wins_control", "wins_treatment", "ties",
    "clicking_users",
}  # fmt: skip


def test_record_has_the_ab_keys_plus_interleaving() -> None:
    ab = json.loads(AB_EXAMPLE.read_text())
    out = analyze(payload())
    assert set(out) == set(analyze(ab)) | {"interleaving"} == AB_KEYS | {"interleaving"}
    assert set(out["interleaving"]) >= INTERLEAVING_KEYS
    assert out["primary_metric"] == "preference" and out["secondary_metrics"] == []
    assert out["samples"] == {"control": 812, "treatment": 812}
    assert out["srm"]["applicable"] is False and out["srm"]["p_value"] is None
    assert out["drift"] == {}
    assert {(g["metric"], g["variant"]) for g in out["guardrails"]} == {
        ("latency_p95_ms", "treatment"),
        ("error_rate", "treatment"),
    }
    json.dumps(out, allow_nan=False)


def test_aa_data_gives_no_decision() -> None:
    out = analyze(payload())
    assert (out["decision"], out["reason_code"]) == ("Continue", "NoSignificantDifference")
    assert out["winner"] is None
    inter = out["interleaving"]
    assert inter["ci_low"] < 0 < inter["ci_high"] and inter["p_value"] > 0.05


def test_aa_false_positive_rate_stays_below_alpha_over_repeated_looks() -> None:
    # 200 A/A experiments, 10 looks each on the accumulating counts: the sequential
    # test may be checked at every look.
    hits = 0
    for seed in range(200):
        looks = [outcomes(0.35, 0.35, 300, seed=seed * 100 + i) for i in range(10)]
        total = {k: np.zeros(B) for k in ("control", "treatment", "tie")}
        for look in looks:
            for k in total:
                total[k] += look[k]
            d, v = preference(total["control"], total["treatment"], total["tie"])
            p, _, _ = preference_test(d, v, method="sequential", alpha=0.05, mde=0.05)
            if p <= 0.05:
                hits += 1
                break
    assert hits / 200 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 200)


def test_clear_preference_promotes_the_treatment() -> None:
    out = analyze(payload(outcomes=outcomes(0.3, 0.5, 1600, seed=1)))
    assert (out["decision"], out["reason_code"], out["winner"]) == (
        "Promote",
        "SignificantWin",
        "treatment",
    )
    inter = out["interleaving"]
    assert inter["delta"] > 0.1 and inter["ci_low"] > 0 and inter["p_value"] <= 0.05
    pref = out["metrics"]["preference"]["treatment"]
    assert pref["significant"] is True and pref["lift"] == inter["delta"]
    assert pref["test"] == "msprt"


def test_negative_preference_rolls_back() -> None:
    out = analyze(payload(outcomes=outcomes(0.5, 0.3, 1600, seed=2)))
    assert (out["decision"], out["reason_code"], out["winner"]) == (
        "Rollback",
        "SignificantLoss",
        None,
    )
    assert out["interleaving"]["ci_high"] < 0


def test_too_few_clicking_users_holds() -> None:
    out = analyze(payload(outcomes=outcomes(0.2, 0.7, 1600, seed=3), clicking_users=150))
    assert (out["decision"], out["reason_code"]) == ("Hold", "TooFewSamples")
    assert "min_users_with_click" in out["reason"]


def test_missing_data_holds() -> None:
    zeros = {k: [0.0] * B for k in ("control", "treatment", "tie")}
    out = analyze(payload(outcomes=zeros))
    assert (out["decision"], out["reason_code"]) == ("Hold", "MissingData")
    assert out["interleaving"]["delta"] is None and out["interleaving"]["ci_low"] is None
    json.dumps(out, allow_nan=False)
    no_users = payload(outcomes=outcomes(0.2, 0.7, 1600))
    del no_users["clicking_users"]
    assert analyze(no_users)["reason_code"] == "MissingData"
    no_latency = payload(outcomes=outcomes(0.2, 0.7, 1600))
    del no_latency["variants"]["treatment"]["latency_p95_ms"]
    out = analyze(no_latency)
    assert (out["decision"], out["reason_code"]) == ("Hold", "MissingData")
    assert "latency_p95_ms" in out["reason"]


def test_guardrail_breach_rolls_back_even_with_a_win() -> None:
    p = payload(outcomes=outcomes(0.2, 0.7, 1600))
    p["variants"]["treatment"]["latency_p95_ms"] = 400
    out = analyze(p)
    assert (out["decision"], out["reason_code"]) == ("Rollback", "GuardrailBreached")
    assert "latency_p95_ms" in out["reason"]


def test_max_duration_gives_inconclusive() -> None:
    out = analyze(payload(elapsed="24h", max_duration="24h", elapsed_seconds=None))
    assert (out["decision"], out["reason_code"]) == ("Inconclusive", "MaxDurationReached")
    # A decision stands at max duration.
    out = analyze(payload(outcomes=outcomes(0.3, 0.5, 1600, seed=1), elapsed_seconds=86400))
    assert out["decision"] == "Promote"


def test_preference_is_a_ratio_of_bucket_sums_with_delta_method_variance() -> None:
    o = outcomes(0.3, 0.45, 2000, seed=5)
    c, t, e = (np.array(o[k]) for k in ("control", "treatment", "tie"))
    delta, var = preference(c, t, e)
    assert delta == pytest.approx((t.sum() - c.sum()) / (t.sum() + c.sum() + e.sum()))
    num, den = t - c, t + c + e
    want = B / (B - 1) * np.sum((num - delta * den) ** 2) / den.sum() ** 2
    assert var == pytest.approx(want)
    assert (delta, var) == pytest.approx(tuple(float(x) for x in ratio_estimate(num, den)))


def test_fixed_method_is_the_classical_z_test() -> None:
    p = payload(outcomes=outcomes(0.35, 0.42, 1600, seed=7), method="fixed")
    out = analyze(p)
    inter = out["interleaving"]
    o = p["outcomes"]
    d, v = preference(o["control"], o["treatment"], o["tie"])
    assert inter["delta"] == pytest.approx(d)
    assert inter["p_value"] == pytest.approx(2 * stats.norm.sf(abs(d) / math.sqrt(v)))
    half = stats.norm.isf(0.025) * math.sqrt(v)
    assert (inter["ci_low"], inter["ci_high"]) == pytest.approx((d - half, d + half))
    assert out["metrics"]["preference"]["treatment"]["test"] == "z"


@pytest.mark.parametrize("seed", range(20))
def test_sequential_interval_excludes_zero_exactly_when_significant(seed: int) -> None:
    out = analyze(payload(outcomes=outcomes(0.38, 0.42, 1200, seed=seed)))
    inter = out["interleaving"]
    excludes = inter["ci_low"] > 0 or inter["ci_high"] < 0
    assert excludes == (inter["p_value"] <= 0.05)


def test_team_shares_are_reported_per_variant() -> None:
    p = payload(outcomes=outcomes(0.3, 0.5, 1600, seed=1))
    pref = analyze(p)["metrics"]["preference"]
    o = p["outcomes"]
    total = sum(o["control"]) + sum(o["treatment"]) + sum(o["tie"])
    assert pref["control"]["estimate"] == pytest.approx(sum(o["control"]) / total)
    assert pref["treatment"]["estimate"] == pytest.approx(sum(o["treatment"]) / total)
    assert pref["treatment"]["lift"] == pytest.approx(
        pref["treatment"]["estimate"] - pref["control"]["estimate"]
    )


def test_power_counts_clicking_users() -> None:
    out = analyze(payload())
    power = out["power"]
    assert power["unit"] == "clicking_users" and power["mde"] == 0.05
    assert power["required_per_variant"] > 0
    assert power["observed"] == {"control": 812, "treatment": 812}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p["outcomes"].__setitem__("tie", [0.0] * 63), "outcomes.tie"),
        (lambda p: p["outcomes"]["control"].__setitem__(3, -1.0), "outcomes.control[3]"),
        (lambda p: p["outcomes"].pop("treatment"), "outcomes.treatment"),
        (lambda p: p.pop("outcomes"), "outcomes"),
        (lambda p: p.__setitem__("mode", "bandit"), "mode"),
        (lambda p: p.__setitem__("mode", None), "mode"),
        (lambda p: p.__setitem__("alpha", 1.5), "alpha"),
        (lambda p: p.__setitem__("mde", 0), "mde"),
        (lambda p: p.__setitem__("clicking_users", "many"), "clicking_users"),
        (lambda p: p.__setitem__("treatment", "control"), "treatment"),
        (lambda p: p["variants"].__setitem__("other", {}), "variants.other"),
        (lambda p: p.__setitem__("guardrails", [{"metric": "x_ms", "max": 1}]), "guardrails.x_ms"),
        (
            lambda p: p.__setitem__("guardrails", [{"metric": "ctr", "nonInferiorityMargin": 0.1}]),
            "guardrails[0]",
        ),
        (lambda p: p.__setitem__("max_duration", "1 day"), "max_duration"),
    ],
)
def test_bad_input_names_the_field(change: Any, field: str) -> None:
    p = copy.deepcopy(payload())
    change(p)
    with pytest.raises(InputError) as info:
        analyze(p)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(field)


def test_ab_input_is_unchanged_by_an_explicit_ab_mode() -> None:
    ab = json.loads(AB_EXAMPLE.read_text())
    assert analyze({**ab, "mode": "ab"}) == analyze(ab)


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "interleaving.json"
    path.write_text(json.dumps(payload(outcomes=outcomes(0.3, 0.5, 1600, seed=1))))
    assert main(["analyze", str(path), "--compact"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and len(out.strip().splitlines()) == 1
    record = json.loads(out)
    assert record["decision"] == "Promote" and record["interleaving"]["wins_treatment"] > 0
    assert record == json.loads(json.dumps(analyze(json.loads(path.read_text()))))

    bad = payload()
    bad["outcomes"]["tie"] = [1.0] * 10
    path.write_text(json.dumps(bad))
    assert main(["analyze", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("rankexp analyze: outcomes.tie: must have 64 entries")
