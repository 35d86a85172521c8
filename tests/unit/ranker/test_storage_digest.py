"""ranker.storage.digest: one digest per model directory, from a manifest of (path, size,
sha256); the per-file hash computed while writing equals the one read back. Also SigV4
(ranker.storage.sigv4) against the examples AWS publishes."""

from __future__ import annotations

import hashlib
import io
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ranker.storage.digest import (
    FileEntry,
    HashingWriter,
    digest_dir,
    digest_entries,
    manifest,
    normalize,
    sha256_file,
)
from ranker.storage.sigv4 import sign


def _model(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "metadata.json").write_text('{"version": "v2"}')
    (root / "weights.bin").write_bytes(bytes(range(256)) * 100)
    (root / "sub" / "schema.json").write_text("{}")
    return root


def test_the_digest_is_sha256_over_the_sorted_manifest(tmp_path: Path) -> None:
    root = _model(tmp_path / "m")
    lines = []
    for rel in sorted(["metadata.json", "sub/schema.json", "weights.bin"]):
        data = (root / rel).read_bytes()
        lines.append(f"{rel}\0{len(data)}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    got = digest_dir(root)
    assert got.digest == "sha256:" + hashlib.sha256(b"".join(lines)).hexdigest()
    assert (got.files, got.bytes) == (3, 17 + 25600 + 2)


def test_a_copy_has_the_same_digest_and_any_change_changes_it(tmp_path: Path) -> None:
    root = _model(tmp_path / "m")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "empty-dir").mkdir()  # empty directories do not count
    base = digest_dir(root).digest
    assert digest_dir(copy).digest == base

    (copy / "weights.bin").write_bytes(bytes(range(256)) * 99 + bytes(range(255)) + b"\x01")
    assert digest_dir(copy).digest != base  # same size, one byte differs
    shutil.rmtree(copy)
    shutil.copytree(root, copy)
    (copy / "sub" / "schema.json").rename(copy / "schema.json")
    assert digest_dir(copy).digest != base  # same bytes, another path
    (copy / "schema.json").rename(copy / "sub" / "schema.json")
    (copy / "extra").write_bytes(b"")
    assert digest_dir(copy).digest != base  # one more (empty) file


def test_the_manifest_order_is_by_path_not_by_arrival() -> None:
    a = FileEntry("b/x", 1, "0" * 64)
    b = FileEntry("a", 2, "1" * 64)
    c = FileEntry("a-b", 3, "2" * 64)
    assert digest_entries([a, b, c]) == digest_entries([c, a, b])
    assert manifest([a, b, c]).startswith(b"a\x002\x00")
    with pytest.raises(ValueError, match="twice"):
        manifest([a, a])


def test_a_symlink_in_a_model_directory_is_refused(tmp_path: Path) -> None:
    root = _model(tmp_path / "m")
    (root / "link").symlink_to(root / "metadata.json")
    with pytest.raises(ValueError, match="not a regular file"):
        digest_dir(root)


def test_the_hash_while_writing_equals_the_hash_read_back(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with path.open("wb") as f:
        w = HashingWriter(f, "f")
        w.write(b"garbage")
        w.reset()  # a transfer that starts over
        for _ in range(3):
            w.write(b"x" * 1000)
    assert (
        w.entry()
        == sha256_file(path)
        == FileEntry("f", 3000, hashlib.sha256(b"x" * 3000).hexdigest())
    )


@pytest.mark.parametrize("given", ["AB" * 32, "sha256:" + "ab" * 32, " SHA256:" + "Ab" * 32])
def test_an_expected_digest_may_be_given_bare_or_prefixed(given: str) -> None:
    assert normalize(given) == "sha256:" + "ab" * 32


@pytest.mark.parametrize("given", ["", "ab", "sha512:" + "ab" * 32, "zz" * 32])
def test_anything_else_is_not_a_digest(given: str) -> None:
    with pytest.raises(ValueError, match="not a sha256 digest"):
        normalize(given)


def test_hashing_writer_passes_bytes_through() -> None:
    buf = io.BytesIO()
    w = HashingWriter(buf, "x")
    w.write(memoryview(b"abc"))
    assert buf.getvalue() == b"abc" and w.size == 3


# https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html examples
AWS_KEYS = {
    "access_key": "AKIAIOSFODNN7EXAMPLE",
    "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "region": "us-east-1",
    "now": datetime(2013, 5, 24, tzinfo=UTC),
}


@pytest.mark.parametrize(
    ("path", "params", "headers", "signature"),
    [
        ("/test.txt", {}, {"Range": "bytes=0-9"},
         "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
        ("/", {"max-keys": "2", "prefix": "J"}, {},
         "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
        ("/", {"lifecycle": ""}, {},
         "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
    ],
    ids=["get-object", "list-objects", "get-lifecycle"],
)  # fmt: skip
def test_sigv4_matches_the_aws_published_examples(
    path: str, params: dict[str, str], headers: dict[str, str], signature: str
) -> None:
    out = sign("GET", "examplebucket.s3.amazonaws.com", path, params, headers, **AWS_KEYS)
    assert out["authorization"].endswith(f"Signature={signature}")
    assert (
        "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
        in (out["authorization"])
    )
    assert out["x-amz-date"] == "20130524T000000Z"


def test_sigv4_signs_the_session_token() -> None:
    out = sign("GET", "h", "/k", {}, {}, session_token="tok", **AWS_KEYS)
    assert out["x-amz-security-token"] == "tok"
    assert "x-amz-security-token" in out["authorization"].split("SignedHeaders=")[1]
