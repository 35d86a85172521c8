"""HTTP for the https:// and s3:// sources: one urllib3 pool, the CA bundle, timeouts,
what a failure means, and a resumable streaming GET into a staged file.

- TLS trusts the system's CAs plus ``ca.crt`` from the credentials; a certificate
  that does not verify is :class:`~ranker.storage.errors.ModelTLSError` at once (no
  retry can fix it).
- ``timeout`` bounds the connect and every read (a server that accepts and then says
  nothing fails after ``timeout`` seconds, not never).
- urllib3's own retries and redirects are off: :class:`~ranker.storage.retry.RetryPolicy`
  retries (:class:`~ranker.storage.retry.Transient`: connection errors, timeouts, 5xx,
  408, 429), and :meth:`Client.open` follows redirects itself so that headers from the
  credentials are never sent to another host.
- :func:`get_into` streams a body in 1 MiB chunks (memory flat whatever the size);
  when a transfer breaks, the next try asks for the rest (``Range``, with ``If-Match``
  on the ETag so a changed object starts over rather than splicing two versions).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from ranker.storage.credentials import StorageConfig
from ranker.storage.errors import (
    ModelAccessDenied,
    ModelCredentialsInvalid,
    ModelFetchError,
    ModelNotFound,
    ModelTLSError,
)
from ranker.storage.retry import RetryPolicy, Transient
from ranker.storage.staging import StagedFile

CHUNK = 1 << 20
MAX_REDIRECTS = 5
#: statuses worth another try: a timeout, throttling, the server's trouble
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

Response = urllib3.BaseHTTPResponse
#: signs or decorates the headers of one request to a URL (S3's SigV4)
Signer = Callable[[str, str, dict[str, str]], dict[str, str]]


@dataclass(frozen=True)
class Transfer:
    """How a fetch talks to servers: credentials and CA, per-operation timeout, retries."""

    config: StorageConfig
    timeout: float
    policy: RetryPolicy

    def client(self, what: str) -> Client:
        return Client(self.config, self.timeout, what)


def _ssl_context(config: StorageConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if config.ca_pem:
        try:
            ctx.load_verify_locations(cadata=config.ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise ModelCredentialsInvalid(
                f"ca.crt in {config.source} is not a PEM CA bundle: {exc}"
            ) from None
    return ctx


def _cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return e
        todo += [e.__cause__, e.__context__]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
        todo.append(getattr(e, "reason", None))
    return None


def describe_failure(exc: BaseException, timeout: float) -> Transient:
    """A urllib3 failure as a :class:`Transient` with a short reason."""
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    # NewConnectionError subclasses ConnectTimeoutError (urllib3's compatibility): first
    if isinstance(exc, NameResolutionError):
        return Transient("cannot resolve the host name")
    if isinstance(exc, NewConnectionError):
        cause = exc.__cause__
        detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else "failed"
        return Transient(f"cannot connect: {detail}")
    if isinstance(exc, ConnectTimeoutError):
        return Transient(f"no connection within {timeout:g} s", timeout=True)
    if isinstance(exc, ReadTimeoutError):
        return Transient(f"no answer within {timeout:g} s", timeout=True)
    if isinstance(exc, ProtocolError):
        inner = exc.args[1] if len(exc.args) > 1 else exc
        if isinstance(inner, TimeoutError):
            return Transient(f"no answer within {timeout:g} s", timeout=True)
        return Transient(f"connection broken: {type(inner).__name__}")
    if isinstance(exc, TimeoutError):
        return Transient(f"no answer within {timeout:g} s", timeout=True)
    return Transient(f"connection failed: {type(exc).__name__}")


class Client:
    """One pool for a fetch; ``what`` names the location in every message."""

    def __init__(self, config: StorageConfig, timeout: float, what: str) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.config = config
        self.timeout = timeout
        self.what = what
        self._plain = self._manager()
        # made at the first https:// request: loading the system's CAs takes ~50 ms,
        # half of a 10 MB fetch from an in-cluster http:// endpoint
        self._tls: urllib3.PoolManager | None = None

    def _manager(self, ssl_context: ssl.SSLContext | None = None) -> urllib3.PoolManager:
        extra = {"ssl_context": ssl_context} if ssl_context else {}
        return urllib3.PoolManager(
            num_pools=4,
            maxsize=2,
            timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
            retries=False,
            **extra,  # type: ignore[arg-type]
        )

    def pool(self, url: str) -> urllib3.PoolManager:
        if urlsplit(url).scheme.lower() != "https":
            return self._plain
        if self._tls is None:
            self._tls = self._manager(_ssl_context(self.config))
        return self._tls

    def close(self) -> None:
        self._plain.clear()
        if self._tls is not None:
            self._tls.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def open(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        sign: Signer | None = None,
        follow_redirects: bool = False,
    ) -> Response:
        """The response with its body unread; Transient on connection failures and
        timeouts, ModelTLSError on a certificate that does not verify."""
        base = dict(headers)
        origin = urlsplit(url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            sent = sign(method, url, dict(base)) if sign else dict(base)
            try:
                resp = self.pool(url).request(
                    method, url, headers=sent, preload_content=False, redirect=False,
                    retries=False, decode_content=True,
                )  # fmt: skip
            except (SSLError, ssl.SSLError) as exc:
                cert = _cert_error(exc)
                if cert is not None:
                    raise ModelTLSError(
                        f"{self.what}: the TLS certificate of {urlsplit(url).netloc} does not "
                        f"verify ({cert.verify_message}); give the server's CA as ca.crt in "
                        "the credentials directory"
                    ) from None
                raise describe_failure(exc, self.timeout) from None
            except (HTTPError, OSError) as exc:
                raise describe_failure(exc, self.timeout) from None
            location = resp.headers.get("Location")
            if not follow_redirects or resp.status not in (301, 302, 303, 307, 308):
                return resp
            if not location:
                return resp
            resp.drain_conn()
            resp.release_conn()
            previous, url = url, urljoin(url, location)
            if urlsplit(previous).scheme == "https" and urlsplit(url).scheme != "https":
                raise ModelFetchError(f"{self.what}: redirected from https to plain http")
            if urlsplit(url).netloc != origin:
                base = {k: v for k, v in base.items() if k not in self.config.headers}
        raise ModelFetchError(f"{self.what}: more than {MAX_REDIRECTS} redirects")

    def status_error(self, resp: Response, detail: str = "") -> Exception:
        """The error for a response that is not a success: Transient for what may pass."""
        status = resp.status
        detail = self.config.scrub(detail)
        text = f"{self.what}: HTTP {status}{' ' + detail if detail else ''}"
        if status in RETRY_STATUSES or status >= 500:
            return Transient(f"HTTP {status}{' ' + detail if detail else ''}",
                             retry_after=retry_after(resp))  # fmt: skip
        if status in (401, 403):
            return ModelAccessDenied(text)
        if status in (404, 410):
            return ModelNotFound(text)
        return ModelFetchError(text)


def retry_after(resp: Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


def get_into(
    client: Client,
    url: str,
    out: StagedFile,
    policy: RetryPolicy,
    *,
    headers: Mapping[str, str] | None = None,
    sign: Signer | None = None,
    follow_redirects: bool = False,
    error: Callable[[Response], Exception] | None = None,
    on_response: Callable[[Response], None] = lambda r: None,
) -> None:
    """Stream ``url``'s body into ``out``, resuming after a broken transfer.

    ``error`` turns a failed response into the exception to raise (default
    :meth:`Client.status_error`); ``on_response`` sees the first successful response
    (e.g. to check its declared size) before any byte is written."""
    etag: str | None = None
    seen_response = False

    def attempt() -> None:
        nonlocal etag, seen_response
        sent = {"Accept-Encoding": "identity", **(headers or {})}
        resuming = out.size > 0
        if resuming:
            sent["Range"] = f"bytes={out.size}-"
            if etag:
                sent["If-Match"] = etag
        resp = client.open("GET", url, sent, sign=sign, follow_redirects=follow_redirects)
        try:
            if resp.status == 412 and resuming:  # the object changed: start over
                out.reset()
                raise Transient("the object changed during the transfer")
            if resuming and resp.status == 206:
                start = _range_start(resp.headers.get("Content-Range", ""))
                if start != out.size:
                    out.reset()
                    raise Transient("the server resumed at the wrong offset")
            elif resp.status == 200:
                if resuming:  # the server ignored Range: take the whole body again
                    out.reset()
            else:
                raise (error or client.status_error)(resp)
            if not seen_response:
                on_response(resp)
                seen_response = True
            etag = etag or resp.headers.get("ETag")
            _copy(resp, out, client.timeout)
        finally:
            resp.release_conn()

    policy.run(attempt, client.what)


def _range_start(content_range: str) -> int | None:
    # "bytes 100-199/200"
    try:
        unit, rest = content_range.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


class BodyReader:
    """A response body as a file to read from, whose read failures (a reset, a stall past
    the timeout) are :class:`Transient`: so a consumer that also writes to disk (tarfile)
    lets the disk's own errors through unchanged."""

    def __init__(self, resp: Response, timeout: float) -> None:
        self._resp = resp
        self._timeout = timeout
        self.count = 0  # bytes read so far

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._resp.read(n if n >= 0 else None)
        except (HTTPError, OSError) as exc:
            t = describe_failure(exc, self._timeout)
            raise Transient(t.reason, timeout=t.timeout, progress=self.count > 0) from None
        self.count += len(data)
        return data


def _copy(resp: Response, out: StagedFile, timeout: float) -> None:
    body = BodyReader(resp, timeout)
    while chunk := body.read(CHUNK):
        out.write(chunk)
