"""ranker.storage.retry and .transport: what is retried (connection errors, timeouts, 5xx,
throttling) and what is not (403, 404), the backoff schedule, resuming a broken transfer.

The faults a real S3 server will not produce on demand (a 503 SlowDown, a 429 with
Retry-After, a body cut off halfway, a redirect to another host) come from a small HTTP
server in this file that injects them; the tests that use it say "injected" in their
names. Everything S3 does for real is in tests/integration/storage.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ranker.storage.credentials import StorageConfig
from ranker.storage.digest import digest_dir, digest_entries
from ranker.storage.errors import (
    ModelAccessDenied,
    ModelFetchTimeout,
    ModelNotFound,
    ModelRegistryUnavailable,
)
from ranker.storage.https import fetch_https
from ranker.storage.retry import RetryPolicy, Transient
from ranker.storage.s3 import Endpoint, error_of
from ranker.storage.staging import ByteBudget, Staging
from ranker.storage.transport import Client, Transfer, get_into
from ranker.storage.uri import HTTPSLocation

# ------------------------------------------------------------------ the backoff schedule


def _policy(retries: int = 4, seed: int = 1, **kw: float) -> tuple[RetryPolicy, list[float]]:
    slept: list[float] = []
    return RetryPolicy(retries=retries, rng=random.Random(seed), sleep=slept.append, **kw), slept


def test_delays_are_full_jitter_below_a_doubling_ceiling_and_the_cap() -> None:
    policy, _ = _policy(base=0.5, cap=4.0)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (12, 4.0)]:
        draws = [policy.delay(failures) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling  # spread over the whole range...
        assert min(draws) < 0.2 * ceiling  # ...not a fixed delay
        assert len(set(draws)) > 250  # jitter: pods that failed together do not retry together


def test_a_servers_retry_after_is_a_floor_under_the_cap() -> None:
    policy, _ = _policy(base=0.1, cap=5.0)
    assert all(policy.delay(1, retry_after=2.0) >= 2.0 for _ in range(50))
    assert policy.delay(1, retry_after=3600) == 5.0


def test_transient_failures_are_retried_then_succeed() -> None:
    policy, slept = _policy(retries=4)
    calls = iter([Transient("cannot connect: Connection refused")] * 3 + [None])

    def op() -> str:
        exc = next(calls)
        if exc:
            raise exc
        return "done"

    assert policy.run(op, "s3://b/p/") == "done"
    assert len(slept) == 3


def test_after_the_retries_a_server_that_stays_down_is_registry_unavailable() -> None:
    policy, slept = _policy(retries=3)
    tries = []

    def op() -> None:
        tries.append(1)
        raise Transient("cannot connect: Connection refused")

    with pytest.raises(ModelRegistryUnavailable, match=r"Connection refused \(4 tries") as caught:
        policy.run(op, "s3://b/p/ at http://127.0.0.1:1")
    assert not isinstance(caught.value, ModelFetchTimeout)
    assert len(tries) == 4 and len(slept) == 3
    assert caught.value.retryable


def test_a_timeout_on_every_try_is_a_fetch_timeout() -> None:
    policy, _ = _policy(retries=1)

    def op() -> None:
        raise Transient("no answer within 1 s", timeout=True)

    with pytest.raises(ModelFetchTimeout, match="no answer within 1 s"):
        policy.run(op, "x")


def test_a_final_answer_is_not_retried() -> None:
    policy, slept = _policy(retries=5)
    tries = []

    def op() -> None:
        tries.append(1)
        raise ModelAccessDenied("HTTP 403 AccessDenied")

    with pytest.raises(ModelAccessDenied):
        policy.run(op, "x")
    assert tries == [1] and slept == []


def test_progress_starts_the_count_of_tries_again() -> None:
    policy, slept = _policy(retries=1)
    # three tries that moved bytes before breaking, then one that did not: with one retry
    # allowed, only the fourth try exhausts it (the count restarts after each progress)
    outcomes = iter([True, True, True, False])

    def op() -> None:
        raise Transient("connection broken", progress=next(outcomes))

    with pytest.raises(ModelRegistryUnavailable, match="4 tries"):
        policy.run(op, "x")
    assert len(slept) == 3


# ------------------------------------------------ a server that injects faults on demand


@dataclass
class Faults:
    """What the injecting server does: one planned answer per request, then the body."""

    body: bytes = b""
    plan: list[str] = field(default_factory=list)  # "503-slowdown", "429", "403", "cut", ...
    seen: list[dict[str, str]] = field(default_factory=list)
    redirect_to: str = ""


def _handler(faults: Faults) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            faults.seen.append({k.lower(): v for k, v in self.headers.items()})
            step = faults.plan.pop(0) if faults.plan else "ok"
            body = faults.body
            if step == "503-slowdown":
                xml = b"<Error><Code>SlowDown</Code><Message>Please reduce</Message></Error>"
                self._send(503, xml)
            elif step == "429":
                self._send(429, b"", {"Retry-After": "0.05"})
            elif step in ("403", "404"):
                self._send(int(step), b"<Error><Code>AccessDenied</Code></Error>")
            elif step == "cut":  # promise the whole body, send half, hang up
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif step == "redirect":
                self._send(302, b"", {"Location": faults.redirect_to})
            else:
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].rstrip("-"))
                    self._send(206, body[start:], {
                        "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}",
                    })  # fmt: skip
                else:
                    self._send(200, body, {"ETag": '"v1"'})

    return Handler


@pytest.fixture
def fault_server() -> Iterator[Callable[[Faults], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(faults: Faults) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(faults))
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _get(url: str, tmp_path: Path, policy: RetryPolicy, config: StorageConfig | None = None,
         s3: bool = False, **kw: object) -> Staging:  # fmt: skip
    root = tmp_path / "staged"
    root.mkdir(exist_ok=True)
    staging = Staging(root, ByteBudget(None, "test"), "test")
    with (
        Client(config or StorageConfig(), 5.0, "test://object") as client,
        staging.open("f") as out,
    ):
        error = (lambda r: error_of(client, r)) if s3 else None
        get_into(client, url, out, policy, error=error, **kw)  # type: ignore[arg-type]
    return staging


BODY = bytes(range(256)) * 8192  # 2 MiB


def test_an_injected_503_slowdown_is_retried_until_the_object_comes(
    fault_server: Callable[[Faults], str], tmp_path: Path
) -> None:
    faults = Faults(body=BODY, plan=["503-slowdown", "503-slowdown"])
    url = fault_server(faults)
    policy, slept = _policy(retries=4)
    staging = _get(url + "/b/k", tmp_path, policy, s3=True)
    assert (staging.root / "f").read_bytes() == BODY
    assert len(faults.seen) == 3 and len(slept) == 2


def test_an_injected_throttle_that_never_ends_is_registry_unavailable(
    fault_server: Callable[[Faults], str], tmp_path: Path
) -> None:
    url = fault_server(Faults(body=BODY, plan=["503-slowdown"] * 10))
    policy, _ = _policy(retries=2)
    with pytest.raises(ModelRegistryUnavailable, match="503 SlowDown.*3 tries"):
        _get(url + "/b/k", tmp_path, policy, s3=True)


def test_an_injected_429_honours_retry_after(
    fault_server: Callable[[Faults], str], tmp_path: Path
) -> None:
    url = fault_server(Faults(body=BODY, plan=["429"]))
    policy, slept = _policy(retries=2, base=0.001)
    _get(url + "/k", tmp_path, policy)
    assert slept and slept[0] >= 0.05


@pytest.mark.parametrize(("step", "error"), [("403", ModelAccessDenied), ("404", ModelNotFound)])
def test_403_and_404_are_not_retried(
    fault_server: Callable[[Faults], str], tmp_path: Path, step: str, error: type[Exception]
) -> None:
    faults = Faults(body=BODY, plan=[step] * 5)
    url = fault_server(faults)
    policy, slept = _policy(retries=4)
    with pytest.raises(error):
        _get(url + "/k", tmp_path, policy)
    assert len(faults.seen) == 1 and slept == []


def test_a_transfer_cut_off_by_an_injected_fault_resumes_with_range(
    fault_server: Callable[[Faults], str], tmp_path: Path
) -> None:
    faults = Faults(body=BODY, plan=["cut"])
    url = fault_server(faults)
    policy, _ = _policy(retries=2)
    staging = _get(url + "/k", tmp_path, policy)
    assert (staging.root / "f").read_bytes() == BODY
    assert staging.entries[0].size == len(BODY)
    assert "range" not in faults.seen[0]
    assert faults.seen[1]["range"] == f"bytes={len(BODY) // 2}-"
    assert faults.seen[1]["if-match"] == '"v1"'


def test_an_injected_redirect_to_another_host_drops_the_secret_headers(
    fault_server: Callable[[Faults], str], tmp_path: Path
) -> None:
    target = Faults(body=BODY)
    other = fault_server(target).replace("127.0.0.1", "localhost")  # another host name
    origin = Faults(plan=["redirect"], redirect_to=other + "/k")
    url = fault_server(origin)
    config = StorageConfig(headers={"Authorization": "Bearer tok-123"})
    policy, _ = _policy()
    staging = _get(url + "/k", tmp_path, policy, config=config, headers=dict(config.headers),
                   follow_redirects=True)  # fmt: skip
    assert (staging.root / "f").read_bytes() == BODY
    assert origin.seen[0]["authorization"] == "Bearer tok-123"
    assert "authorization" not in target.seen[0]


def test_a_tar_stream_cut_off_by_an_injected_fault_is_unpacked_again_from_the_start(
    fault_server: Callable[[Faults], str], tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("a.bin", os.urandom(300_000)), ("b.bin", os.urandom(300_000))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    faults = Faults(body=buf.getvalue(), plan=["cut"])
    url = fault_server(faults)
    root = tmp_path / "staged"
    root.mkdir()
    staging = Staging(root, ByteBudget(None, "test"), "test")
    policy, slept = _policy(retries=2)
    # the https source over plain http: the location is built here, not parsed
    loc = HTTPSLocation(url=url + "/m.tar.gz", name="m.tar.gz")
    fetch_https(loc, staging, Transfer(StorageConfig(), 5.0, policy))
    assert sorted(e.path for e in staging.entries) == ["a.bin", "b.bin"]
    assert len(faults.seen) == 2 and "range" not in faults.seen[1] and len(slept) == 1
    assert digest_entries(staging.entries) == digest_dir(root)


@pytest.mark.parametrize(
    ("endpoint", "style", "region", "url"),
    [
        (None, None, None, "https://models.s3.us-east-1.amazonaws.com/v2/a%20b.onnx"),
        (None, "path", "eu-west-3", "https://s3.eu-west-3.amazonaws.com/models/v2/a%20b.onnx"),
        ("https://minio.example:443/", None, None, "https://minio.example/models/v2/a%20b.onnx"),
        ("http://127.0.0.1:9000", "virtual", None, "http://models.127.0.0.1:9000/v2/a%20b.onnx"),
    ],
)
def test_the_endpoint_addresses_the_bucket_by_path_or_host(
    endpoint: str | None, style: str | None, region: str | None, url: str
) -> None:
    config = StorageConfig(endpoint_url=endpoint, addressing_style=style, region=region)
    assert Endpoint.of(config).url("models", "v2/a b.onnx") == url
