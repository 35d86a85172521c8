"""`ranker fetch-model s3://...` against a real S3 server (versitygw on 127.0.0.1): the
model lands whole, verified and loadable; every failure is its named error and leaves
no model behind. No mock of S3 anywhere: faults are real (a wrong key, a missing prefix,
a port where nothing listens, a socket that never answers)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ranker.model.artifacts import load_snapshot
from ranker.model.towers import load_towers
from ranker.storage.digest import digest_dir
from rankexp.local.process import free_ports

from .conftest import BUCKET, PKI, S3Server, error_line, fetch, nothing_left, start_versitygw

pytestmark = pytest.mark.integration


def test_a_model_fetched_from_s3_has_the_source_digest_and_loads(
    s3_server: S3Server, tmp_path: Path, model_dirs: dict[str, Path]
) -> None:
    target = tmp_path / "volume" / "model"
    creds = s3_server.credentials(tmp_path / "creds")
    want = digest_dir(model_dirs["v2"])
    result = fetch(f"s3://{BUCKET}/v2/", target, "--credentials-dir", str(creds),
                   "--sha256", want.digest)  # fmt: skip
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["uri"] == f"s3://{BUCKET}/v2/"
    assert (line["digest"], line["files"], line["bytes"]) == (want.digest, want.files, want.bytes)
    assert digest_dir(target) == want
    snapshot = load_snapshot(str(target))
    towers = load_towers(snapshot, "onnx")
    assert snapshot.version == "v2"
    assert towers.user(snapshot.user_x[:3]).shape[0] == 3
    for secret in ("rankexp-test-secret", "AWS_SECRET"):
        assert secret not in result.stderr + result.stdout


def test_a_wrong_sha256_is_a_digest_mismatch_and_no_model_is_left(
    s3_server: S3Server, tmp_path: Path
) -> None:
    target = tmp_path / "volume" / "model"
    creds = s3_server.credentials(tmp_path / "creds")
    result = fetch(f"s3://{BUCKET}/v2/", target, "--credentials-dir", str(creds),
                   "--sha256", "0" * 64)  # fmt: skip
    assert result.returncode == 1
    assert error_line(result).startswith("ranker fetch-model: ModelDigestMismatch: ")
    nothing_left(target)


def test_a_wrong_secret_key_is_access_denied_and_is_not_printed(
    s3_server: S3Server, tmp_path: Path
) -> None:
    target = tmp_path / "volume" / "model"
    creds = s3_server.credentials(tmp_path / "creds", AWS_SECRET_ACCESS_KEY="not-the-secret-42")
    result = fetch(f"s3://{BUCKET}/v2/", target, "--credentials-dir", str(creds))
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("ranker fetch-model: ModelAccessDenied: ")
    assert "not-the-secret-42" not in result.stderr + result.stdout
    assert "retry" not in result.stderr  # a refusal is final: no retries
    nothing_left(target)


def test_an_unknown_access_key_is_access_denied(s3_server: S3Server, tmp_path: Path) -> None:
    creds = s3_server.credentials(tmp_path / "creds", AWS_ACCESS_KEY_ID="AKIDNOBODY")
    result = fetch(f"s3://{BUCKET}/v2/", tmp_path / "m", "--credentials-dir", str(creds))
    assert error_line(result).startswith("ranker fetch-model: ModelAccessDenied: ")


@pytest.mark.parametrize("uri", [f"s3://{BUCKET}/v404/", "s3://no-such-bucket/v2/"])
def test_a_missing_prefix_or_bucket_is_model_not_found(
    s3_server: S3Server, tmp_path: Path, uri: str
) -> None:
    target = tmp_path / "volume" / "model"
    creds = s3_server.credentials(tmp_path / "creds")
    result = fetch(uri, target, "--credentials-dir", str(creds))
    assert result.returncode == 1
    assert error_line(result).startswith("ranker fetch-model: ModelNotFound: ")
    nothing_left(target)


def test_a_model_over_the_byte_limit_fails_before_downloading(
    s3_server: S3Server, tmp_path: Path
) -> None:
    target = tmp_path / "volume" / "model"
    creds = s3_server.credentials(tmp_path / "creds")
    result = fetch(f"s3://{BUCKET}/v2/", target, "--credentials-dir", str(creds),
                   "--max-bytes", "1Mi")  # fmt: skip
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("ranker fetch-model: ModelTooLarge: ")
    assert "over the limit of 1048576 bytes" in line  # the listing's sizes, not a partial copy
    nothing_left(target)


def test_a_server_down_at_start_is_registry_unavailable_after_the_retries(
    s3_server: S3Server, tmp_path: Path
) -> None:
    (port,) = free_ports(1)  # nothing listens there
    target = tmp_path / "volume" / "model"
    creds = s3_server.credentials(tmp_path / "creds", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    result = fetch(f"s3://{BUCKET}/v2/", target, "--credentials-dir", str(creds),
                   "--retries", "2", "--timeout", "5")  # fmt: skip
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("ranker fetch-model: ModelRegistryUnavailable: ")
    assert "Connection refused" in line and "(3 tries" in line
    assert result.stderr.count("trying again in") == 2
    nothing_left(target)


def test_a_server_that_accepts_and_never_answers_times_out_instead_of_hanging(
    silent_server: str, s3_server: S3Server, tmp_path: Path
) -> None:
    target = tmp_path / "volume" / "model"
    creds = s3_server.credentials(tmp_path / "creds", AWS_ENDPOINT_URL=silent_server)
    start = time.monotonic()
    result = fetch(f"s3://{BUCKET}/v2/", target, "--credentials-dir", str(creds),
                   "--retries", "1", "--timeout", "1", timeout=120)  # fmt: skip
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("ranker fetch-model: ModelFetchTimeout: ")
    assert "no answer within 1 s (2 tries" in line
    # two 1 s reads and one backoff below 0.5 s, plus the CLI's start-up on a busy machine
    assert elapsed < 90
    nothing_left(target)


def test_a_broken_object_is_refetched_whole_on_the_next_run(
    s3_server: S3Server, tmp_path: Path, model_dirs: dict[str, Path]
) -> None:
    """An object replaced on the server (a corrupted upload) changes the digest, so a pinned
    fetch fails; putting the right bytes back makes the same pinned fetch pass."""
    s3_server.put_dir(BUCKET, "v2-copy/", model_dirs["v2"])
    want = digest_dir(model_dirs["v2"]).digest
    creds = s3_server.credentials(tmp_path / "creds")
    target = tmp_path / "volume" / "model"
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"version": "v2", "tampered": true}')
    s3_server.put_file(BUCKET, "v2-copy/metadata.json", corrupt)
    bad = fetch(f"s3://{BUCKET}/v2-copy/", target, "--credentials-dir", str(creds),
                "--sha256", want)  # fmt: skip
    assert error_line(bad).startswith("ranker fetch-model: ModelDigestMismatch: ")
    nothing_left(target)
    s3_server.put_file(BUCKET, "v2-copy/metadata.json", model_dirs["v2"] / "metadata.json")
    good = fetch(f"s3://{BUCKET}/v2-copy/", target, "--credentials-dir", str(creds),
                 "--sha256", want)  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert digest_dir(target).digest == want


@pytest.fixture
def s3_tls_server(
    versitygw_binary: Path, s3_server: S3Server, pki: PKI, tmp_path: Path
) -> Iterator[S3Server]:
    """A second versitygw over the same directory, over https with the session CA's cert."""
    server = start_versitygw(versitygw_binary, s3_server.root, tmp_path,
                             tls=(pki.cert, pki.key, pki.ca_pem))  # fmt: skip
    yield server
    server.process.stop()
    server.http.clear()


def test_s3_over_https_trusts_the_ca_from_the_secret_and_only_that(
    s3_tls_server: S3Server, pki: PKI, tmp_path: Path, model_dirs: dict[str, Path]
) -> None:
    want = digest_dir(model_dirs["v2"]).digest
    creds = s3_tls_server.credentials(tmp_path / "creds")
    (creds / "ca.crt").write_text(pki.ca_pem)
    target = tmp_path / "volume" / "model"
    good = fetch(f"s3://{BUCKET}/v2/", target, "--credentials-dir", str(creds), "--sha256", want)
    assert good.returncode == 0, good.stderr
    assert digest_dir(target).digest == want
    (creds / "ca.crt").unlink()
    bad = fetch(f"s3://{BUCKET}/v2/", tmp_path / "other", "--credentials-dir", str(creds))
    assert error_line(bad).startswith("ranker fetch-model: ModelTLSError: ")
    assert "certificate" in error_line(bad)
