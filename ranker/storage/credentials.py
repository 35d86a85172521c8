"""Credentials, endpoint and CA bundle for a fetch: from a directory of files (a mounted
Kubernetes Secret) or from the environment, never both.

Keys (file names in the directory, or environment variables):

===========================  =====================================================
``AWS_ACCESS_KEY_ID``        S3 access key (with ``AWS_SECRET_ACCESS_KEY``)
``AWS_SECRET_ACCESS_KEY``    S3 secret key
``AWS_SESSION_TOKEN``        S3 session token (temporary credentials), optional
``AWS_ENDPOINT_URL``         S3 endpoint (``https://minio.example:9000``); default AWS
``AWS_REGION``               S3 region (SigV4 scope); default ``us-east-1``
``S3_ADDRESSING_STYLE``      ``path`` or ``virtual``; default ``path`` with an
                             endpoint, ``virtual`` on AWS
``ca.crt``                   PEM CA bundle trusted in addition to the system's (env:
                             ``AWS_CA_BUNDLE``, a path)
``HTTPS_HEADERS``            JSON object of headers sent with https:// requests
                             (e.g. ``{"Authorization": "Bearer ..."}``)
===========================  =====================================================

A Secret mounted as a volume has a file per key (values keep any trailing newline,
which is stripped here) plus ``..data`` bookkeeping entries, which are skipped.
:class:`StorageConfig` never shows a value: its ``repr`` names the keys that are set,
and :meth:`StorageConfig.scrub` removes every secret value from a text before it is
printed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ranker.storage.errors import ModelCredentialsInvalid

log = logging.getLogger(__name__)

CA_FILE = "ca.crt"
KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "S3_ADDRESSING_STYLE",
    "HTTPS_HEADERS",
    CA_FILE,
)


@dataclass(frozen=True, repr=False)
class StorageConfig:
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str | None = None  # "path" | "virtual" | None (by endpoint)
    ca_pem: str | None = None  # PEM text of the extra trusted CAs
    headers: dict[str, str] = field(default_factory=dict)
    source: str = "nothing"  # where it came from, for messages: a directory or "environment"

    def __post_init__(self) -> None:
        if self.addressing_style not in (None, "path", "virtual"):
            raise ModelCredentialsInvalid(
                f"S3_ADDRESSING_STYLE in {self.source} must be 'path' or 'virtual', "
                f"not {self.addressing_style!r}"
            )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            given = "AWS_ACCESS_KEY_ID" if self.access_key_id else "AWS_SECRET_ACCESS_KEY"
            raise ModelCredentialsInvalid(
                f"{self.source} has {given} but not the other of AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            )

    def __repr__(self) -> str:
        present = [
            name
            for name, value in (
                ("AWS_ACCESS_KEY_ID", self.access_key_id),
                ("AWS_SECRET_ACCESS_KEY", self.secret_access_key),
                ("AWS_SESSION_TOKEN", self.session_token),
                ("AWS_ENDPOINT_URL", self.endpoint_url),
                ("AWS_REGION", self.region),
                ("S3_ADDRESSING_STYLE", self.addressing_style),
                (CA_FILE, self.ca_pem),
                ("HTTPS_HEADERS", self.headers),
            )
            if value
        ]
        return f"StorageConfig(from {self.source}: {', '.join(present) or 'no keys'})"

    def secrets(self) -> list[str]:
        """Every value that must never be printed (header values may be tokens)."""
        values = [self.access_key_id, self.secret_access_key, self.session_token]
        values += list(self.headers.values())
        return [v for v in values if v]

    def scrub(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        for value in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    @classmethod
    def from_mapping(cls, values: Mapping[str, str], source: str) -> StorageConfig:
        def get(key: str) -> str | None:
            value = values.get(key)
            return value.strip() or None if value is not None else None

        headers: dict[str, str] = {}
        raw = get("HTTPS_HEADERS")
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
            ):
                # not the value: it may be a token with a typo
                raise ModelCredentialsInvalid(
                    f"HTTPS_HEADERS in {source} is not a JSON object of strings"
                )
            headers = parsed
        style = get("S3_ADDRESSING_STYLE")
        return cls(
            access_key_id=get("AWS_ACCESS_KEY_ID"),
            secret_access_key=get("AWS_SECRET_ACCESS_KEY"),
            session_token=get("AWS_SESSION_TOKEN"),
            endpoint_url=get("AWS_ENDPOINT_URL"),
            region=get("AWS_REGION"),
            addressing_style=style.lower() if style else None,
            ca_pem=values.get(CA_FILE) or None,
            headers=headers,
            source=source,
        )

    @classmethod
    def from_dir(cls, path: Path) -> StorageConfig:
        """The keys of a mounted Secret: one file per key."""
        if not path.is_dir():
            raise ModelCredentialsInvalid(f"credentials directory {path} does not exist")
        values: dict[str, str] = {}
        for entry in sorted(path.iterdir()):
            if entry.name.startswith("."):  # the Secret volume's ..data bookkeeping
                continue
            if entry.name not in KEYS:
                log.warning("credentials directory %s: ignoring unknown key %s", path, entry.name)
                continue
            if entry.is_file():
                try:
                    values[entry.name] = entry.read_text()
                except (OSError, UnicodeDecodeError) as exc:
                    raise ModelCredentialsInvalid(
                        f"credentials directory {path}: cannot read {entry.name}: "
                        f"{type(exc).__name__}"
                    ) from None
        return cls.from_mapping(values, source=f"credentials directory {path}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageConfig:
        """The same keys as environment variables; the CA bundle is the file
        ``AWS_CA_BUNDLE`` names (as boto3 reads it)."""
        env = os.environ if environ is None else environ
        values = {k: env[k] for k in KEYS if k in env and k != CA_FILE}
        bundle = env.get("AWS_CA_BUNDLE")
        if bundle:
            try:
                values[CA_FILE] = Path(bundle).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ModelCredentialsInvalid(
                    f"AWS_CA_BUNDLE {bundle}: cannot read it: {type(exc).__name__}"
                ) from None
        return cls.from_mapping(values, source="environment")

    @classmethod
    def load(cls, credentials_dir: Path | None) -> StorageConfig:
        """The directory when one is given, else the environment."""
        return cls.from_dir(credentials_dir) if credentials_dir else cls.from_env()
