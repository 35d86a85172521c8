"""`rankexp analyze`: the CLI contract (exit codes, messages, the example)."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rankexp.cli.commands import main

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_IN = ROOT / "examples" / "analyze-input.json"
EXAMPLE_OUT = ROOT / "examples" / "analyze-output.json"


def example() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE_IN.read_text())
    return data


def assert_close(got: Any, want: Any, where: str = "") -> None:
    """Equal structure, floats to 1e-9 relative (other BLAS builds may differ)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, rel=1e-9), where
    else:
        assert got == want, where


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_example_file_gives_the_documented_record(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, ["analyze", str(EXAMPLE_IN)])
    assert (code, err) == (0, "")
    record = json.loads(out)
    assert_close(record, json.loads(EXAMPLE_OUT.read_text()))
    assert record["decision"] in {"Hold", "Continue", "Promote", "Rollback", "Inconclusive"}
    ctr = record["metrics"]["ctr"]
    assert set(ctr["control"]) >= {"estimate"}
    assert set(ctr["treatment"]) >= {"estimate", "lift", "relative_lift", "ci", "p_value", "test"}
    assert set(record["drift"]["score"]["treatment"]) >= {"psi", "ks_statistic", "ks_p_value"}
    assert isinstance(record["srm"]["p_value"], float)
    assert {g["metric"] for g in record["guardrails"]} == {"latency_p95_ms", "error_rate"}
    assert all(
        set(g) == {"metric", "variant", "value", "limit", "ok", "kind"} and g["kind"] == "absolute"
        for g in record["guardrails"]
    )


def test_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(EXAMPLE_IN.read_text()))
    code, out, _ = run(capsys, ["analyze", "-", "--compact"])
    assert code == 0 and out.count("\n") == 1
    assert json.loads(out)["winner"] == json.loads(EXAMPLE_OUT.read_text())["winner"]


def _drop_treatment(p: dict[str, Any]) -> None:
    del p["variants"]["treatment"]


def _set(path: str, value: Any) -> Any:
    def mutate(p: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = p
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


BAD = [
    (_drop_treatment, "variants.treatment: missing"),
    (_set("variants.treatment.buckets.clicks.3", -1), "variants.treatment.buckets.clicks[3]"),
    (_set("variants.control.exposures", "many"), "variants.control.exposures"),
    (
        _set("variants.control.buckets.impressions.0", "12"),
        "variants.control.buckets.impressions[0]",
    ),
    (
        _set("variants.treatment.buckets.impressions", [1] * 63),
        "variants.treatment.buckets.impressions",
    ),
    (_set("weights", {"control": 50, "treatment": 40}), "weights: must sum to 100"),
    (_set("weights", {"control": 50, "treatment": 50, "other": 0}), "variants.other: missing"),
    (_set("control", "baseline"), "control:"),
    (_set("method", "bayesian"), "method"),
    (_set("alpha", 1.5), "alpha"),
    (_set("variants.treatment.histograms.score.edges", [0, 1]), "histograms.score.edges"),
    (_set("variants.treatment.errors", 1e9), "variants.treatment.errors"),
    (_set("guardrails", {"cpu": 3}), "guardrails.cpu"),
    (
        _set("guardrails", [{"metric": "ctr", "nonInferiorityMargin": 2}]),
        "guardrails[0].nonInferiorityMargin",
    ),
    (_set("max_duration", "1d"), "max_duration: '1d' is not a duration"),
    (_set("elapsed", "6 hours"), "elapsed:"),
]


@pytest.mark.parametrize(("mutate", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_input_exits_2_naming_the_field(
    mutate: Any, field: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = copy.deepcopy(example())
    mutate(p)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(p))
    code, out, err = run(capsys, ["analyze", str(path)])
    assert code == 2 and out == ""
    assert field in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "invalid JSON at line 1"), ("[1, 2]", "must be a JSON object")],
)
def test_unreadable_input_exits_2(
    text: str, message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "in.json"
    path.write_text(text)
    code, _, err = run(capsys, ["analyze", str(path)])
    assert code == 2 and message in err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, ["analyze", str(tmp_path / "nope.json")])
    assert code == 2 and "cannot read" in err


def test_console_script_exit_code_and_no_traceback() -> None:
    script = Path(sys.executable).parent / "rankexp"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    bad = json.dumps({"weights": {"control": 100}, "variants": {"control": {}}})
    proc = subprocess.run(
        [str(script), "analyze", "-"], input=bad, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "variants" in proc.stderr and "Traceback" not in proc.stderr
    ok = subprocess.run(
        [str(script), "analyze", str(EXAMPLE_IN)], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["decision"]
