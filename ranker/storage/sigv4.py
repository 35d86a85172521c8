"""AWS Signature Version 4 for S3 requests (header form), from the published spec.

https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html: a
canonical request (method, URI-encoded path, sorted query, sorted lowercase headers,
the signed header names, the payload hash) is hashed into a string to sign, which a
key derived from the secret, the date, the region and the service signs with
HMAC-SHA256. The unit tests check it against the examples in that page.

A fetch only sends GETs with no body, so the payload hash defaults to that of the
empty string; ``payload_hash`` takes another (a body's sha256, or ``UNSIGNED-PAYLOAD``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
ALGORITHM = "AWS4-HMAC-SHA256"


def _uri_encode(value: str, *, slash: bool) -> str:
    # RFC 3986 unreserved characters stay; everything else is %XX (uppercase)
    return quote(value, safe="-_.~/" if slash else "-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    pairs = sorted(
        (_uri_encode(k, slash=False), _uri_encode(v, slash=False)) for k, v in params.items()
    )
    return "&".join(f"{k}={v}" for k, v in pairs)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    k = _hmac(f"AWS4{secret}".encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def sign(
    method: str,
    host: str,
    path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    *,
    access_key: str,
    secret_key: str,
    region: str,
    session_token: str | None = None,
    now: datetime | None = None,
    service: str = "s3",
    payload_hash: str = EMPTY_SHA256,
) -> dict[str, str]:
    """The headers to send: ``headers`` plus Host, x-amz-date, x-amz-content-sha256,
    the session token if any, and Authorization. ``path`` is the decoded object path
    (``/bucket/key`` or ``/key``); it is encoded here once, as S3 wants."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    out = {**headers, "host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    if session_token:
        out["x-amz-security-token"] = session_token
    canon = {k.lower(): " ".join(str(v).split()) for k, v in out.items()}
    signed = ";".join(sorted(canon))
    canonical_request = "\n".join(
        [
            method,
            _uri_encode(path, slash=True),
            canonical_query(params),
            "".join(f"{k}:{canon[k]}\n" for k in sorted(canon)),
            signed,
            payload_hash,
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    signature = hmac.new(
        signing_key(secret_key, date, region, service), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    out["authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    return out
