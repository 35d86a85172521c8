"""The experiment's entry point: sticky assignment of users to variants.

bucket = routing_bucket(salt, user_id) in [0, 10000); each variant owns weight% x 100
buckets. Which ones is the config's stored allocation (``buckets`` per variant, kept by
the operator in the routing ConfigMap and updated by :func:`ranker.allocation.reallocate`,
so a weight change moves only the users it must, in A/B/n too). A config without
``buckets`` uses the fixed layout: contiguous ranges, control first, then the treatments
in config order. The hash is stable across processes and restarts.

The router forwards POST /rank and POST /feedback to one of the variant's
endpoints (round robin), adds the variant to the answer (the
``x-rankexp-variant`` header and a ``routed_variant`` field), and counts
``router_exposures_total{experiment, variant}`` per feed served. When the
variant's endpoints do not answer (refused, timeout, 5xx) the request goes to
control instead and ``router_fallbacks_total`` counts it.

The config is the routing ConfigMap's ``routing.json``; the file is polled and
a valid change is swapped in atomically, so requests in flight finish with the
config they started with. An invalid change is logged and ignored.

``GET /openapi.json`` describes all of it (:mod:`ranker.router_openapi`); request
bodies are bounded as :mod:`ranker.limits` says.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ranker.allocation import AllocationError, Range, layout, owners, validate
from ranker.api import UserId, validation_error_body
from ranker.asgi import Receive, Scope, Send
from ranker.hashing import routing_bucket
from ranker.limits import BodyRejectedError, ClientGoneError, Limits, read_body
from ranker.router_openapi import router_openapi
from ranker.upstream import Reply, Upstream, UpstreamError

log = logging.getLogger("ranker.router")


class VariantRoute(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, Field(min_length=1, max_length=63)]
    weight: Annotated[int, Field(ge=0, le=100)]
    endpoints: list[str] = Field(default_factory=list)
    #: Owned routing buckets as half-open [lo, hi) ranges (the stored allocation).
    buckets: list[Range] | None = None


class RoutingConfig(BaseModel):
    """The routing ConfigMap's ``routing.json``."""

    model_config = ConfigDict(extra="ignore")

    experiment: Annotated[str, Field(min_length=1)]
    salt: str = ""
    control: str
    variants: Annotated[list[VariantRoute], Field(min_length=1)]

    @model_validator(mode="after")
    def _check(self) -> RoutingConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique: {names}")
        if self.control not in names:
            raise ValueError(f"control {self.control!r} names no variant of {names}")
        total = sum(v.weight for v in self.variants)
        if total != 100:
            raise ValueError(f"weights must sum to 100, got {total}")
        given = [v.buckets is not None for v in self.variants]
        if any(given):
            if not all(given):
                raise ValueError("buckets must be given for every variant or for none")
            try:
                validate(
                    {v.name: v.buckets or [] for v in self.variants},
                    {v.name: v.weight for v in self.variants},
                )
            except AllocationError as exc:
                raise ValueError(str(exc)) from None
        return self

    def allocation(self) -> dict[str, list[Range]]:
        """The stored allocation, or the fixed layout when the config has none."""
        if self.variants[0].buckets is None:
            ordered = self.ordered()
            return layout([v.name for v in ordered], {v.name: v.weight for v in ordered})
        return {v.name: list(v.buckets or []) for v in self.variants}

    def ordered(self) -> list[VariantRoute]:
        """Control first, then the treatments in config order: the range layout."""
        ctl = [v for v in self.variants if v.name == self.control]
        return ctl + [v for v in self.variants if v.name != self.control]


class _Routed(BaseModel):
    """What the router reads of a /rank or /feedback body; the ranker validates the rest.

    Parsed by pydantic, whose JSON parser stops at 200 levels of nesting (the standard
    library's raises RecursionError)."""

    model_config = ConfigDict(extra="ignore")

    user_id: UserId


