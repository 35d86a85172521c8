"""s3://bucket/prefix/: every object under the prefix, over the S3 API.

List the prefix (ListObjectsV2, page by page), check the declared total against the
byte limit, then stream each object (GET, resumed with ``Range`` when a transfer
breaks) to its path relative to the prefix. Endpoint, region, addressing style,
credentials and CA bundle come from :class:`~ranker.storage.credentials.StorageConfig`;
requests are signed with SigV4 (:mod:`ranker.storage.sigv4`), or not at all when
there are no credentials (a public bucket). Zero-byte keys ending in ``/`` (the
"folders" consoles create) are skipped.

S3 errors map by their code: ``NoSuchBucket``/``NoSuchKey`` and an empty listing are
ModelNotFound; ``AccessDenied``, ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
``ExpiredToken`` and a region mismatch are ModelAccessDenied; ``SlowDown``,
``RequestTimeout``, ``InternalError`` and 5xx are retried. Only the code and message
of an S3 error are kept: its body can echo the access key id and the string signed.

Library: urllib3 (already the https:// transport) with the SigV4 signer in
:mod:`ranker.storage.sigv4`, chosen over boto3 and obstore for the serving image's
footprint and start-up; throughput is the same. Measured on this project's 2-core CI
machine (loaded by a parallel test run, so absolute figures are noisy), Python 3.11,
versitygw 1.8.0 on 127.0.0.1, one 100 MB object streamed in 1 MiB chunks and
discarded, 15 GETs each, interleaved:

=========================  =========  ==========  ==========  =========  ========
candidate                  installed  import CPU  GET MB/s    CPU per    peak RSS
                           (MB)       (ms) [1]_   (median)    100 MB     (MB)
=========================  =========  ==========  ==========  =========  ========
urllib3 2.8 + sigv4.py     0.5        55          901         39 ms      25
obstore 0.12.1 (Rust)      15         11          909         64 ms      28.5
urllib3 + botocore signer  32 [2]_    148         775         37 ms      31
boto3 1.44.18              34 [2]_    438 [3]_    855         33 ms      50
=========================  =========  ==========  ==========  =========  ========

.. [1] CPU time of the import on top of the standard library's ssl, http.client,
   logging and json (which ``ranker`` loads anyway), median of 9 runs.
.. [2] botocore 31 MB, plus jmespath, python-dateutil, six (and s3transfer for boto3).
.. [3] import and ``boto3.client("s3")`` (botocore loads its JSON service models).

What was given up: boto3's and obstore's credential chains (IRSA / web identity,
instance profiles, SSO). Keys come from the Secret; a web-identity exchange with STS
would be one more unsigned request here when it is needed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from urllib3.exceptions import HTTPError

from ranker.storage.credentials import StorageConfig
from ranker.storage.errors import (
    InvalidModelContent,
    ModelAccessDenied,
    ModelCredentialsInvalid,
    ModelFetchError,
    ModelNotFound,
)
from ranker.storage.retry import Transient
from ranker.storage.sigv4 import sign
from ranker.storage.staging import Staging
from ranker.storage.transport import Client, Response, Signer, Transfer, get_into
from ranker.storage.uri import S3Location, redact

DEFAULT_REGION = "us-east-1"
#: error codes worth another try (S3 answers some of them with 400 or 403)
RETRY_CODES = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
        "RequestTimeout", "InternalError", "ServiceUnavailable", "RequestTimeTooSkewed",
    }
)  # fmt: skip
NOT_FOUND_CODES = frozenset({"NoSuchBucket", "NoSuchKey"})
DENIED_CODES = frozenset(
    {
        "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
        "InvalidToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed",
        "AllAccessDisabled", "AccountProblem", "PermanentRedirect",
        # versitygw answers an unknown access key with 404 and this code (AWS: 403
        # InvalidAccessKeyId): the code decides, not the status
        "XAdminUserNotFound",
    }
)  # fmt: skip
MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int


@dataclass(frozen=True)
class Endpoint:
    """Where a bucket's requests go: ``https://host[:port]`` and the addressing style."""

    base: str  # scheme://host[:port], no trailing slash
    region: str
    virtual: bool  # bucket in the host name (AWS's default) or in the path

    @classmethod
    def of(cls, config: StorageConfig) -> Endpoint:
        region = config.region or DEFAULT_REGION
        base = (config.endpoint_url or f"https://s3.{region}.amazonaws.com").rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise ModelCredentialsInvalid(
                f"AWS_ENDPOINT_URL {redact(base)!r} in {config.source} is not scheme://host[:port]"
            )
        default_port = {"http": 80, "https": 443}[parts.scheme]
        host = parts.hostname + (f":{parts.port}" if parts.port not in (None, default_port) else "")
        style = config.addressing_style or ("path" if config.endpoint_url else "virtual")
        return cls(base=f"{parts.scheme}://{host}", region=region, virtual=style == "virtual")

    def url(self, bucket: str, key: str = "", query: dict[str, str] | None = None) -> str:
        scheme, host = self.base.split("://", 1)
        path = "/" + quote(key, safe="/-_.~")
        if self.virtual:
            host = f"{bucket}.{host}"
        else:
            path = f"/{bucket}{path}"
        return f"{scheme}://{host}{path}" + (f"?{urlencode(query)}" if query else "")


