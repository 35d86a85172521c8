"""Bounds on what one client can make `ranker serve` or `ranker route` hold.

Each bound sits in the layer that sees the thing it bounds:

- the connection and the bytes on it are uvicorn's, so those bounds are in uvicorn's
  HTTP protocol (:mod:`ranker.protocol.http_guard`): a request head over ``max_head_bytes`` is
  answered 431; a head not complete ``client_timeout`` seconds after its first byte (a
  new connection's: after it opens) is answered 408, and so is a body not complete
  ``client_timeout`` seconds after its head; a connection that sends nothing is closed
  after that time; an idle keep-alive connection is closed after ``keep_alive`` seconds;
  a request arriving while ``max_connections`` connections are open is answered 503;
- the body's size is the app's: :func:`read_body` (the router) and :class:`BodyLimit`
  (the ranker) answer 413 to a body over ``max_body_bytes``, at once when its
  Content-Length says so (before reading any of it), else at the first byte over.

408, 413 and 431 close the connection. A request the ranker serves is timed from the
moment its whole body is in memory, so a slow client cannot inflate
``ranking_latency_seconds``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from ranker.protocol.asgi import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Limits:
    #: /rank and /feedback bodies are under 200 bytes; 64 KiB x max_connections bounds
    #: the request bodies a process can be made to buffer at 64 MiB
    max_body_bytes: int = 64 * 1024
    #: request line plus headers (as Node.js and uvicorn's h11 parser)
    max_head_bytes: int = 16 * 1024
    #: seconds for a request's head, and then for its body, to arrive
    client_timeout: float = 10.0
    #: seconds an idle keep-alive connection stays open (uvicorn's default)
    keep_alive: int = 5
    #: open connections (idle keep-alive ones and the new one included) at which a
    #: request is answered 503 (uvicorn's limit_concurrency)
    max_connections: int = 1024

    def __post_init__(self) -> None:
        if min(self.max_body_bytes, self.max_head_bytes, self.keep_alive) < 0:
            raise ValueError("limits must be >= 0")
        if self.client_timeout <= 0 or self.max_connections < 1:
            raise ValueError("client_timeout must be > 0 and max_connections >= 1")

    def describe(self) -> str:
        """The limits for an OpenAPI description (markdown)."""
        return (
            f"Limits: a request body over {self.max_body_bytes} bytes is answered 413, a "
            f"request head over {self.max_head_bytes} bytes 431; a head, and then a body, "
            f"must each arrive within {self.client_timeout:g} s, else 408 (408, 413 and 431 "
            "close the connection); idle keep-alive connections close after "
            f"{self.keep_alive} s; a request arriving while {self.max_connections} "
            "connections are open is answered 503."
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Limits()
    p.add_argument(
        "--max-body-bytes", type=int, default=d.max_body_bytes, metavar="N",
        help=f"larger request bodies are answered 413 (default {d.max_body_bytes})",
    )  # fmt: skip
    p.add_argument(
        "--client-timeout", type=float, default=d.client_timeout, metavar="S",
        help="a request's head, then its body, must arrive within S seconds, else 408 "
        f"(default {d.client_timeout:g})",
    )  # fmt: skip
    p.add_argument(
        "--max-connections", type=int, default=d.max_connections, metavar="N",
        help="a request arriving while N connections are open (its own included) is "
        f"answered 503 (default {d.max_connections})",
    )  # fmt: skip


def from_args(args: argparse.Namespace) -> Limits:
    return Limits(
        max_body_bytes=args.max_body_bytes,
        client_timeout=args.client_timeout,
        max_connections=args.max_connections,
    )


def uvicorn_options(limits: Limits) -> dict[str, Any]:
    """``uvicorn.run`` keyword arguments that enforce the connection-level limits."""
    from ranker.protocol.http_guard import protocol_class

    return {
        "http": protocol_class(limits),
        "timeout_keep_alive": limits.keep_alive,
        "limit_concurrency": limits.max_connections,
    }


class BodyRejectedError(Exception):
    """The request body is over the limit; :meth:`respond` answers it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    async def respond(self, send: Send) -> None:
        await send_error(send, self.status, self.detail)


class ClientGoneError(Exception):
    """The client disconnected (or was disconnected by a timeout) before its body was
    complete: there is no one to answer."""


async def send_error(send: Send, status: int, detail: str) -> None:
    """A JSON ``{"detail"}`` answer that closes the connection (the rest of the
    request, if any, is never read)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser rejects these before the app runs
    return None


async def read_body(scope: Scope, receive: Receive, limits: Limits) -> bytes:
    """The whole request body, up to ``limits.max_body_bytes``.

    Raises :class:`BodyRejectedError` (413) or :class:`ClientGoneError`. The time it
    may take is bounded below, in :mod:`ranker.protocol.http_guard` (an app-level timer would
    cost every request a few microseconds; that one is armed only for a slow one).
    """
    cap = limits.max_body_bytes
    length = _content_length(scope)
    if length is not None and length > cap:
        raise BodyRejectedError(413, f"request body of {length} bytes; the limit is {cap}")
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGoneError
        chunk: bytes = msg.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise BodyRejectedError(413, f"request body over {cap} bytes")
        chunks.append(chunk)
        if not msg.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BodyLimit:
    """ASGI middleware: reads each request body up to the size limit, then hands the
    app the body in one message."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.limits)
        except BodyRejectedError as exc:
            await exc.respond(send)
            return
        except ClientGoneError:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # from here on only http.disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
