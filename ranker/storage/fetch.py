"""The fetch: a model URI into a directory, whole and verified or not at all.

1. parse the URI (:mod:`ranker.storage.uri`) and pick the source for its scheme
   (:data:`SOURCES`);
2. under a lock next to the target (``.NAME.lock``, left in place: empty, harmless),
   remove what a killed fetch left behind and make a temporary directory next to the
   target (same filesystem, so step 5 is a rename);
3. the source streams every file into it (:class:`~ranker.storage.staging.Staging`):
   per-file sha256 on the way, the byte limit and the disk's free space enforced,
   timeouts and retries in the transport;
4. the digest over the manifest (:mod:`ranker.storage.digest`) is compared with the
   expected one when given (:class:`~ranker.storage.errors.ModelDigestMismatch`);
5. the directory is renamed to the target (an existing target is moved aside first and
   deleted after).

On any failure the temporary directory goes and the target is as it was: a pod never
starts on a partial or unverified model. The target must not be a mount point (rename
cannot replace one): fetch into a directory inside the volume, e.g.
``/mnt/models/model`` on an emptyDir at ``/mnt/models``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ranker.storage.credentials import StorageConfig
from ranker.storage.digest import digest_entries, normalize
from ranker.storage.errors import ModelDigestMismatch, ModelNotFound, ModelTooLarge
from ranker.storage.https import fetch_https
from ranker.storage.local import fetch_local
from ranker.storage.retry import RetryPolicy
from ranker.storage.s3 import fetch_s3
from ranker.storage.staging import DIR_MODE, ByteBudget, Staging
from ranker.storage.transport import Transfer
from ranker.storage.uri import FileLocation, HTTPSLocation, S3Location, parse_model_uri

log = logging.getLogger(__name__)

#: location type -> the function that streams it into a staging directory; a new
#: scheme adds its location class (ranker.storage.uri) and its source here
SOURCES: dict[type, Callable[[Any, Staging, Transfer], None]] = {
    FileLocation: lambda loc, staging, _transfer: fetch_local(loc, staging),
    HTTPSLocation: fetch_https,
    S3Location: fetch_s3,
}

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class FetchResult:
    uri: str  # redacted: no credentials, no query
    digest: str  # "sha256:<hex>" over the manifest
    bytes: int
    files: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "digest": self.digest,
            "bytes": self.bytes,
            "files": self.files,
            "seconds": round(self.seconds, 3),
        }


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _swap_into(staged: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staged, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / "entry")
    os.rename(staged, target)
    shutil.rmtree(old, ignore_errors=True)


def fetch_model(
    uri: str,
    target: Path,
    *,
    sha256: str | None = None,
    config: StorageConfig | None = None,
    max_bytes: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    policy: RetryPolicy | None = None,
) -> FetchResult:
    """Fetch ``uri`` into the directory ``target``; raises a
    :class:`~ranker.storage.errors.ModelFetchError` subclass, or ValueError for a bad
    argument (a malformed ``sha256``, a target that cannot be renamed onto)."""
    start = time.monotonic()
    expected = normalize(sha256) if sha256 else None
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError("max_bytes must be > 0")
    location = parse_model_uri(uri)
    what = location.describe()
    target = Path(os.path.abspath(target))
    if os.path.ismount(target):
        raise ValueError(
            f"{target} is a mount point: fetch into a directory inside the volume "
            f"(e.g. {target / 'model'}) so the model can be renamed into place"
        )
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a directory")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    transfer = Transfer(config or StorageConfig(), timeout, policy or RetryPolicy())
    source = SOURCES[type(location)]

    with _locked(parent / f".{target.name}.lock"):
        for leftover in parent.glob(f".{target.name}.partial-*"):
            _remove(leftover)  # a fetch that was killed
        for leftover in parent.glob(f".{target.name}.old-*"):
            _remove(leftover)
        staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=parent))
        budget = ByteBudget(max_bytes, what, free=shutil.disk_usage(parent).free)
        staging = Staging(staged, budget, what)
        log.info("fetching %s into %s", what, target)
        try:
            try:
                source(location, staging, transfer)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ModelTooLarge(
                        f"{what}: the disk of {parent} is full after {budget.used} bytes"
                    ) from None
                raise
            got = digest_entries(staging.entries)
            if got.files == 0:
                raise ModelNotFound(f"{what}: holds no files")
            if expected is not None and got.digest != expected:
                raise ModelDigestMismatch(
                    f"{what}: digest {got.digest}, expected {expected} "
                    f"({got.files} files, {got.bytes} bytes)"
                )
            staged.chmod(DIR_MODE)
            _swap_into(staged, target)
        finally:
            _remove(staged)
            _remove(staging.scratch)
    seconds = time.monotonic() - start
    log.info(
        "fetched %s: %d files, %d bytes in %.2f s (%.1f MB/s), %s",
        what, got.files, got.bytes, seconds, got.bytes / 1e6 / max(seconds, 1e-9), got.digest,
    )  # fmt: skip
    return FetchResult(what, got.digest, got.bytes, got.files, seconds)
