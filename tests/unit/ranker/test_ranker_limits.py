"""ranker.protocol.limits in process: the body size bound, the defaults, how both servers get
them. The time bounds live in uvicorn's protocol: tests/integration/ranker drives them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ranker.cli import build_parser
from ranker.protocol.http_guard import GuardedHttpToolsProtocol
from ranker.protocol.limits import (
    BodyLimit,
    BodyRejectedError,
    ClientGoneError,
    Limits,
    from_args,
    read_body,
    uvicorn_options,
)

Message = dict[str, Any]


def _receiver(*messages: Message, then_wait: bool = False) -> Callable[[], Awaitable[Message]]:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then_wait:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return receive


def _scope(length: int | None = None) -> dict[str, Any]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http", "method": "POST", "path": "/rank", "headers": headers}


def _chunk(body: bytes, more: bool = False) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def _read(scope: dict[str, Any], receive: Any, limits: Limits) -> bytes:
    return asyncio.run(read_body(scope, receive, limits))


def test_the_defaults() -> None:
    d = Limits()
    assert (d.max_body_bytes, d.max_head_bytes) == (65536, 16384)
    assert (d.client_timeout, d.keep_alive, d.max_connections) == (10.0, 5, 1024)
    for command in (["serve", "--model", "m"], ["route", "--config", "c"]):
        assert from_args(build_parser().parse_args(command)) == d
    args = build_parser().parse_args(
        ["route", "--config", "c", "--max-body-bytes", "10", "--client-timeout", "0.5",
         "--max-connections", "3"]
    )  # fmt: skip
    assert from_args(args) == Limits(max_body_bytes=10, client_timeout=0.5, max_connections=3)
    with pytest.raises(ValueError):
        Limits(client_timeout=0)
    with pytest.raises(ValueError):
        Limits(max_connections=0)


def test_uvicorn_gets_the_connection_limits() -> None:
    limits = Limits(client_timeout=3.0, max_connections=7)
    options = uvicorn_options(limits)
    assert options["limit_concurrency"] == 7 and options["timeout_keep_alive"] == 5
    assert issubclass(options["http"], GuardedHttpToolsProtocol)
    assert options["http"].limits is limits
    assert GuardedHttpToolsProtocol.limits == Limits()  # the base class is left alone


def test_a_body_within_the_limit_is_read_whole() -> None:
    limits = Limits(max_body_bytes=10)
    assert _read(_scope(10), _receiver(_chunk(b"0123456789")), limits) == b"0123456789"
    parts = _receiver(_chunk(b"01234", True), _chunk(b"", True), _chunk(b"56789"))
    assert _read(_scope(), parts, limits) == b"0123456789"


def test_a_declared_oversized_body_is_413_before_any_of_it_is_read() -> None:
    calls = []

    async def receive() -> Message:
        calls.append(1)
        return _chunk(b"x")

    with pytest.raises(BodyRejectedError) as err:
        _read(_scope(11), receive, Limits(max_body_bytes=10))
    assert err.value.status == 413 and "11 bytes" in err.value.detail and not calls


def test_an_undeclared_oversized_body_is_413_at_the_first_byte_over() -> None:
    receive = _receiver(_chunk(b"0123456", True), _chunk(b"7890", True), then_wait=True)
    with pytest.raises(BodyRejectedError) as err:
        _read(_scope(), receive, Limits(max_body_bytes=10))
    assert err.value.status == 413


def test_a_client_gone_mid_body_is_no_one_to_answer() -> None:
    with pytest.raises(ClientGoneError):
        _read(_scope(), _receiver(_chunk(b"{", True)), Limits())


def test_the_middleware_answers_or_hands_the_body_on() -> None:
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((await receive())["body"])
        assert (await receive())["type"] == "http.disconnect"  # then the real receive

    def run(scope: dict[str, Any], receive: Any) -> list[Message]:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        asyncio.run(BodyLimit(app, Limits(max_body_bytes=4))(scope, receive, send))
        return sent

    assert run(_scope(), _receiver(_chunk(b"ab", True), _chunk(b"cd"))) == []
    assert seen == [b"abcd"]
    sent = run(_scope(5), _receiver())
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert seen == [b"abcd"]  # the app never saw it
