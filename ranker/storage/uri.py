"""A model URI parsed into a typed location, and the URI made safe to print.

One parser per scheme in :data:`PARSERS`; a new scheme (``models:/``, ``oci://``,
``pvc://``) is a new location class, a parser here and a source in
:mod:`ranker.storage.fetch`. Anything else is an :class:`UnsupportedModelURI` naming
the scheme and the supported ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from ranker.storage.errors import UnsupportedModelURI

#: suffixes that make an https:// or file:// location an archive to unpack
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


@dataclass(frozen=True)
class FileLocation:
    """A directory, a single file or an archive on a local filesystem."""

    path: Path

    def describe(self) -> str:
        return f"file://{self.path}"


@dataclass(frozen=True)
class HTTPSLocation:
    """One file or one archive (:data:`ARCHIVE_SUFFIXES`) behind an https:// URL."""

    url: str  # the whole URL, query included (it may be a pre-signed one)
    name: str  # the last path segment: the file's name in the model directory

    @property
    def archive(self) -> str | None:
        return archive_kind(self.name)

    def describe(self) -> str:
        return redact(self.url)


@dataclass(frozen=True)
class S3Location:
    """Every object under ``prefix`` in ``bucket``: the model directory's files."""

    bucket: str
    prefix: str  # "" (the whole bucket) or ending in "/"

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


ModelLocation = FileLocation | HTTPSLocation | S3Location


def archive_kind(name: str) -> str | None:
    """``"tar"`` (any compression tarfile reads) or ``"zip"`` by the name's suffix, else None."""
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return None


def _file(uri: str, parts: SplitResult) -> FileLocation:
    if parts.scheme == "":
        return FileLocation(Path(uri))
    if parts.netloc not in ("", "localhost"):
        raise UnsupportedModelURI(
            f"file URI {redact(uri)!r} names host {parts.netloc!r}: only local files "
            "(file:///path) can be fetched"
        )
    if not parts.path:
        raise UnsupportedModelURI(f"file URI {redact(uri)!r} has no path")
    return FileLocation(Path(unquote(parts.path)))


def _https(uri: str, parts: SplitResult) -> HTTPSLocation:
    if not parts.hostname:
        raise UnsupportedModelURI(f"https URI {redact(uri)!r} has no host")
    name = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1]) if parts.path else ""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UnsupportedModelURI(
            f"https URI {redact(uri)!r} does not end in a file name (a single file or an "
            f"archive: {', '.join(ARCHIVE_SUFFIXES)})"
        )
    return HTTPSLocation(url=uri.split("#", 1)[0], name=name)


def _s3(uri: str, parts: SplitResult) -> S3Location:
    bucket = parts.netloc
    if not bucket or "@" in bucket or ":" in bucket:
        raise UnsupportedModelURI(
            f"S3 URI {redact(uri)!r}: expected s3://bucket/prefix/ (credentials belong in "
            "the credentials directory, not the URI)"
        )
    if parts.query or parts.fragment:
        raise UnsupportedModelURI(f"S3 URI {redact(uri)!r} has a query or fragment")
    prefix = unquote(parts.path).lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Location(bucket=bucket, prefix=prefix)


#: scheme -> parser; "" is a plain local path
PARSERS: dict[str, Callable[[str, SplitResult], ModelLocation]] = {
    "": _file,
    "file": _file,
    "https": _https,
    "s3": _s3,
}


def supported_schemes() -> list[str]:
    return [f"{s}://" for s in PARSERS if s]


def parse_model_uri(uri: str) -> ModelLocation:
    """The typed location of ``uri``; :class:`UnsupportedModelURI` when no parser takes it."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise UnsupportedModelURI(f"model URI {redact(uri)!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    parser = PARSERS.get(scheme)
    if parser is None:
        raise UnsupportedModelURI(
            f"model URI scheme {scheme + ':'!r} is not supported (in {redact(uri)!r}); "
            f"supported: {', '.join(supported_schemes())}"
        )
    return parser(uri, parts)


def redact(uri: str) -> str:
    """``uri`` without what may be a credential: user info (``user:pass@``), the query
    (pre-signed URLs carry their signature there) and the fragment."""
    try:
        parts = urlsplit(uri)
        host = parts.netloc.rsplit("@", 1)[-1]
    except ValueError:
        return "<malformed URI>"
    if not parts.scheme:
        return uri
    netloc = ("***@" if "@" in parts.netloc else "") + host
    query = "?<redacted>" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"
