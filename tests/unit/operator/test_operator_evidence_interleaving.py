"""An interleaving decision record -> status evidence (rankexp.experiment.evidence)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rankexp import api
from rankexp.analysis import analyze
from rankexp.experiment import evidence


def record(p_control: float = 0.3, p_treatment: float = 0.5) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    counts = rng.multinomial(25, [p_control, p_treatment, 1 - p_control - p_treatment], size=64)
    payload = {
        "mode": "interleaving",
        "outcomes": {
            "control": counts[:, 0].tolist(),
            "treatment": counts[:, 1].tolist(),
            "tie": counts[:, 2].tolist(),
        },
        "clicking_users": 900,
        "guardrails": [{"metric": "latency_p95_ms", "max": 250}],
        "variants": {"treatment": {"latency_p95_ms": 50}},
    }
    return analyze(payload)


def status(rec: dict[str, Any]) -> dict[str, Any]:
    return evidence.analysis_status(
        rec,
        time="2026-01-01T00:10:00Z",
        window=("2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z"),
        expected_share={},
    )


def test_interleaving_record_becomes_status_evidence() -> None:
    rec = record()
    out = status(rec)
    inter = rec["interleaving"]
    assert (out["decision"], out["winner"]) == ("Promote", "treatment")
    assert out["primaryMetric"] == "preference" and out["srmPValue"] is None
    assert out["lift"] == inter["delta"] and out["pValue"] == inter["p_value"]
    assert out["interleaving"] == {
        "delta": inter["delta"],
        "ciLow": inter["ci_low"],
        "ciHigh": inter["ci_high"],
        "pValue": inter["p_value"],
        "winsControl": inter["wins_control"],
        "winsTreatment": inter["wins_treatment"],
        "ties": inter["ties"],
        "clickingUsers": 900,
    }
    row = out["comparisons"][0]
    assert (row["variant"], row["metric"], row["lift"]) == (
        "treatment",
        "preference",
        inter["delta"],
    )
    assert (row["ciLow"], row["ciHigh"]) == (inter["ci_low"], inter["ci_high"])
    assert row["significant"] is True and row["test"] == "msprt"
    assert {v["name"]: v["exposures"] for v in out["variants"]} == {
        "control": 900,
        "treatment": 900,
    }
    assert out["guardrails"][0]["metric"] == "latency_p95_ms"
    assert out["requiredSamples"]["unit"] == "clicking_users"
    assert evidence.headline(rec) == ("treatment", inter["delta"], inter["p_value"])


def test_interleaving_evidence_fits_the_crd_status_schema() -> None:
    analysis = status(record())
    if "interleaving" not in api.AnalysisStatus.model_fields:
        # The CRD field for the interleaving block comes with the router/CRD change;
        # everything else must already fit.
        analysis.pop("interleaving")
    api.ExperimentStatus.model_validate({"phase": "Running", "analysis": analysis})


def test_headline_without_data_is_empty() -> None:
    zeros = {"control": [0] * 64, "treatment": [0] * 64, "tie": [0] * 64}
    rec = analyze({"mode": "interleaving", "outcomes": zeros, "clicking_users": 0})
    assert rec["decision"] == "Hold"
    assert evidence.headline(rec) == (None, None, None)
    assert status(rec)["interleaving"]["delta"] is None


def test_rankexp_status_prints_the_preference_share() -> None:
    from rankexp.cli import status as statusview

    rec = record()
    obj = {"metadata": {"name": "il"}, "spec": {"control": "control", "mode": "interleaving"},
           "status": {"phase": "Running", "analysis": status(rec)}}  # fmt: skip
    text = statusview.render(obj)
    inter = rec["interleaving"]
    line = next(x for x in text.splitlines() if x.startswith("Interleaving:"))
    assert f"preference share {inter['delta']:.3g} [" in line
    assert f"treatment {inter['wins_treatment']}" in line and "clicking users 900" in line
