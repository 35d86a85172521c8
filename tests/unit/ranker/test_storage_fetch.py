"""ranker.storage.fetch and `ranker fetch-model` on local sources: the model lands whole and
verified or not at all; the size limit stops a fetch before the disk fills; the CLI prints
one JSON line or one error line, never a credential."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from ranker.cli import main
from ranker.model.artifacts import load_snapshot
from ranker.storage.digest import digest_dir
from ranker.storage.errors import ModelDigestMismatch, ModelNotFound, ModelTooLarge
from ranker.storage.fetch import fetch_model
from ranker.storage.retry import RetryPolicy
from ranker.storage.staging import ByteBudget

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A small model-shaped directory (the loader is exercised on models/v2 below)."""
    root = tmp_path / "src" / "v9"
    (root / "sub").mkdir(parents=True)
    (root / "metadata.json").write_text('{"version": "v9"}')
    (root / "weights.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (root / "sub" / "extra.txt").write_text("x")
    return root


def _siblings(target: Path) -> set[str]:
    """What is next to the target besides the lock file: leftovers would show here."""
    return {p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")}


def test_a_local_directory_is_copied_verified_and_renamed_into_place(
    model: Path, tmp_path: Path
) -> None:
    target = tmp_path / "volume" / "model"
    want = digest_dir(model)
    result = fetch_model(f"file://{model}", target, sha256=want.digest)
    assert (result.digest, result.files, result.bytes) == (want.digest, 3, want.bytes)
    assert digest_dir(target) == want
    assert _siblings(target) == {"model"}


def test_the_checkouts_model_fetched_from_a_tar_gz_loads(tmp_path: Path) -> None:
    src = REPO / "models" / "v2"
    if not (src / "metadata.json").is_file():
        pytest.skip("models/v2 is built by `make models`")
    archive = tmp_path / "v2.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=".")
    target = tmp_path / "volume" / "model"
    result = fetch_model(str(archive), target, sha256=digest_dir(src).digest)
    assert result.digest == digest_dir(src).digest
    assert load_snapshot(str(target)).version == "v2"


def test_over_the_size_limit_the_fetch_stops_and_leaves_nothing(
    model: Path, tmp_path: Path
) -> None:
    target = tmp_path / "volume" / "model"
    with pytest.raises(ModelTooLarge, match="limit of 500000 bytes") as caught:
        fetch_model(str(model), target, max_bytes=500_000)
    assert "stopped at" in str(caught.value)
    assert not target.exists()
    assert _siblings(target) == set()


def test_a_digest_mismatch_leaves_the_previous_model_in_place(model: Path, tmp_path: Path) -> None:
    target = tmp_path / "volume" / "model"
    first = fetch_model(str(model), target)
    (model / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(ModelDigestMismatch, match=first.digest.removeprefix("sha256:")[:12]):
        fetch_model(str(model), target, sha256=first.digest)
    assert digest_dir(target).digest == first.digest  # untouched
    assert _siblings(target) == {"model"}


def test_a_new_model_replaces_the_old_one_and_leftovers_of_a_killed_fetch_go(
    model: Path, tmp_path: Path
) -> None:
    target = tmp_path / "volume" / "model"
    fetch_model(str(model), target)
    (target.parent / ".model.partial-dead").mkdir()  # what a SIGKILLed fetch leaves
    (target.parent / ".model.partial-dead" / "half.bin").write_bytes(b"x")
    (target.parent / ".model.old-dead").mkdir()
    (model / "weights.bin").write_bytes(b"v10")
    result = fetch_model(str(model), target)
    assert (target / "weights.bin").read_bytes() == b"v10"
    assert result.digest == digest_dir(target).digest
    assert _siblings(target) == {"model"}


def test_a_missing_source_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        fetch_model(str(tmp_path / "nope"), tmp_path / "model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFound, match="no files"):
        fetch_model(str(empty), tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_a_mount_point_is_refused_as_a_target(model: Path) -> None:
    with pytest.raises(ValueError, match="mount point"):
        fetch_model(str(model), Path("/proc"))


def test_declared_sizes_are_checked_against_the_limit_and_the_free_space() -> None:
    ByteBudget(100, "x", free=1000).check_declared(100)
    with pytest.raises(ModelTooLarge, match="over the limit of 100 bytes"):
        ByteBudget(100, "x", free=1000).check_declared(101)
    with pytest.raises(ModelTooLarge, match="1000 bytes free"):
        ByteBudget(None, "x", free=1000).check_declared(5000)


def test_the_cli_prints_one_json_line(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "volume" / "model"
    rc = main(["fetch-model", f"file://{model}", str(target), "--max-bytes", "2Mi"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(out) == 1
    line = json.loads(out[0])
    assert set(line) == {"uri", "digest", "bytes", "files", "seconds"}
    assert (line["uri"], line["digest"]) == (f"file://{model}", digest_dir(target).digest)


def test_the_cli_names_the_error_class_and_never_the_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "HTTPS_HEADERS").write_text('{"Authorization": "Bearer tok-s3cr3t"}')
    # nothing listens on port 1: a real refused connection, and no retries to wait for
    uri = "https://user:hunter2@127.0.0.1:1/m.tar.gz?sig=abc"
    rc = main(["fetch-model", uri, str(tmp_path / "model"), "--credentials-dir", str(creds),
               "--retries", "0"])  # fmt: skip
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 1 and captured.out == ""
    assert err[-1].startswith("ranker fetch-model: ModelRegistryUnavailable: ")
    assert "Connection refused" in err[-1]
    for secret in ("hunter2", "tok-s3cr3t", "sig=abc"):
        assert secret not in captured.err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("value", ["0", "-1", "2Gb", "lots"])
def test_the_cli_refuses_a_size_that_is_not_one(value: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["fetch-model", "s3://b/p/", str(tmp_path / "m"), "--max-bytes", value])
    assert caught.value.code == 2


def test_retry_policy_rejects_negative_settings() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)