#: path -> the one method it answers; any other method is a 405
_METHODS = {
    "/rank": "POST", "/feedback": "POST", "/health": "GET", "/ready": "GET",
    "/config": "GET", "/metrics": "GET", "/openapi.json": "GET",
}  # fmt: skip


def load_config(path: Path) -> RoutingConfig:
    return RoutingConfig.model_validate_json(path.read_bytes())


@dataclass
class _Variant:
    name: str
    upstreams: list[Upstream]
    rr: Iterator[int] = field(default_factory=lambda: itertools.count())

    def pick(self) -> Upstream | None:
        if not self.upstreams:
            return None
        return self.upstreams[next(self.rr) % len(self.upstreams)]


class RoutingTable:
    """An immutable view of one config: assignment and upstreams."""

    def __init__(self, config: RoutingConfig, pool: dict[str, Upstream]) -> None:
        self.config = config
        self.salt = config.salt or config.experiment
        self.variants: list[_Variant] = []
        for v in config.ordered():
            ups = [pool.setdefault(u, Upstream(u)) for u in v.endpoints]
            self.variants.append(_Variant(v.name, ups))
        self.control = self.variants[0]
        self._owner = owners(config.allocation(), [v.name for v in self.variants])

    def assign(self, user_id: int | str) -> _Variant:
        return self.variants[self._owner[routing_bucket(self.salt, user_id)]]


def assign_variant(config: RoutingConfig, user_id: int | str) -> str:
    """The variant a user is routed to under ``config`` (no I/O)."""
    return RoutingTable(config, {}).assign(user_id).name


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.exposures = Counter(
            "router_exposures_total", "Feeds served, by the variant that served them",
            ["experiment", "variant"], registry=registry,
        )  # fmt: skip
        self.requests = Counter(
            "router_requests_total", "Requests by assigned variant, endpoint and final status",
            ["experiment", "variant", "endpoint", "code"], registry=registry,
        )  # fmt: skip
        self.fallbacks = Counter(
            "router_fallbacks_total", "Requests sent to control because the variant did not answer",
            ["experiment", "variant"], registry=registry,
        )  # fmt: skip
        self.weight = Gauge(
            "router_weight_percent", "Current traffic weight", ["experiment", "variant"],
            registry=registry,
        )  # fmt: skip
        self.reloads = Counter(
            "router_config_reloads_total", "Config reloads by result", ["result"],
            registry=registry,
        )  # fmt: skip


