import io
import json
from contextlib import redirect_stdout
from pathlib import Path

from ranker.cli import main


def test_v2_beats_v1_on_auc_ndcg_and_expected_ctr(model_dirs: dict[str, Path]) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["evaluate", "--json", str(model_dirs["v1"]), str(model_dirs["v2"])])
    assert rc == 0
    v1, v2 = json.loads(out.getvalue())
    assert (v1["version"], v2["version"]) == ("v1", "v2")
    for key in ("auc", "ndcg_at_10", "expected_ctr_at_10"):
        assert v2[key] > v1[key], key
    assert 0.5 < v1["auc"] < v2["auc"] < 1


def test_model_directory_records_metadata(model_dirs: dict[str, Path]) -> None:
    meta = json.loads((model_dirs["v2"] / "metadata.json").read_text())
    schema = json.loads((model_dirs["v2"] / "feature_schema.json").read_text())
    assert len(meta["training_data_sha256"]) == 64
    assert set(meta["offline_metrics"]) == {"auc", "ndcg_at_10"}
    assert schema["user_dim"] == len(schema["user_features"])
    assert (model_dirs["v2"] / "model.pt").stat().st_size > 0


def test_evaluate_reports_a_bad_directory(tmp_path: Path) -> None:
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
