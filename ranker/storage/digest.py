"""The digest of a model directory, and the sha256 of each file as it streams past.

A model is a directory, so its digest is over a manifest: for every regular file, in
the order of its relative POSIX path's UTF-8 bytes, the line

    ``<relative path> NUL <size in decimal> NUL <sha256 hex> LF``

and the digest is ``sha256:`` + the sha256 hex of those lines. Paths cannot hold NUL,
so the manifest parses one way only; empty directories do not count. The same bytes
in the same layout give the same digest wherever they were fetched from (S3 objects,
a tar, a local copy), which is what pinning needs.

:class:`HashingWriter` computes a file's entry while it is written, so a fetch never
reads a file twice; :func:`digest_dir` reads a directory that is already on disk.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PREFIX = "sha256:"
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, POSIX separators
    size: int
    sha256: str  # hex


@dataclass(frozen=True)
class ModelDigest:
    digest: str  # "sha256:<hex>"
    files: int
    bytes: int


def manifest(entries: Iterable[FileEntry]) -> bytes:
    ordered = sorted(entries, key=lambda e: e.path.encode())
    paths = [e.path for e in ordered]
    if len(set(paths)) != len(paths):
        raise ValueError("a manifest lists a path twice")
    return b"".join(f"{e.path}\0{e.size}\0{e.sha256}\n".encode() for e in ordered)


def digest_entries(entries: Iterable[FileEntry]) -> ModelDigest:
    items = list(entries)
    return ModelDigest(
        digest=PREFIX + hashlib.sha256(manifest(items)).hexdigest(),
        files=len(items),
        bytes=sum(e.size for e in items),
    )


def normalize(expected: str) -> str:
    """A digest as given on a command line (``HEX`` or ``sha256:HEX``, any case) in the
    form :func:`digest_entries` returns; ValueError when it is not a sha256."""
    hexpart = expected.strip().lower().removeprefix(PREFIX)
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ValueError(f"not a sha256 digest: {expected!r} (expected 64 hex digits)")
    return PREFIX + hexpart


def sha256_file(path: Path) -> FileEntry:
    """The entry of one file on disk, relative name left to the caller (``path.name``)."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return FileEntry(path.name, size, h.hexdigest())


def walk_files(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every regular file under ``root``; symlinks and
    special files are a ValueError (a model directory holds plain files)."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            if (base / name).is_symlink():
                raise ValueError(f"{base / name} is a symlink; a model directory holds files")
        for name in filenames:
            p = base / name
            mode = p.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise ValueError(f"{p} is not a regular file")
            found.append((p.relative_to(root).as_posix(), p))
    return found


def digest_dir(root: Path) -> ModelDigest:
    """The digest of a model directory on disk."""
    entries = []
    for rel, p in walk_files(root):
        e = sha256_file(p)
        entries.append(FileEntry(rel, e.size, e.sha256))
    return digest_entries(entries)


class HashingWriter:
    """Writes to a binary file and keeps its size and sha256; :meth:`entry` at the end.

    ``reset`` empties the file and the hash (a transfer that must start over)."""

    def __init__(self, f: BinaryIO, path: str) -> None:
        self._f = f
        self.path = path
        self._h = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._f.write(chunk)
        self._h.update(chunk)
        self.size += len(chunk)

    def reset(self) -> None:
        self._f.seek(0)
        self._f.truncate()
        self._h = hashlib.sha256()
        self.size = 0

    def entry(self) -> FileEntry:
        return FileEntry(self.path, self.size, self._h.hexdigest())
