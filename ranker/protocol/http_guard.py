"""uvicorn's httptools protocol with bounds on the request head and on the time a request
takes to arrive (see :mod:`ranker.protocol.limits`).

uvicorn's httptools protocol bounds neither the size of a request head nor the time a
request takes to arrive: a client sending its headers or its body a byte at a time keeps
a connection (and a ``max_connections`` slot) forever, and one endless header grows in
memory. This subclass adds those bounds; everything else is uvicorn's.

Timers cost only where they are needed: a new connection gets one (it must send a head
in time), and a request gets one only when a read ends with its head or its body still
incomplete; a request that arrives in one read, as the router's and most clients' do,
never arms one.

It overrides parser callbacks of uvicorn's protocol (``data_received``,
``on_headers_complete``, ``on_message_complete``), so the integration tests that drive
real processes are what catch a uvicorn release that changes them.
"""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ranker.protocol.limits import Limits


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing a request already answered."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[Limits] = Limits()

    # Per connection: awaiting a head (from the start, and again after each request's
    # body) or reading a body; the bytes of the head so far; the one timer.
    _in_body = False
    _head_bytes = 0
    _timer: asyncio.TimerHandle | None = None
    _rejected = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if not self._in_body:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._rejected or self.transport.is_closing():
            return
        if self._in_body or self._head_bytes:  # a request is incomplete after this read
            if self._timer is None:
                self._arm()
            # Bytes of reads that did not complete the head: bounds a head that never
            # ends. A head that does complete is measured exactly in on_headers_complete.
            if not self._in_body and self._head_bytes > self.limits.max_head_bytes:
                self._reject(431, f"request head over {self.limits.max_head_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._disarm()
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_head_bytes:
            self._reject(431, f"request head over {self.limits.max_head_bytes} bytes")
            raise _Rejected
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_body = False
        self._head_bytes = 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._rejected:  # the parser error is our _Rejected: answered already
            return
        super().send_400_response(msg)

    # ------------------------------------------------------------------ internals
    def _arm(self) -> None:
        self._timer = self.loop.call_later(self.limits.client_timeout, self._timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        t = self.limits.client_timeout
        if self._in_body:
            self._reject(408, f"request body not received within {t:g} s")
        elif self._head_bytes:
            self._reject(408, f"request head not received within {t:g} s")
        else:
            self.transport.close()  # nothing was sent: nobody to answer

    def _reject(self, status: int, detail: str) -> None:
        """Answer ``status`` and close; the app, if it runs, sees a disconnect."""
        self._rejected = True
        self._disarm()
        cycle = self.cycle
        # Never interleave with a response being written: no answer is written while a
        # request waits in uvicorn's pipeline queue, or while the cycle responds.
        if not self.pipeline and (
            cycle is None
            or cycle.response_complete
            or (self._in_body and not cycle.response_started)
        ):
            body = json.dumps({"detail": detail}).encode()
            head = [f"HTTP/1.1 {status} {_PHRASES[status]}\r\n".encode()]
            head += [n + b": " + v + b"\r\n" for n, v in self.server_state.default_headers]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + body)
        self.transport.close()


_PHRASES = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def protocol_class(limits: Limits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.run(http=...)``, bound to ``limits``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
