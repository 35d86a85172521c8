"""Decision record -> status evidence (rankexp.experiment.evidence) -> `rankexp status` text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rankexp import api
from rankexp.cli import status as statusview
from rankexp.cli.commands import main
from rankexp.experiment import evidence

ROOT = Path(__file__).resolve().parents[3]
RECORD: dict[str, Any] = json.loads((ROOT / "examples" / "analyze-output.json").read_text())
INPUT: dict[str, Any] = json.loads((ROOT / "examples" / "analyze-input.json").read_text())


def status_analysis() -> dict[str, Any]:
    return evidence.analysis_status(
        RECORD,
        time="2026-01-01T00:10:00Z",
        window=("2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z"),
        expected_share={"control": 0.5, "treatment": 0.5},
    )


def test_evidence_keeps_the_records_numbers() -> None:
    out = status_analysis()
    ctr = RECORD["metrics"]["ctr"]["treatment"]
    assert out["decision"] == RECORD["decision"] and out["winner"] == RECORD["winner"]
    assert out["lift"] == ctr["relative_lift"] and out["pValue"] == ctr["p_value_adjusted"]
    row = next(c for c in out["comparisons"] if (c["metric"], c["variant"]) == ("ctr", "treatment"))
    assert (row["ciLow"], row["ciHigh"]) == tuple(ctr["ci"])
    assert row["significant"] is ctr["significant"]
    assert out["srmPValue"] == RECORD["srm"]["p_value"]
    assert len(out["guardrails"]) == len(RECORD["guardrails"])
    assert out["requiredSamples"]["requiredPerVariant"] == RECORD["power"]["required_per_variant"]
    assert {v["name"] for v in out["variants"]} == {"control", "treatment"}
    # the counts the sample-ratio check tested, next to its expectation
    tested = {v["name"]: v["srmExposures"] for v in out["variants"]}
    assert tested == {k: float(x) for k, x in RECORD["srm"]["observed"].items()}


def test_evidence_fits_the_crd_status_schema() -> None:
    status = {"phase": "Running", "analysis": status_analysis()}
    api.ExperimentStatus.model_validate(status)


def test_headline_picks_the_winner_or_the_best_treatment() -> None:
    assert evidence.headline(RECORD)[0] == "treatment"
    no_winner = {**RECORD, "winner": None}
    assert evidence.headline(no_winner)[0] == "treatment"
    assert evidence.headline({"metrics": {}}) == (None, None, None)


def test_variant_observations() -> None:
    out = evidence.variant_observations(INPUT["variants"], RECORD)
    c = INPUT["variants"]["control"]
    assert out["control"]["impressions"] == sum(c["buckets"]["impressions"])
    assert out["control"]["ctr"] == RECORD["metrics"]["ctr"]["control"]["estimate"]
    assert out["control"]["errorRate"] == pytest.approx(c["errors"] / c["requests"])


def test_status_view_prints_traffic_and_evidence() -> None:
    obj = {
        "metadata": {"name": "feed", "namespace": "ns"},
        "spec": {
            "control": "control",
            "variants": [{"name": "control", "replicas": 1}, {"name": "treatment", "replicas": 2}],
        },
        "status": {
            "phase": "Running",
            "startedAt": "2026-01-01T00:00:00Z",
            "traffic": [{"variant": "control", "weight": 75},
                        {"variant": "treatment", "weight": 25}],
            "lastAction": {"seq": 2, "type": "Ramp", "time": "2026-01-01T00:05:00Z", "step": 1,
                           "stages": 3, "reason": "stage 2/3"},
            "variants": [{"name": "control", "readyReplicas": 1, "ctr": 0.05},
                         {"name": "treatment", "readyReplicas": 2, "ctr": 0.06}],
            "conditions": [{"type": "Concluded", "status": "False", "reason": "Ramping",
                            "message": "stage 2/3 running"}],
            "analysis": status_analysis(),
        },
    }  # fmt: skip
    text = statusview.render(obj)
    assert "Experiment ns/feed" in text and "Phase: Running" in text
    assert "#2 Ramp" in text and "(stage 2/3)" in text
    assert "control (control)  75" in text.replace("   ", "  ")
    assert "Concluded=False Ramping" in text
    assert "Sample-ratio check p-value" in text and "Required samples" in text
    assert "latency_p95_ms" in text and "score" in text


def test_status_view_without_analysis() -> None:
    text = statusview.render({"metadata": {"name": "x"}, "status": {"phase": "Pending"}})
    assert "No analysis yet." in text


@pytest.mark.parametrize("command", [["status", "x"], ["promote", "x", "treatment"]])
def test_cli_without_a_cluster_says_why(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-kubeconfig"
    assert main([*command, "--kubeconfig", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rankexp: no usable kubeconfig")
