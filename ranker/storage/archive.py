"""Unpack a tar (any compression tarfile reads) or a zip into a :class:`Staging`, safely.

Refused, as :class:`~ranker.storage.errors.InvalidModelContent`: absolute paths, ``..``
components, a member under a path that is a file, duplicates, devices and FIFOs, links
that lead outside the archive, and corrupt archives. Links that stay inside become
copies of their target, so a model directory holds plain files only (what the digest
and a read-only mount expect). Every byte unpacked counts against the byte limit, so
a decompression bomb stops at the limit. Modes, owners and times in the archive are
ignored (files 0644, directories 0755).

A tar is read as a stream (``r|*``): from an HTTP body straight to the files, with no
temporary copy. A zip's directory is at its end, so a zip needs a seekable file.
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from typing import IO, BinaryIO

from ranker.storage.digest import FileEntry
from ranker.storage.errors import InvalidModelContent
from ranker.storage.staging import Staging, safe_relpath

CHUNK = 1 << 20
#: links resolved through at most this many other links
MAX_LINK_DEPTH = 8


def _copy_stream(src: IO[bytes], staging: Staging, name: str) -> None:
    with staging.open(name) as out:
        while chunk := src.read(CHUNK):
            out.write(chunk)


class _Links:
    """Links seen while unpacking; materialised as copies once every file is there."""

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self.links: dict[str, str] = {}  # link's relative path -> target's relative path

    def add(self, name: str, target: str, *, symbolic: bool) -> None:
        rel = safe_relpath(name, self.staging.what)
        if symbolic:
            if target.startswith("/"):
                raise InvalidModelContent(
                    f"{self.staging.what}: link {rel!r} -> {target!r} leads outside the archive"
                )
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        else:  # a hard link names its target from the archive's root
            joined = posixpath.normpath(target)
        if joined == ".." or joined.startswith("../") or joined.startswith("/"):
            raise InvalidModelContent(
                f"{self.staging.what}: link {rel!r} -> {target!r} leads outside the archive"
            )
        if rel in self.links:
            raise InvalidModelContent(f"{self.staging.what}: {rel!r} appears twice")
        self.links[rel] = safe_relpath(joined, self.staging.what)

    def materialise(self) -> None:
        files = {e.path: e for e in self.staging.entries}
        for rel, target in self.links.items():
            hops = 0
            while target in self.links:
                target = self.links[target]
                hops += 1
                if hops > MAX_LINK_DEPTH:
                    raise InvalidModelContent(f"{self.staging.what}: link loop at {rel!r}")
            entry = files.get(target)
            if entry is None:
                raise InvalidModelContent(
                    f"{self.staging.what}: link {rel!r} points at {target!r}, which is not "
                    "a file in the archive"
                )
            src = self.staging.root.joinpath(*target.split("/"))
            dst = self.staging.path_of(rel)
            self.staging.budget.take(entry.size)
            shutil.copyfile(src, dst)
            dst.chmod(0o644)
            self.staging.record(FileEntry(rel, entry.size, entry.sha256))


def unpack_tar(stream: BinaryIO, staging: Staging) -> None:
    """Unpack a tar stream (plain, gzip, bzip2 or xz) into ``staging``.

    Reads from ``stream`` propagate their own exceptions (the caller's transport
    decides what a broken connection means); a corrupt archive is InvalidModelContent."""
    links = _Links(staging)
    try:
        with tarfile.open(fileobj=stream, mode="r|*", bufsize=CHUNK) as tar:
            for member in tar:
                if member.isreg():
                    src = tar.extractfile(member)
                    assert src is not None  # a regular member always has data
                    _copy_stream(src, staging, member.name)
                elif member.isdir():
                    staging.mkdir(member.name)
                elif member.issym() or member.islnk():
                    links.add(member.name, member.linkname, symbolic=member.issym())
                else:
                    raise InvalidModelContent(
                        f"{staging.what}: {member.name!r} is a device or FIFO; refused"
                    )
    except (tarfile.TarError, EOFError, zlib.error, ValueError) as exc:
        raise InvalidModelContent(f"{staging.what}: not a readable tar archive: {exc}") from None
    links.materialise()


def unpack_zip(file: BinaryIO, staging: Staging) -> None:
    """Unpack a zip (a seekable file) into ``staging``."""
    links = _Links(staging)
    try:
        with zipfile.ZipFile(file) as zf:
            for info in zf.infolist():
                kind = stat.S_IFMT(info.external_attr >> 16)
                if info.is_dir():
                    staging.mkdir(info.filename)
                elif kind == stat.S_IFLNK:
                    links.add(info.filename, zf.read(info).decode(), symbolic=True)
                elif kind not in (0, stat.S_IFREG):
                    raise InvalidModelContent(
                        f"{staging.what}: {info.filename!r} is a device or FIFO; refused"
                    )
                else:
                    with zf.open(info) as src:
                        _copy_stream(src, staging, info.filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, ValueError) as exc:
        raise InvalidModelContent(f"{staging.what}: not a readable zip archive: {exc}") from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, unknown compression
        raise InvalidModelContent(f"{staging.what}: cannot unpack the zip: {exc}") from None
    links.materialise()


UNPACKERS: dict[str, Callable[[BinaryIO, Staging], None]] = {"tar": unpack_tar, "zip": unpack_zip}