class Router:
    """A raw ASGI app (routing needs no framework, and the hot path is shorter)."""

    def __init__(
        self,
        config_path: Path,
        registry: CollectorRegistry | None = None,
        timeout: float = 2.0,
        poll_interval: float = 0.5,
        limits: Limits | None = None,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.config_path = config_path
        self.limits = limits if limits is not None else Limits()
        self._openapi = json.dumps(router_openapi(RoutingConfig, self.limits)).encode()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = RouterMetrics(self.registry)
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._pool: dict[str, Upstream] = {}
        self.table: RoutingTable | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._read_once = False
        self._watcher: asyncio.Task[None] | None = None
        self.load_error: str | None = None
        self.reload()

    # ------------------------------------------------------------------ config
    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.config_path)  # follows the ConfigMap's symlinks
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        stamp = self._file_stamp()
        if stamp == self._stamp and self._read_once:
            return False  # unchanged (a missing file too: counted once, not every poll)
        self._read_once = True
        self._stamp = stamp
        try:
            config = load_config(self.config_path)
        except (OSError, ValidationError, ValueError) as exc:
            self.load_error = f"{self.config_path}: {exc}"
            self.metrics.reloads.labels("error").inc()
            log.error("routing config rejected, keeping the previous one: %s", self.load_error)
            return False
        table = RoutingTable(config, self._pool)
        for v in config.variants:
            self.metrics.weight.labels(config.experiment, v.name).set(v.weight)
            self.metrics.exposures.labels(config.experiment, v.name)  # series exist from 0
        self.table = table  # atomic swap: requests in flight keep the old table
        self.load_error = None
        self.metrics.reloads.labels("ok").inc()
        log.info(
            "routing %s: %s",
            config.experiment,
            ", ".join(f"{v.name}={v.weight}% ({len(v.endpoints)} endpoints)"
                      for v in config.ordered()),
        )  # fmt: skip
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            self.reload()

    # --------------------------------------------------------------------- ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        method = scope["method"]
        if method == "POST" and path in ("/rank", "/feedback"):
            await self._forward(path, scope, receive, send)
        elif method == "GET" and path == "/metrics":
            await _respond(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode())
        elif method == "GET" and path == "/health":
            await _json(send, 200, {"status": "ok"})
        elif method == "GET" and path == "/ready":
            if self.table is None:
                await _json(send, 503, {"ready": False, "reason": self.load_error})
            else:
                await _json(send, 200, {"ready": True, "experiment": self.table.config.experiment})
        elif method == "GET" and path == "/config":
            if self.table is None:
                await _json(send, 503, {"error": self.load_error})
            else:
                await _respond(send, 200, self.table.config.model_dump_json().encode())
        elif method == "GET" and path == "/openapi.json":
            await _respond(send, 200, self._openapi)
        elif path in _METHODS:
            allowed = _METHODS[path]
            await _respond(
                send, 405, json.dumps({"detail": f"{path} answers {allowed} only"}).encode(),
                extra=[(b"allow", allowed.encode())],
            )  # fmt: skip
        else:
            await _json(send, 404, {"detail": "not found"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self._watcher = asyncio.create_task(self._watch())
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self._watcher:
                    self._watcher.cancel()
                for up in self._pool.values():
                    up.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        table = self.table
        if table is None:
            await _json(send, 503, {"detail": f"no routing config: {self.load_error}"})
            return
        try:
            body = await read_body(scope, receive, self.limits)
        except BodyRejectedError as exc:
            await exc.respond(send)
            return
        except ClientGoneError:
            return
        try:
            user_id = _Routed.model_validate_json(body).user_id
        except ValidationError as exc:
            await _json(send, 422, validation_error_body(exc.errors(), prefix=("body",)))
            return
        exp = table.config.experiment
        assigned = table.assign(user_id)
        served, reply = await self._try(assigned, path, body)
        if reply is None and assigned is not table.control:
            self.metrics.fallbacks.labels(exp, assigned.name).inc()
            served, reply = await self._try(table.control, path, body)
        endpoint = path[1:]
        if reply is None:
            self.metrics.requests.labels(exp, assigned.name, endpoint, "502").inc()
            await _json(
                send, 502, {"detail": f"no endpoint of {assigned.name!r} or control answered"}
            )
            return
        self.metrics.requests.labels(exp, assigned.name, endpoint, str(reply.status)).inc()
        if endpoint == "rank" and reply.status == 200:
            self.metrics.exposures.labels(exp, served.name).inc()
        out = reply.body
        if out[:1] == b"{" and reply.status < 300:
            tag = b'{"routed_variant":' + json.dumps(served.name).encode()
            out = tag + (b"," if out[1:2] != b"}" else b"") + out[1:]
        await _respond(send, reply.status, out, reply.content_type,
                       [(b"x-rankexp-variant", served.name.encode())])  # fmt: skip

    async def _try(
        self, variant: _Variant, path: str, body: bytes
    ) -> tuple[_Variant, Reply | None]:
        up = variant.pick()
        if up is None:
            return variant, None
        try:
            reply = await up.post(path, body, self.timeout)
        except UpstreamError as exc:
            log.warning("variant %s did not answer: %s", variant.name, exc)
            return variant, None
        if reply.status >= 500:
            return variant, None
        return variant, reply


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, obj: Any) -> None:
    await _respond(send, status, json.dumps(obj).encode())
