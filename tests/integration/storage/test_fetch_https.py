"""`ranker fetch-model https://...` against a real HTTPS server (python's http.server behind
TLS, certificate from a CA made for the session): the CA from the credentials directory
is trusted, an archive is unpacked and verified; without the CA the fetch fails with a
TLS error that says what to do."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from ranker.model.artifacts import load_snapshot
from ranker.storage.digest import digest_dir

from .conftest import HTTPSServer, error_line, fetch, nothing_left

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def published(https_server: HTTPSServer, model_dirs: dict[str, Path]) -> dict[str, str]:
    """models/v2 as a tar.gz, a zip and a single file on the HTTPS server."""
    src = model_dirs["v2"]
    with tarfile.open(https_server.root / "v2.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="v2")  # under a top directory, as people pack them
    with zipfile.ZipFile(https_server.root / "v2.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.iterdir()):
            zf.write(path, path.name)
    (https_server.root / "metadata.json").write_bytes((src / "metadata.json").read_bytes())
    return {
        "tar": f"{https_server.url}/v2.tar.gz",
        "zip": f"{https_server.url}/v2.zip",
        "file": f"{https_server.url}/metadata.json",
    }


def _ca_dir(https_server: HTTPSServer, where: Path) -> Path:
    where.mkdir(parents=True)
    (where / "ca.crt").write_text(https_server.ca_pem)
    return where


def test_a_tar_gz_over_https_with_a_private_ca_is_fetched_and_verified(
    https_server: HTTPSServer, published: dict[str, str], tmp_path: Path,
    model_dirs: dict[str, Path],
) -> None:  # fmt: skip
    target = tmp_path / "volume" / "model"
    creds = _ca_dir(https_server, tmp_path / "creds")
    want = digest_dir(model_dirs["v2"])
    result = fetch(published["tar"], target, "--credentials-dir", str(creds))
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    # the archive's top directory is part of the paths, so the digest is that of v2/...
    assert line["digest"] == digest_dir(target).digest
    assert (line["files"], line["bytes"]) == (want.files, want.bytes)
    assert digest_dir(target / "v2") == want
    assert load_snapshot(str(target / "v2")).version == "v2"
    # pinned: the same fetch with the digest it reported passes
    again = fetch(published["tar"], target, "--credentials-dir", str(creds),
                  "--sha256", line["digest"])  # fmt: skip
    assert again.returncode == 0, again.stderr


def test_a_zip_and_a_single_file_over_https(
    https_server: HTTPSServer, published: dict[str, str], tmp_path: Path,
    model_dirs: dict[str, Path],
) -> None:  # fmt: skip
    creds = _ca_dir(https_server, tmp_path / "creds")
    want = digest_dir(model_dirs["v2"]).digest
    result = fetch(published["zip"], tmp_path / "z", "--credentials-dir", str(creds),
                   "--sha256", want)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert load_snapshot(str(tmp_path / "z")).version == "v2"
    single = fetch(published["file"], tmp_path / "f", "--credentials-dir", str(creds))
    assert single.returncode == 0, single.stderr
    assert (tmp_path / "f" / "metadata.json").read_bytes() == (
        model_dirs["v2"] / "metadata.json"
    ).read_bytes()


def test_without_the_ca_bundle_the_fetch_fails_with_a_clear_tls_error(
    published: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "volume" / "model"
    empty = tmp_path / "creds"
    empty.mkdir()
    result = fetch(published["tar"], target, "--credentials-dir", str(empty), "--retries", "3")
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("ranker fetch-model: ModelTLSError: ")
    assert "certificate" in line and "ca.crt" in line
    assert "trying again" not in result.stderr  # a certificate does not fix itself
    nothing_left(target)


def test_a_missing_file_over_https_is_model_not_found(
    https_server: HTTPSServer, tmp_path: Path
) -> None:
    creds = _ca_dir(https_server, tmp_path / "creds")
    result = fetch(
        f"{https_server.url}/v404.tar.gz", tmp_path / "m", "--credentials-dir", str(creds)
    )
    assert error_line(result).startswith("ranker fetch-model: ModelNotFound: ")
