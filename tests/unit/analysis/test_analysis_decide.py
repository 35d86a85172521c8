"""The decision rules of rankexp.analysis.analyze, one scenario each."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from rankexp.analysis import DECISIONS, AnalysisInput, InputError, analyze

EDGES = [i / 10 for i in range(11)]


def variant(
    ctr: float = 0.05,
    *,
    seed: int = 0,
    engagement: float = 0.02,
    dwell: float = 14.0,
    exposures: float | None = 50_000,
    latency: float = 20.0,
    score: tuple[float, float] = (2.0, 5.0),
) -> dict[str, Any]:
    """One arm: 64 buckets of about 2,000 impressions, deterministic by seed."""
    rng = np.random.default_rng(seed)
    imps = rng.poisson(2000, 64)
    clicks = rng.binomial(imps, ctr)
    engagements = rng.binomial(imps, engagement)
    events = np.maximum(clicks, 1)
    counts, _ = np.histogram(rng.beta(*score, 20_000), EDGES)
    return {
        "exposures": exposures,
        "requests": 50_000,
        "errors": 10,
        "latency_p95_ms": latency,
        "buckets": {
            "impressions": imps.tolist(),
            "clicks": clicks.tolist(),
            "engagements": engagements.tolist(),
            "dwell_events": events.tolist(),
            "dwell_seconds": (events * dwell).tolist(),
        },
        "histograms": {"score": {"edges": EDGES, "counts": counts.tolist()}},
    }


def payload(**variants: dict[str, Any]) -> dict[str, Any]:
    variants = variants or {"control": variant(), "treatment": variant()}
    share = 100 / len(variants)
    return {
        "control": "control",
        "method": "sequential",
        "alpha": 0.05,
        "primary_metric": "ctr",
        "weights": dict.fromkeys(variants, share),
        "guardrails": {"latency_p95_ms": 100, "error_rate": 0.01},
        "min_samples_per_variant": 1000,
        "srm_p_value": 0.001,
        "drift": {"psi": 0.2, "ks_p_value": 0.05},
        "variants": variants,
    }


def test_identical_arms_continue() -> None:
    out = analyze(payload())
    assert (out["decision"], out["winner"]) == ("Continue", None)
    t = out["metrics"]["ctr"]["treatment"]
    assert t["lift"] == 0 and t["p_value"] == 1.0 and t["ci"][0] < 0 < t["ci"][1]
    assert out["srm"]["ok"] is True
    assert out["drift"]["score"]["treatment"]["psi"] == 0.0
    assert [g["ok"] for g in out["guardrails"]] == [True, True]


@pytest.mark.parametrize("method", ["sequential", "fixed"])
def test_clear_win_promotes(method: str) -> None:
    p = payload(control=variant(0.05), treatment=variant(0.06, seed=1))
    p["method"] = method
    out = analyze(p)
    assert (out["decision"], out["winner"], out["reason_code"]) == (
        "Promote",
        "treatment",
        "SignificantWin",
    )
    t = out["metrics"]["ctr"]["treatment"]
    assert t["significant"] and t["p_value"] < 0.05 and t["ci"][0] > 0
    assert t["test"] == ("msprt" if method == "sequential" else "z")
    assert t["relative_lift"] == pytest.approx(
        t["lift"] / out["metrics"]["ctr"]["control"]["estimate"]
    )
    assert out["metrics"]["dwell_time"]["treatment"]["test"] == (
        "msprt" if method == "sequential" else "welch-t"
    )


def test_clear_loss_rolls_back() -> None:
    out = analyze(payload(control=variant(0.06), treatment=variant(0.05, seed=1)))
    assert (out["decision"], out["reason_code"], out["winner"]) == (
        "Rollback",
        "SignificantLoss",
        None,
    )


def test_secondary_loss_rolls_back_despite_primary_win() -> None:
    out = analyze(payload(control=variant(0.05), treatment=variant(0.06, seed=1, engagement=0.015)))
    assert out["decision"] == "Rollback"
    assert "engagement_rate" in out["reason"]


def test_guardrail_breach_rolls_back_a_winner() -> None:
    out = analyze(payload(control=variant(0.05), treatment=variant(0.06, seed=1, latency=180)))
    assert (out["decision"], out["reason_code"]) == ("Rollback", "GuardrailBreached")
    breach = [g for g in out["guardrails"] if not g["ok"]]
    assert breach == [
        {
            "metric": "latency_p95_ms",
            "variant": "treatment",
            "value": 180.0,
            "limit": 100.0,
            "ok": False,
            "kind": "absolute",
        }
    ]


def test_guardrails_in_crd_list_form() -> None:
    p = payload(control=variant(0.05), treatment=variant(0.05, latency=180))
    p["guardrails"] = [{"metric": "latency_p95_ms", "max": 100}]
    assert analyze(p)["decision"] == "Rollback"


def test_sample_ratio_mismatch_holds_even_a_winner() -> None:
    out = analyze(
        payload(control=variant(0.05, exposures=48_000), treatment=variant(0.06, exposures=52_000))
    )
    assert (out["decision"], out["reason_code"]) == ("Hold", "SampleRatioMismatch")
    assert out["srm"]["p_value"] < 0.001 and out["srm"]["ok"] is False


def test_too_few_samples_hold() -> None:
    out = analyze(payload(control=variant(exposures=900), treatment=variant(0.06, exposures=900)))
    assert (out["decision"], out["reason_code"]) == ("Hold", "TooFewSamples")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda t: t.update(exposures=None), id="no-exposures"),
        pytest.param(lambda t: t["buckets"].pop("clicks"), id="no-clicks"),
        pytest.param(lambda t: t["buckets"].update(impressions=[0] * 64), id="no-impressions"),
        pytest.param(lambda t: t.pop("latency_p95_ms"), id="no-guardrail-value"),
        pytest.param(lambda t: t.pop("histograms"), id="no-histogram"),
    ],
)
def test_missing_data_never_promotes_or_rolls_back(mutate: Any) -> None:
    for ctr in (0.03, 0.08):  # a clear loss, then a clear win
        p = payload(control=variant(0.05), treatment=variant(ctr, seed=1, latency=500))
        mutate(p["variants"]["treatment"])
        out = analyze(p)
        assert (out["decision"], out["reason_code"]) == ("Hold", "MissingData"), out["reason"]


def test_drift_blocks_promotion_and_can_roll_back() -> None:
    p = payload(control=variant(0.05), treatment=variant(0.06, seed=1, score=(5.0, 2.0)))
    out = analyze(p)
    d = out["drift"]["score"]["treatment"]
    assert d["psi"] > 0.2 and d["ks_p_value"] < 0.05 and d["ok"] is False
    assert (out["decision"], out["reason_code"]) == ("Continue", "DriftDetected")
    p["drift"]["action"] = "rollback"
    assert analyze(p)["decision"] == "Rollback"


def test_max_duration_makes_a_null_result_inconclusive_but_keeps_a_win() -> None:
    p = payload()
    p.update(elapsed_seconds=86_400, max_duration_seconds=86_400)
    out = analyze(p)
    assert (out["decision"], out["reason_code"]) == ("Inconclusive", "MaxDurationReached")
    p["elapsed_seconds"] = 3600
    assert analyze(p)["decision"] == "Continue"
    win = payload(control=variant(0.05), treatment=variant(0.06, seed=1))
    win.update(elapsed_seconds=90_000, max_duration_seconds=86_400)
    assert analyze(win)["decision"] == "Promote"


def test_abn_picks_the_largest_significant_winner_with_holm() -> None:
    p = payload(
        control=variant(0.05),
        small=variant(0.056, seed=1),
        big=variant(0.065, seed=2),
        null=variant(0.05, seed=3),
    )
    p["weights"] = {"control": 25, "small": 25, "big": 25, "null": 25}
    out = analyze(p)
    assert (out["decision"], out["winner"]) == ("Promote", "big")
    ctr = out["metrics"]["ctr"]
    raw = sorted((ctr[v]["p_value"], ctr[v]["p_value_adjusted"]) for v in ("small", "big", "null"))
    assert raw[0][1] == pytest.approx(min(1.0, 3 * raw[0][0]))  # smallest p times m
    assert all(adj >= p_raw for p_raw, adj in raw)


def test_dwell_time_as_primary_metric() -> None:
    p = payload(control=variant(dwell=14.0), treatment=variant(dwell=15.0, seed=1))
    p["primary_metric"] = "dwell_time"
    out = analyze(p)
    assert out["metrics"]["dwell_time"]["treatment"]["lift"] > 0
    assert set(out["metrics"]) == {"dwell_time", "ctr", "engagement_rate"}


def test_accepts_a_model_and_returns_json_ready_output() -> None:
    model = AnalysisInput.model_validate(payload())
    out = analyze(model)
    assert out["decision"] in DECISIONS
    json.dumps(out, allow_nan=False)


def test_bad_input_names_the_field() -> None:
    p = copy.deepcopy(payload())
    p["variants"]["treatment"]["buckets"]["clicks"][3] = -1
    with pytest.raises(InputError) as err:
        analyze(p)
    assert err.value.field == "variants.treatment.buckets.clicks[3]"


def test_srm_can_be_checked_on_other_exposures_than_the_sample_counts() -> None:
    """The operator checks the split only on settled traffic (srm_exposures); the
    minimum-sample rule still counts every exposure."""
    body = payload(control=variant(seed=1), treatment=variant(seed=2))
    body["srm_exposures"] = {"control": 5000.0, "treatment": 5000.0}
    assert analyze(body)["srm"]["ok"] is True
    body["srm_exposures"] = {"control": 6000.0, "treatment": 4000.0}
    out = analyze(body)
    assert out["srm"]["ok"] is False and out["reason_code"] == "SampleRatioMismatch"
    assert out["srm"]["observed"] == {"control": 6000, "treatment": 4000}
    body["srm_exposures"] = {"control": 0.0, "treatment": 0.0}
    out = analyze(body)
    assert out["decision"] == "Hold" and out["reason_code"] == "MissingData"
