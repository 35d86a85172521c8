"""Hostile clients against a real ranker and a real router.

(ranker.protocol.limits, ranker.protocol.http_guard)

Each test speaks raw HTTP over a socket where it must (a byte at a time, a lying
Content-Length), and checks after each hostile request that the process still serves a
normal /rank.
"""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from ranker.protocol.limits import Limits

if TYPE_CHECKING:
    from tests.integration.ranker.conftest import DataPath

pytestmark = pytest.mark.integration

MAX_BODY = Limits().max_body_bytes  # the data path runs with these two defaults
MAX_HEAD = Limits().max_head_bytes
PROCESSES = ["ranker", "router"]


def _url(data_path: DataPath, process: str) -> str:
    return data_path.treatment if process == "ranker" else data_path.router


def _connect(url: str, timeout: float = 10.0) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool = False  # the server closed the connection after it
    seconds: float = 0.0


def _read_reply(sock: socket.socket, start: float) -> Reply | None:
    """One HTTP response, or None when the connection closed before any byte of one."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None if not data else Reply(0, {}, data, True, time.monotonic() - start)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    closed = headers.get("connection") == "close"
    if closed:
        sock.settimeout(2.0)
        try:
            closed = sock.recv(1) == b""
        except OSError:
            closed = True
    return Reply(int(lines[0].split()[1]), headers, body, closed, time.monotonic() - start)


def _exchange(url: str, raw: bytes) -> Reply | None:
    with _connect(url) as sock:
        start = time.monotonic()
        sock.sendall(raw)
        return _read_reply(sock, start)


def _post_head(path: str, length: int | None = None, chunked: bool = False) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
    if chunked:
        head += "transfer-encoding: chunked\r\n"
    elif length is not None:
        head += f"content-length: {length}\r\n"
    return (head + "\r\n").encode()


def _post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), json.loads(exc.read())


def _serves(url: str, user_id: int = 5) -> None:
    """A normal /rank answers 200 with a feed, promptly."""
    start = time.monotonic()
    code, body = _post(url + "/rank", json.dumps({"user_id": user_id, "num_items": 3}).encode())
    assert code == 200 and len(body["items"]) == 3, body  # type: ignore[arg-type]
    assert time.monotonic() - start < 2.0


# ----------------------------------------------------------------------------- body size
@pytest.mark.parametrize("process", PROCESSES)
def test_an_oversized_body_is_413_before_it_is_read(process: str, data_path: DataPath) -> None:
    url = _url(data_path, process)
    # Content-Length says 10 MiB, 1 KiB follows: answered at once, the rest never awaited
    reply = _exchange(url, _post_head("/rank", 10 * 1024 * 1024) + b"[" * 1024)
    assert reply is not None and reply.status == 413, reply
    assert reply.seconds < 1.5 and reply.closed  # not waiting for the rest
    assert str(MAX_BODY) in json.loads(reply.body)["detail"]
    _serves(url)

    # no Content-Length (chunked): counted as it arrives, 413 at the first byte over
    chunk = b"%x\r\n%s\r\n" % (MAX_BODY + 1, b" " * (MAX_BODY + 1))
    reply = _exchange(url, _post_head("/rank", chunked=True) + chunk + b"0\r\n\r\n")
    assert reply is not None and reply.status == 413 and reply.closed, reply
    _serves(url)

    # exactly at the limit is served
    body = json.dumps({"user_id": 7, "num_items": 2}).encode()
    code, answer = _post(url + "/rank", body + b" " * (MAX_BODY - len(body)))
    assert code == 200 and len(answer["items"]) == 2  # type: ignore[arg-type]
    code, _ = _post(url + "/rank", body + b" " * (MAX_BODY - len(body) + 1))
    assert code == 413
    _serves(url)
    data_path.check_alive()


# --------------------------------------------------------------------------- deep JSON
@pytest.mark.parametrize("process", PROCESSES)
def test_deeply_nested_json_is_a_quick_4xx(process: str, data_path: DataPath) -> None:
    url = _url(data_path, process)
    cases = [
        (b"[" * 100_000, 413),  # 100k levels do not fit in the body limit
        (b"[" * 60_000, 422),  # 60k levels do: the JSON parser stops at 200
        (b'{"user_id": 1, "num_items": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", 422),
        (b'{"user_id": 1, "x": ' + b'{"a": ' * 2_000 + b"1" + b"}" * 2_001, 422),
    ]
    for body, want in cases:
        start = time.monotonic()
        code, answer = _post(url + "/rank", body)
        assert code == want, answer
        assert time.monotonic() - start < 1.5
        if want == 422:
            assert "body: invalid JSON (recursion limit exceeded" in str(answer["message"])
        _serves(url)
    data_path.check_alive()


# ---------------------------------------------------------------------------- head size
@pytest.mark.parametrize("process", PROCESSES)
def test_an_oversized_head_is_431(process: str, data_path: DataPath) -> None:
    url = _url(data_path, process)

    def get(header_bytes: int) -> Reply | None:
        pad = b"x-pad: " + b"a" * header_bytes + b"\r\n"
        return _exchange(url, b"GET /health HTTP/1.1\r\nhost: test\r\n" + pad + b"\r\n")

    small = get(MAX_HEAD - 1024)
    assert small is not None and small.status == 200
    big = get(MAX_HEAD + 1024)
    assert big is not None and big.status == 431 and big.closed, big
    _serves(url)

    # a header that never ends is cut off long before it could fill the memory
    sent = 0
    with _connect(url) as sock, pytest.raises(OSError):  # a reset or a broken pipe
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: test\r\nx-endless: ")
        chunk = b"a" * 65536
        while sent < 256 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
    assert sent < 64 * 1024 * 1024  # (what the kernel buffers took before the reset)
    _serves(url)
    data_path.check_alive()


# ------------------------------------------------------------------------- slow clients
@dataclass
class _Slow:
    """What a slow client saw: the reply (None: closed without one), and when."""

    reply: Reply | None
    seconds: float


def _slow_client(url: str, prefix: bytes, trickle: bytes, first: bytes = b"") -> _Slow:
    """Send ``first`` (a whole request) and read its answer; then send ``prefix`` at
    once, then ``trickle`` a byte every 50 ms until the server answers or closes; read
    the answer."""
    with _connect(url, timeout=30) as sock:
        if first:
            sock.sendall(first)
            reply = _read_reply(sock, time.monotonic())
            assert reply is not None and reply.status == 200 and not reply.closed
        start = time.monotonic()
        sock.sendall(prefix)
        for byte in trickle:
            if select.select([sock], [], [], 0.05)[0]:
                break  # an answer, or the close
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
        reply = _read_reply(sock, start)
        return _Slow(reply, time.monotonic() - start)


@pytest.mark.parametrize("process", PROCESSES)
def test_slow_clients_are_dropped_and_block_no_one(process: str, data_path: DataPath) -> None:
    url = _url(data_path, process)
    timeout = data_path.client_timeout
    clients = [
        # the head a byte at a time (it would take 10 s): 408 after the client timeout
        (b"", b"POST /rank HTTP/1.1\r\nhost: test\r\nx-slow: " + b"a" * 200),
        # the head at once, then the body a byte at a time, never complete: 408
        (_post_head("/rank", 10_000), b" " * 10_000),
        # connects and sends nothing: closed after the client timeout, without an answer
        (b"", b""),
        # a first request at once, then the next head a byte at a time: 408
        (
            b"",
            b"GET /health HTTP/1.1\r\nhost: test\r\nx-slow: " + b"a" * 200,
            b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n",
        ),
    ]
    with ThreadPoolExecutor(len(clients)) as pool:
        futures = [pool.submit(_slow_client, url, *c) for c in clients]
        # meanwhile everyone else is served as usual
        deadline = time.monotonic() + timeout * 0.75
        served = 0
        while time.monotonic() < deadline:
            _serves(url, user_id=served)
            served += 1
        assert served >= 5
        slow = [f.result(timeout=timeout + 15) for f in futures]
    for client in slow:
        assert timeout - 0.3 < client.seconds < timeout + 3.0, client
    head_reply, body_reply, idle_reply, second_reply = (c.reply for c in slow)
    for reply in (head_reply, second_reply):
        assert reply is not None and reply.status == 408 and reply.closed
        assert "request head not received" in json.loads(reply.body)["detail"]
    assert body_reply is not None and body_reply.status == 408 and body_reply.closed
    assert "request body not received" in json.loads(body_reply.body)["detail"]
    assert idle_reply is None  # closed without a word
    _serves(url)
    data_path.check_alive()


# ------------------------------------------------------------------ concurrent connections
@pytest.mark.parametrize("process", PROCESSES)
def test_connections_beyond_the_limit_are_503_until_they_go(
    process: str, data_path: DataPath
) -> None:
    url = _url(data_path, process)
    limit = data_path.max_connections
    held: list[socket.socket] = []
    try:
        # keep-alive connections, each served once and kept open
        over: Reply | None = None
        for _ in range(limit + 5):
            sock = _connect(url)
            held.append(sock)
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
            reply = _read_reply(sock, time.monotonic())
            assert reply is not None
            if reply.status == 503:
                over = reply
                break
            assert reply.status == 200
        assert over is not None, f"no 503 with {len(held)} connections open"
        # the limit counts every open connection, the new one included; a few others
        # (the router's pool to the ranker, probes) may hold a slot too
        assert limit - 5 <= len(held) <= limit, len(held)
        assert over.closed
        # held connections still work meanwhile
        held[0].sendall(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        again = _read_reply(held[0], time.monotonic())
        assert again is not None and again.status == 200
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:  # the server notices the closed connections within a loop iteration or so
        try:
            _serves(url)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    data_path.check_alive()


@pytest.mark.parametrize("process", PROCESSES)
def test_idle_connections_hold_the_slots_only_for_the_client_timeout(
    process: str, data_path: DataPath
) -> None:
    url = _url(data_path, process)
    held = [_connect(url) for _ in range(data_path.max_connections)]  # connect, send nothing
    try:
        time.sleep(0.2)
        reply = _exchange(url, b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        assert reply is not None and reply.status == 503
        time.sleep(data_path.client_timeout + 0.5)  # the idle ones are dropped
        _serves(url)
    finally:
        for sock in held:
            sock.close()
    data_path.check_alive()
