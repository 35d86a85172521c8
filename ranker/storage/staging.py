"""The temporary directory a fetch writes into, next to its target.

:class:`Staging` is the only way the sources (S3 objects, an archive's members, a
local copy) create files: it checks each relative path (no absolute paths, no ``..``,
nothing outside the directory), counts the bytes against the limit
(:class:`~ranker.storage.errors.ModelTooLarge` at the first byte over, so the disk never
fills), and records each file's size and sha256 as it is written, which is the
manifest the digest is computed from. :meth:`Staging.reset` empties it for a transfer
that has to start again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from ranker.storage.digest import FileEntry, HashingWriter
from ranker.storage.errors import InvalidModelContent, ModelTooLarge

FILE_MODE = 0o644
DIR_MODE = 0o755


def safe_relpath(name: str, what: str) -> str:
    """``name`` as a clean relative POSIX path, or :class:`InvalidModelContent` when it
    is absolute, climbs out (``..``), is empty or holds a NUL or a backslash."""
    if not name or "\0" in name or "\\" in name:
        raise InvalidModelContent(f"{what}: unusable path {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute():
        raise InvalidModelContent(f"{what}: absolute path {name!r} refused")
    parts = [part for part in p.parts if part != "."]
    if ".." in parts:
        raise InvalidModelContent(f"{what}: path {name!r} climbs out of the model directory")
    if not parts:
        raise InvalidModelContent(f"{what}: unusable path {name!r}")
    return "/".join(parts)


class ByteBudget:
    """Bytes written so far against an optional limit; ``free``: the bytes free on the
    target's filesystem when the fetch began, checked against declared sizes."""

    def __init__(self, limit: int | None, what: str, free: int | None = None) -> None:
        self.limit = limit
        self.free = free
        self.used = 0
        self.what = what

    def take(self, n: int) -> None:
        self.used += n
        if self.limit is not None and self.used > self.limit:
            raise ModelTooLarge(
                f"{self.what}: more than the limit of {self.limit} bytes; stopped at "
                f"{self.used} (raise --max-bytes / the model volume's sizeLimit)"
            )

    def check_declared(self, total: int, detail: str = "") -> None:
        """Fail before downloading when the size the server declares cannot fit."""
        if self.limit is not None and total > self.limit:
            raise ModelTooLarge(
                f"{self.what}: {total} bytes{detail}, over the limit of {self.limit} bytes "
                "(raise --max-bytes / the model volume's sizeLimit)"
            )
        if self.free is not None and total > self.free:
            raise ModelTooLarge(
                f"{self.what}: {total} bytes{detail}, more than the {self.free} bytes free "
                "on the target's disk"
            )


class StagedFile:
    """One file being written: a :class:`HashingWriter` whose bytes count against the budget."""

    def __init__(self, writer: HashingWriter, budget: ByteBudget) -> None:
        self._writer = writer
        self._budget = budget

    @property
    def size(self) -> int:
        return self._writer.size

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._budget.take(len(chunk))
        self._writer.write(chunk)

    def reset(self) -> None:
        """Empty the file (the transfer starts over) and give its bytes back."""
        self._budget.used -= self._writer.size
        self._writer.reset()


class Staging:
    def __init__(self, root: Path, budget: ByteBudget, what: str) -> None:
        self.root = root
        self.budget = budget
        self.what = what
        #: a file next to the staging directory for what must be whole before it is
        #: read (a zip); the fetch removes it with the directory
        self.scratch = root.with_name(root.name + ".archive")
        self._entries: dict[str, FileEntry] = {}

    @property
    def entries(self) -> list[FileEntry]:
        return list(self._entries.values())

    def _checked(self, name: str) -> tuple[str, Path]:
        rel = safe_relpath(name, self.what)
        path = self.root.joinpath(*rel.split("/"))
        # every ancestor must be a plain directory (or not exist yet)
        for ancestor in reversed(path.relative_to(self.root).parents):
            here = self.root / ancestor
            if here.is_symlink() or (here.exists() and not here.is_dir()):
                raise InvalidModelContent(f"{self.what}: {rel!r} lies under a file")
        return rel, path

    def path_of(self, name: str) -> Path:
        """The path a new file at (checked) relative ``name`` lands at; parents are created."""
        rel, path = self._checked(name)
        if rel in self._entries:
            raise InvalidModelContent(f"{self.what}: {rel!r} appears twice")
        path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        return path

    def mkdir(self, name: str) -> None:
        """A directory at relative ``name`` (empty directories do not count in the digest);
        the root itself (``.``, ``./``) is already there."""
        if name and all(part == "." for part in PurePosixPath(name).parts):
            return
        rel, path = self._checked(name)
        if path.exists() and not path.is_dir():
            raise InvalidModelContent(f"{self.what}: {rel!r} is a file and a directory")
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)

    @contextmanager
    def open(self, name: str) -> Iterator[StagedFile]:
        """A new file at ``name``; its entry is recorded when the block ends without error."""
        path = self.path_of(name)
        rel = path.relative_to(self.root).as_posix()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        except (FileExistsError, IsADirectoryError):
            raise InvalidModelContent(f"{self.what}: {rel!r} is also a directory") from None
        with os.fdopen(fd, "wb") as f:
            writer = HashingWriter(f, rel)
            yield StagedFile(writer, self.budget)
        self._entries[rel] = writer.entry()

    def record(self, entry: FileEntry) -> None:
        """A file put in place by other means (a copy of a staged file), already counted."""
        self._entries[entry.path] = entry

    def reset(self) -> None:
        """Remove everything written (a stream that must be read again from the start)."""
        for child in self.root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        self._entries.clear()
        self.budget.used = 0
