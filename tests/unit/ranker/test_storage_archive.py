"""ranker.storage.archive and .staging: tar and zip unpacked safely. Whatever an archive
says, nothing lands outside the staging directory; links inside become copies; the byte
limit stops a decompression bomb."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from ranker.storage.archive import unpack_tar, unpack_zip
from ranker.storage.digest import digest_dir, digest_entries
from ranker.storage.errors import InvalidModelContent, ModelTooLarge
from ranker.storage.staging import ByteBudget, Staging


def _staging(tmp_path: Path, limit: int | None = None) -> Staging:
    root = tmp_path / "work" / "staged"
    root.mkdir(parents=True)
    return Staging(root, ByteBudget(limit, "test://archive"), "test://archive")


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _everything_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_a_tar_gz_unpacks_and_its_digest_is_the_directory_digest(tmp_path: Path) -> None:
    staging = _staging(tmp_path)
    unpack_tar(_tar([_file("metadata.json", b"{}"), _file("./sub/w.bin", b"w" * 5000)]), staging)
    assert _everything_under(staging.root) == {"metadata.json", "sub", "sub/w.bin"}
    assert digest_entries(staging.entries) == digest_dir(staging.root)
    assert stat.S_IMODE((staging.root / "sub" / "w.bin").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil", "climbs out"),
        ("ok/../../evil", "climbs out"),
        ("/etc/evil", "absolute"),
        ("a\\..\\evil", "unusable"),
    ],
)
def test_a_tar_member_outside_the_directory_is_refused(tmp_path: Path, name: str, why: str) -> None:
    staging = _staging(tmp_path)
    with pytest.raises(InvalidModelContent, match=why):
        unpack_tar(_tar([_file("fine.json", b"{}"), _file(name, b"pwned")]), staging)
    assert not (tmp_path / "work" / "evil").exists()
    assert not (tmp_path / "evil").exists()
    assert "evil" not in " ".join(_everything_under(tmp_path))


@pytest.mark.parametrize(
    ("name", "target", "kind"),
    [
        ("escape", "../../outside.txt", tarfile.SYMTYPE),
        ("escape", "/etc/passwd", tarfile.SYMTYPE),
        ("sub/escape", "../../x", tarfile.SYMTYPE),
        ("escape", "../outside.txt", tarfile.LNKTYPE),
    ],
)
def test_a_link_leading_outside_is_refused(
    tmp_path: Path, name: str, target: str, kind: bytes
) -> None:
    (tmp_path / "work" / "outside.txt").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "work" / "outside.txt").write_text("secret")
    staging = _staging(tmp_path)
    with pytest.raises(InvalidModelContent, match="leads outside"):
        unpack_tar(_tar([_link(name, target, kind)]), staging)
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


def test_links_that_stay_inside_become_plain_copies(tmp_path: Path) -> None:
    staging = _staging(tmp_path)
    archive = _tar(
        [
            _file("real/weights.bin", b"abc"),
            _link("alias.bin", "real/weights.bin"),  # symlink, relative to its directory
            _link("real/again.bin", "weights.bin"),
            _link("hard.bin", "real/weights.bin", tarfile.LNKTYPE),  # hard: from the root
            _link("chain.bin", "alias.bin"),
        ]
    )
    unpack_tar(archive, staging)
    for name in ("alias.bin", "real/again.bin", "hard.bin", "chain.bin"):
        p = staging.root / name
        assert not p.is_symlink() and p.read_bytes() == b"abc"
    assert digest_entries(staging.entries) == digest_dir(staging.root)
    assert staging.budget.used == 3 * 5  # the copies count against the limit too


@pytest.mark.parametrize(
    "members",
    [
        [_link("dangling", "nothing-here")],
        [_link("a", "b"), _link("b", "a")],
    ],
    ids=["dangling", "loop"],
)
def test_a_link_to_no_file_is_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    with pytest.raises(InvalidModelContent):
        unpack_tar(_tar(members), _staging(tmp_path))


def test_devices_fifos_and_duplicates_are_refused(tmp_path: Path) -> None:
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(InvalidModelContent, match="device or FIFO"):
        unpack_tar(_tar([(fifo, None)]), _staging(tmp_path / "a"))
    with pytest.raises(InvalidModelContent, match="twice"):
        unpack_tar(_tar([_file("m.json", b"1"), _file("./m.json", b"2")]), _staging(tmp_path / "b"))
    with pytest.raises(InvalidModelContent, match="under a file"):
        unpack_tar(_tar([_file("m", b"1"), _file("m/x", b"2")]), _staging(tmp_path / "c"))


def test_a_decompression_bomb_stops_at_the_byte_limit(tmp_path: Path) -> None:
    bomb = _tar([_file("zeros.bin", b"\0" * 4_000_000)])  # 4 MB that gzip makes ~4 KB
    assert len(bomb.getvalue()) < 20_000
    staging = _staging(tmp_path, limit=1_000_000)
    with pytest.raises(ModelTooLarge, match="limit of 1000000 bytes"):
        unpack_tar(bomb, staging)
    assert staging.budget.used <= 1_000_000 + (1 << 20)  # stopped within one chunk


@pytest.mark.parametrize("data", [b"", b"not a tar at all" * 100, b"\x1f\x8b\x08\x00garbage"])
def test_a_corrupt_tar_is_invalid_content(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidModelContent, match="not a readable tar"):
        unpack_tar(io.BytesIO(data), _staging(tmp_path))


def test_a_truncated_tar_gz_is_invalid_content(tmp_path: Path) -> None:
    whole = _tar([_file("w.bin", bytes(range(256)) * 4000)]).getvalue()
    with pytest.raises(InvalidModelContent):
        unpack_tar(io.BytesIO(whole[: len(whole) // 2]), _staging(tmp_path))


def _zip(entries: list[tuple[str, bytes, int]]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    buf.seek(0)
    return buf


def test_a_zip_unpacks_with_its_symlinks_as_copies(tmp_path: Path) -> None:
    staging = _staging(tmp_path)
    unpack_zip(
        _zip(
            [
                ("m/weights.bin", b"w" * 100, stat.S_IFREG | 0o600),
                ("m/alias.bin", b"weights.bin", stat.S_IFLNK | 0o777),
                ("m/empty/", b"", stat.S_IFDIR | 0o755),
            ]
        ),
        staging,
    )
    assert (staging.root / "m" / "alias.bin").read_bytes() == b"w" * 100
    assert (staging.root / "m" / "empty").is_dir()
    assert digest_entries(staging.entries) == digest_dir(staging.root)


@pytest.mark.parametrize(
    ("name", "data", "mode", "why"),
    [
        ("../evil", b"x", stat.S_IFREG | 0o644, "climbs out"),
        ("/abs", b"x", stat.S_IFREG | 0o644, "absolute"),
        ("link", b"../../etc/passwd", stat.S_IFLNK | 0o777, "leads outside"),
        ("dev", b"", stat.S_IFCHR | 0o644, "device"),
    ],
)
def test_a_zip_entry_outside_or_special_is_refused(
    tmp_path: Path, name: str, data: bytes, mode: int, why: str
) -> None:
    staging = _staging(tmp_path)
    with pytest.raises(InvalidModelContent, match=why):
        unpack_zip(_zip([(name, data, mode)]), staging)
    assert not (tmp_path / "work" / "evil").exists()


def test_a_zip_bomb_stops_at_the_byte_limit(tmp_path: Path) -> None:
    with pytest.raises(ModelTooLarge):
        unpack_zip(
            _zip([("z", b"\0" * 3_000_000, stat.S_IFREG | 0o644)]), _staging(tmp_path, 10_000)
        )


def test_a_corrupt_zip_is_invalid_content(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelContent, match="not a readable zip"):
        unpack_zip(io.BytesIO(b"PK\x03\x04 this is not really a zip"), _staging(tmp_path))
