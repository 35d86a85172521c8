"""Fault injection for tests (``ranker serve --inject-latency-ms / --inject-error-rate``).

TEST ONLY: it makes a ranker slow or failing on purpose, so the operator's guardrails and
the router's fallback can be exercised with real processes. It wraps ``POST /rank`` only
(feedback is never dropped, so click counts stay true) and sits inside the request
metrics, so injected latency shows in ``ranking_latency_seconds`` and injected errors
count as 500s in ``ranking_requests_total`` and ``ranking_errors_total``, as real ones
would.
"""

from __future__ import annotations

import asyncio
import json
import random

from ranker.protocol.asgi import ASGIApp, Receive, Scope, Send

_BODY = json.dumps({"detail": "injected fault (ranker serve --inject-error-rate)"}).encode()


class FaultInjector:
    """ASGI middleware: delay each /rank by ``latency_ms``; fail a share ``error_rate``."""

    def __init__(
        self,
        app: ASGIApp,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if latency_ms < 0 or not 0.0 <= error_rate <= 1.0:
            raise ValueError("need latency_ms >= 0 and 0 <= error_rate <= 1")
        self.app = app
        self.delay = latency_ms / 1000.0
        self.error_rate = error_rate
        self._random = random.Random(seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/rank" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error_rate and self._random.random() < self.error_rate:
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(_BODY)).encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": _BODY})
            return
        await self.app(scope, receive, send)
