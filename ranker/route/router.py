"""The experiment's entry point: sticky assignment of users to variants.

bucket = routing_bucket(salt, user_id) in [0, 10000); each variant owns weight% x 100
buckets. Which ones is the config's stored allocation (``buckets`` per variant, kept by
the operator in the routing ConfigMap and updated by :func:`ranker.route.allocation.reallocate`,
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

``GET /openapi.json`` describes all of it (:mod:`ranker.route.openapi`); request
bodies are bounded as :mod:`ranker.protocol.limits` says.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import from_json, to_json

from ranker.protocol.asgi import Receive, Scope, Send
from ranker.protocol.hashing import analysis_bucket, routing_bucket
from ranker.protocol.limits import BodyRejectedError, ClientGoneError, Limits, read_body
from ranker.protocol.schemas import UserId, validation_error_body
from ranker.route import attribution
from ranker.route.allocation import AllocationError, Range, layout, owners, validate
from ranker.route.interleave import TREATMENT, team_draft
from ranker.route.openapi import router_openapi
from ranker.route.upstream import Reply, Upstream, UpstreamError

log = logging.getLogger("ranker.route.router")


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
    #: interleaving: users routed to the treatment get control's and the treatment's
    #: feeds merged by team draft (exactly two variants)
    mode: Literal["ab", "interleaving"] = "ab"

    @model_validator(mode="after")
    def _check(self) -> RoutingConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique: {names}")
        if self.mode == "interleaving" and len(names) != 2:
            raise ValueError(f"interleaving takes exactly two variants, got {names}")
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


class _RankRouted(_Routed):
    num_items: int = 50


class _FeedbackRouted(_Routed):
    item_id: int | None = None
    event: str | None = None
    interleaving_token: str | None = None


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
        self.interleaving = config.mode == "interleaving"
        self.treatment = self.variants[1] if self.interleaving else None
        self.token_key = attribution.token_key(config.experiment, self.salt)

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
        self.interleaved = Counter(
            "router_interleaved_feeds_total", "Feeds merged by team draft",
            ["experiment"], registry=registry,
        )  # fmt: skip
        self.interleaving_fallbacks = Counter(
            "router_interleaving_fallbacks_total",
            "Interleaved requests served from one variant alone because the other did not "
            "answer in time (variant: the one missing; reason: error | slow)",
            ["experiment", "variant", "reason"], registry=registry,
        )  # fmt: skip
        self.interleaving_clicks = Counter(
            "router_interleaving_clicks_total",
            "Clicks on interleaved feeds by the team that contributed the item and result "
            "(counted | duplicate | late)",
            ["experiment", "team", "result"], registry=registry,
        )  # fmt: skip
        self.outcomes = Counter(
            "router_interleaving_outcomes_total",
            "Clicked interleaved feeds, closed after the attribution window, by winner "
            "(control | treatment | tie) and the user's 64-way analysis bucket",
            ["experiment", "winner", "bucket"], registry=registry,
        )  # fmt: skip
        self.clicking_users = Counter(
            "router_interleaving_clicking_users_total",
            "Users seen clicking an interleaved feed (per router process)",
            ["experiment"], registry=registry,
        )  # fmt: skip
        self.token_errors = Counter(
            "router_interleaving_token_errors_total",
            "Feedback refused (422) for an invalid interleaving_token", ["experiment"],
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
        interleaving_grace: float = 0.05,
        attribution_window: float = 60.0,
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
        #: after the first of two interleaved answers, how long to wait for the second
        self.interleaving_grace = interleaving_grace
        self._rng = random.Random()
        self._background: set[asyncio.Task[Any]] = set()
        self.book = attribution.OutcomeBook(
            self._count_outcome, self._count_clicking_user, window=attribution_window
        )
        self.reload()

    def _experiment(self) -> str:
        return self.table.config.experiment if self.table is not None else ""

    def _count_outcome(self, bucket: int, winner: str) -> None:
        self.metrics.outcomes.labels(self._experiment(), winner, str(bucket)).inc()

    def _count_clicking_user(self) -> None:
        self.metrics.clicking_users.labels(self._experiment()).inc()

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
        if table.interleaving:
            self.metrics.interleaved.labels(config.experiment)
            self.metrics.clicking_users.labels(config.experiment)
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
            self.book.close_due()

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
                self.book.close_all()  # a graceful stop counts the open feeds early
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
        if table.interleaving:
            if path == "/rank" and assigned is table.treatment:
                await self._interleave(table, user_id, body, send)
                return
            if path == "/feedback":
                await self._feedback(table, body, send)
                return
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
        await self._send_reply(send, exp, assigned, served, endpoint, reply)

    # ------------------------------------------------------------- interleaving
    async def _interleave(self, table: RoutingTable, user_id: int, body: bytes, send: Send) -> None:
        """Ask both variants in parallel and merge their feeds by team draft. When one
        has not answered ``interleaving_grace`` seconds after the other (or failed),
        serve the other's feed alone, not interleaved, and count it."""
        exp = table.config.experiment
        treatment = table.treatment
        assert treatment is not None
        pair = (table.control, treatment)
        tasks = {asyncio.ensure_future(self._try(v, "/rank", body)): v for v in pair}
        replies: dict[str, Reply | None] = {}
        reasons: dict[str, str] = {}
        pending = set(tasks)
        while pending:
            got_one = any(_ok(r) for r in replies.values())
            done, pending = await asyncio.wait(
                pending,
                timeout=self.interleaving_grace if got_one else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:  # the grace ran out: leave the slow one to finish on its own
                for t in pending:
                    reasons[tasks[t].name] = "slow"
                    self._background.add(t)
                    t.add_done_callback(self._background.discard)
                break
            for t in done:
                replies[tasks[t].name] = t.result()[1]
        ctl, trt = replies.get(pair[0].name), replies.get(pair[1].name)
        if _ok(ctl) and _ok(trt):
            assert ctl is not None and trt is not None
            merged = self._merge(table, user_id, body, ctl, trt)
            if merged is not None:
                self.metrics.interleaved.labels(exp).inc()
                self.metrics.exposures.labels(exp, treatment.name).inc()
                self.metrics.requests.labels(exp, treatment.name, "rank", "200").inc()
                await _respond(send, 200, merged, extra=[
                    (b"x-rankexp-variant", treatment.name.encode()),
                    (b"x-rankexp-interleaved", b"1")])  # fmt: skip
                return
        for v, r in ((pair[1], trt), (pair[0], ctl)):
            if _ok(r):
                other = pair[0] if v is pair[1] else pair[1]
                why = reasons.get(other.name, "error")
                self.metrics.interleaving_fallbacks.labels(exp, other.name, why).inc()
                assert r is not None
                await self._send_reply(send, exp, treatment, v, "rank", r)
                return
        # neither answered 200: a client error as the control said it, else a 502
        for r in (ctl, trt):
            if r is not None and r.status < 500:
                await self._send_reply(send, exp, treatment, table.control, "rank", r)
                return
        self.metrics.requests.labels(exp, treatment.name, "rank", "502").inc()
        await _json(send, 502, {"detail": "neither variant of the interleaving answered"})

    def _merge(
        self, table: RoutingTable, user_id: int, body: bytes, ctl: Reply, trt: Reply
    ) -> bytes | None:
        try:
            k = max(1, int(_RankRouted.model_validate_json(body).num_items))
            # pydantic-core's JSON (Rust) is 3-4x faster than the standard library's here
            a, b = from_json(ctl.body), from_json(trt.body)
            by_id = [{int(it["item_id"]): it for it in x["items"]} for x in (a, b)]
            lists = [[int(it["item_id"]) for it in x["items"]] for x in (a, b)]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("interleaving: a variant's feed is malformed: %s", exc)
            return None
        items, teams = team_draft(lists[0], lists[1], k, lambda: self._rng.random() < 0.5)
        token = attribution.encode(table.token_key, user_id, analysis_bucket(user_id), items, teams)
        treatment = table.treatment
        assert treatment is not None
        answer = {
            "routed_variant": treatment.name,
            "interleaved": True,
            "interleaving_token": token,
            "user_id": a.get("user_id", user_id),
            "items": [by_id[t][i] for i, t in zip(items, teams, strict=True)],
            "latency_ms": max(float(a.get("latency_ms", 0)), float(b.get("latency_ms", 0))),
            "model_version": f"{a.get('model_version')}+{b.get('model_version')}",
            "variant": f"{table.control.name}+{treatment.name}",
            "fallback": bool(a.get("fallback")) or bool(b.get("fallback")),
        }
        return to_json(answer)

    async def _feedback(self, table: RoutingTable, body: bytes, send: Send) -> None:
        """Feedback carrying an interleaving_token goes to the team that contributed the
        item (a click is tallied for the feed's outcome); without one, to the user's
        variant as in A/B."""
        exp = table.config.experiment
        try:
            fb = _FeedbackRouted.model_validate_json(body)
        except ValidationError as exc:
            await _json(send, 422, validation_error_body(exc.errors(), prefix=("body",)))
            return
        target = table.assign(fb.user_id)
        if fb.interleaving_token and fb.item_id is not None:
            try:
                feed = attribution.decode(table.token_key, fb.interleaving_token, fb.user_id)
            except attribution.TokenError as exc:
                self.metrics.token_errors.labels(exp).inc()
                await _field_error(send, "interleaving_token", str(exc))
                return
            team = feed.team_of(fb.item_id)
            if team is None:
                self.metrics.token_errors.labels(exp).inc()
                await _field_error(send, "item_id", "not an item of the feed this token names")
                return
            assert table.treatment is not None
            target = table.treatment if team == TREATMENT else table.control
            if fb.event == "click":
                result = self.book.click(feed, fb.item_id)
                team_name = "treatment" if team == TREATMENT else "control"
                self.metrics.interleaving_clicks.labels(exp, team_name, result).inc()
        served, reply = await self._try(target, "/feedback", body)
        if reply is None:
            self.metrics.requests.labels(exp, target.name, "feedback", "502").inc()
            await _json(send, 502, {"detail": f"no endpoint of {target.name!r} answered"})
            return
        await self._send_reply(send, exp, target, served, "feedback", reply)

    async def _send_reply(
        self, send: Send, exp: str, assigned: _Variant, served: _Variant, endpoint: str,
        reply: Reply,
    ) -> None:  # fmt: skip
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


async def _field_error(send: Send, field: str, msg: str) -> None:
    await _json(send, 422, {
        "detail": [{"loc": ["body", field], "msg": msg, "type": "value_error"}],
        "message": f"{field}: {msg}",
    })  # fmt: skip


def _ok(reply: Reply | None) -> bool:
    return reply is not None and reply.status == 200
