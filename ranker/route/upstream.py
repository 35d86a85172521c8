"""A small pooled HTTP/1.1 client for the router's hot path.

General-purpose clients (httpx, aiohttp) cost several times more CPU per
request than the forwarding itself; the router only ever POSTs small JSON
bodies to ranker endpoints that answer with a Content-Length (or chunked)
body, so keep-alive connections over asyncio streams are all it needs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit


class UpstreamError(Exception):
    """The endpoint did not answer: refused, reset, timed out or malformed."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: bytes


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Upstream:
    """Keep-alive connections to one endpoint (``http://host:port``)."""

    def __init__(self, url: str, max_idle: int = 256) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"endpoint must be http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.max_idle = max_idle
        self._idle: list[_Conn] = []
        self._host_header = f"{self.host}:{self.port}".encode()

    async def post(self, path: str, body: bytes, timeout: float) -> Reply:
        try:
            return await asyncio.wait_for(self._post(path, body), timeout)
        except TimeoutError as exc:
            raise UpstreamError(f"{self.url}{path}: timed out after {timeout} s") from exc

    async def _post(self, path: str, body: bytes) -> Reply:
        head = (
            b"POST " + path.encode() + b" HTTP/1.1\r\nhost: " + self._host_header
            + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n"
        )  # fmt: skip
        while self._idle:
            conn = self._idle.pop()
            try:
                return await self._exchange(conn, head + body, reused=True)
            except _StaleConnection:
                continue  # the server closed an idle connection: try the next one
        try:
            conn = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise UpstreamError(f"{self.url}: {exc}") from exc
        try:
            return await self._exchange(conn, head + body, reused=False)
        except _StaleConnection as exc:
            raise UpstreamError(f"{self.url}{path}: connection closed without a reply") from exc

    async def _exchange(self, conn: _Conn, request: bytes, *, reused: bool) -> Reply:
        reader, writer = conn
        try:
            writer.write(request)
            status_line = await reader.readline()
            if not status_line:
                # EOF before any byte of a reply: the request was not processed
                raise _StaleConnection
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise UpstreamError(f"{self.url}: malformed status line {status_line!r}")
            status = int(parts[1])
            length = -1
            chunked = False
            keep_alive = True
            content_type = b"application/json"
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                value = value.strip()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif name == b"connection" and value.lower() == b"close":
                    keep_alive = False
                elif name == b"content-type":
                    content_type = value
            if chunked:
                body = await self._read_chunked(reader)
            elif length >= 0:
                body = await reader.readexactly(length)
            else:
                body = await reader.read()
                keep_alive = False
        except _StaleConnection:
            writer.close()
            raise
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            writer.close()
            if reused and isinstance(exc, ConnectionResetError | BrokenPipeError):
                raise _StaleConnection from exc
            raise UpstreamError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            writer.close()  # cancelled (timeout): the connection is in an unknown state
            raise
        if keep_alive and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            writer.close()
        return Reply(status, body, content_type)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        out = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class _StaleConnection(Exception):
    pass