def signer(config: StorageConfig, region: str) -> Signer | None:
    access, secret = config.access_key_id, config.secret_access_key
    if not access or not secret:
        return None  # anonymous: a public bucket

    def _sign(method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        parts = urlsplit(url)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        return sign(
            method, parts.netloc, unquote(parts.path), params, headers,
            access_key=access, secret_key=secret, region=region,
            session_token=config.session_token,
        )  # fmt: skip

    return _sign


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for child in elem:
        if child.tag == name or child.tag.endswith("}" + name):
            return child
    return None


def _text(elem: ET.Element | None, name: str) -> str:
    found = _child(elem, name) if elem is not None else None
    return (found.text or "") if found is not None else ""


def error_of(client: Client, resp: Response) -> Exception:
    """The exception for an S3 error response, by its code."""
    code = message = ""
    try:
        body = resp.read(MAX_ERROR_BODY)
        root = ET.fromstring(body) if body else None
        code, message = _text(root, "Code"), _text(root, "Message")
    except (ET.ParseError, HTTPError, OSError, ValueError):
        pass  # no readable body: the status decides
    detail = client.config.scrub(f"{code}: {message}" if code else message)
    text = f"{client.what}: HTTP {resp.status}{' ' + detail if detail else ''}"
    if code in RETRY_CODES:
        return Transient(f"HTTP {resp.status} {code}")
    if code in DENIED_CODES:
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
            text += " (is AWS_REGION the bucket's region, and the endpoint right?)"
        return ModelAccessDenied(text)
    if code in NOT_FOUND_CODES:
        return ModelNotFound(text)
    return client.status_error(resp, detail)


def list_objects(
    client: Client, endpoint: Endpoint, loc: S3Location, transfer: Transfer
) -> list[S3Object]:
    sig = signer(transfer.config, endpoint.region)
    found: list[S3Object] = []
    token: str | None = None
    while True:
        query = {"list-type": "2", "prefix": loc.prefix}
        if token:
            query["continuation-token"] = token
        url = endpoint.url(loc.bucket, "", query)

        def page(url: str = url) -> bytes:
            resp = client.open("GET", url, {}, sign=sig)
            try:
                if resp.status != 200:
                    raise error_of(client, resp)
                return resp.read()
            finally:
                resp.release_conn()

        body = transfer.policy.run(page, client.what)
        try:
            root = ET.fromstring(body)
            found += [
                S3Object(_text(item, "Key"), int(_text(item, "Size") or 0))
                for item in root
                if item.tag == "Contents" or item.tag.endswith("}Contents")
            ]
        except (ET.ParseError, ValueError) as exc:
            raise ModelFetchError(f"{client.what}: unreadable listing: {exc}") from None
        token = _text(root, "NextContinuationToken")
        if _text(root, "IsTruncated") != "true" or not token:
            return found


def fetch_s3(loc: S3Location, staging: Staging, transfer: Transfer) -> None:
    endpoint = Endpoint.of(transfer.config)
    where = "" if transfer.config.endpoint_url is None else f" at {redact(endpoint.base)}"
    with transfer.client(loc.describe() + where) as client:
        objects = [
            o for o in list_objects(client, endpoint, loc, transfer)
            if not (o.key.endswith("/") and o.size == 0)
        ]  # fmt: skip
        if not objects:
            raise ModelNotFound(f"{client.what}: no objects under this prefix")
        staging.budget.check_declared(sum(o.size for o in objects), f" in {len(objects)} objects")
        sig = signer(transfer.config, endpoint.region)
        for obj in objects:
            rel = obj.key[len(loc.prefix) :]
            with staging.open(rel) as out:
                get_into(
                    client, endpoint.url(loc.bucket, obj.key), out, transfer.policy,
                    sign=sig, error=lambda r: error_of(client, r),
                )  # fmt: skip
                if out.size != obj.size:
                    raise InvalidModelContent(
                        f"{client.what}: {obj.key!r} changed during the fetch (listed "
                        f"{obj.size} bytes, got {out.size})"
                    )
