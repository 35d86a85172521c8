"""file:// (or a plain path): a directory copied, a single file copied, an archive unpacked.

The copy goes through :class:`~ranker.storage.staging.Staging` like any download, so
it is hashed, bounded and renamed into place the same way. A symlink in the source
directory is followed only when it stays inside it (a model directory baked into an
image may link files); one leading out is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from ranker.storage.archive import UNPACKERS
from ranker.storage.errors import InvalidModelContent, ModelAccessDenied, ModelNotFound
from ranker.storage.staging import Staging
from ranker.storage.uri import FileLocation, archive_kind

CHUNK = 1 << 20


def _copy_file(src: Path, staging: Staging, name: str) -> None:
    with src.open("rb") as f, staging.open(name) as out:
        while chunk := f.read(CHUNK):
            out.write(chunk)


def fetch_local(loc: FileLocation, staging: Staging) -> None:
    src = loc.path
    what = loc.describe()
    try:
        if src.is_dir():
            _copy_dir(src, staging)
        elif src.is_file():
            kind = archive_kind(src.name)
            if kind is None:
                _copy_file(src, staging, src.name)
            else:
                with src.open("rb") as f:
                    UNPACKERS[kind](f, staging)
        else:
            raise ModelNotFound(f"{what}: no such file or directory")
    except PermissionError:
        raise ModelAccessDenied(f"{what}: permission denied") from None


def _copy_dir(root: Path, staging: Staging) -> None:
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            if (base / name).is_symlink():
                raise InvalidModelContent(
                    f"{staging.what}: {(base / name).relative_to(root)} is a symlinked "
                    "directory; refused"
                )
        for name in filenames:
            p = base / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink() and not p.resolve().is_relative_to(real_root):
                raise InvalidModelContent(
                    f"{staging.what}: {rel} is a link that leads outside the directory"
                )
            if not p.is_file():
                raise InvalidModelContent(f"{staging.what}: {rel} is not a regular file")
            _copy_file(p, staging, rel)
