"""The ranking service: a FastAPI app factory; the model loads in lifespan."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pydantic_core
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ranker.model.artifacts import ModelLoadError, ModelSnapshot, load_snapshot
from ranker.model.catalog_index import ANN_THRESHOLD, IndexKind
from ranker.model.engine import RankingEngine, Scoring
from ranker.model.towers import Backend, Towers, load_towers
from ranker.protocol.asgi import ASGIApp, Message, Receive, Scope, Send
from ranker.protocol.hashing import analysis_bucket
from ranker.protocol.limits import BodyLimit, Limits
from ranker.protocol.schemas import (
    ErrorBody,
    FeedbackAccepted,
    FeedbackRequest,
    Health,
    NotReady,
    RankRequest,
    RankResponse,
    Ready,
    ValidationErrorBody,
    validation_error_body,
)
from ranker.serve.faults import FaultInjector
from ranker.serve.feed_json import FeedEncoder
from ranker.serve.metrics import RankerMetrics
from ranker.serve.quality import QualityMonitor
from ranker.world.ground_truth import CATEGORIES

log = logging.getLogger("ranker.serve.app")

#: The ASGI scope key under which RequestMetricsMiddleware leaves a list for the /rank
#: handler to put the user's analysis bucket in (the middleware times, the handler
#: knows the user).
BUCKET_SCOPE_KEY = "ranker.analysis_bucket"
_bucket = functools.lru_cache(maxsize=1 << 16)(analysis_bucket)


class RankerSettings(BaseSettings):
    """Settings for one ranker process; environment variables RANKER_*."""

    model_config = SettingsConfigDict(env_prefix="RANKER_")

    model: str = Field(description="model directory: a path or a file:// URI")
    variant: str = "default"
    scoring: Scoring = "fast"
    #: towers backend: onnx (onnxruntime, no torch), torch, or auto (onnx when possible)
    backend: Backend = "auto"
    cache_size: int = Field(default=50_000, ge=1)
    #: catalog index (ranker.model.catalog_index): exact scan, IVF, or auto (IVF from
    #: ann_threshold items up)
    index: IndexKind = "auto"
    ann_threshold: int = Field(default=ANN_THRESHOLD, ge=1)
    torch_threads: int = Field(default=1, ge=1)
    # TEST ONLY (ranker.serve.faults): slow or failing /rank on purpose.
    inject_latency_ms: float = Field(default=0.0, ge=0.0, le=60_000.0)
    inject_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class ServingState:
    """What the lifespan loads; None until the model is ready."""

    def __init__(self) -> None:
        self.engine: RankingEngine | None = None
        self.monitor: QualityMonitor | None = None
        self.error: str | None = None
        self.feature_index: dict[str, int] = {}
        self.categories = np.asarray(CATEGORIES, dtype=object)
        self.encoder: FeedEncoder | None = None


class RequestMetricsMiddleware:
    """Counts /rank and /feedback requests by status code and times /rank.

    Plain ASGI rather than BaseHTTPMiddleware, which costs far more per request.
    """

    def __init__(self, app: ASGIApp, metrics: RankerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in ("/rank", "/feedback"):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        bucket: list[int] = []
        scope[BUCKET_SCOPE_KEY] = bucket

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.count_request(
                path[1:],
                status,
                elapsed if path == "/rank" else None,
                bucket[0] if bucket else None,
            )


class _JSONBytes(Response):
    """A ready JSON body: the headers starlette's Response would make, made directly."""

    media_type = "application/json"

    def __init__(self, body: bytes) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]


class _JSONRequest(Request):
    """Parses JSON with pydantic's parser. The standard library's raises RecursionError
    on deep nesting (and UnicodeDecodeError on bytes that are not UTF-8), which FastAPI
    answers with a bare 400; pydantic's stops at 200 levels with a ValueError that
    becomes a 422 naming the body, like any other malformed JSON."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body)
            except ValueError as exc:
                doc = body.decode(errors="replace")
                raise json.JSONDecodeError(str(exc), doc, _error_position(doc, str(exc))) from None
        return self._json


def _error_position(doc: str, message: str) -> int:
    """The character offset of pydantic's "at line L column C", for FastAPI's ``loc``."""
    m = re.search(r"line (\d+) column (\d+)", message)
    if m is None:
        return 0
    lines = doc.split("\n")
    line = min(int(m[1]), len(lines))
    return sum(len(x) + 1 for x in lines[: line - 1]) + max(int(m[2]) - 1, 0)


class _JSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_json_request(request: Request) -> Response:
            return await handler(_JSONRequest(request.scope, request.receive))

        return with_json_request


#: The errors of /rank and /feedback; 413 comes from ranker.protocol.limits, 408 from
#: ranker.protocol.http_guard.
_POST_RESPONSES: dict[int | str, dict[str, Any]] = {
    408: {"model": ErrorBody, "description": "the body did not arrive in time"},
    413: {"model": ErrorBody, "description": "the body is over the size limit"},
    422: {"model": ValidationErrorBody, "description": "invalid body; `message` names the fields"},
    503: {"model": ErrorBody, "description": "the model is not loaded"},
}


def _load(settings: RankerSettings) -> tuple[ModelSnapshot, Towers]:
    snapshot = load_snapshot(settings.model)
    return snapshot, load_towers(snapshot, settings.backend, settings.torch_threads)


def create_app(
    settings: RankerSettings,
    registry: CollectorRegistry | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """Build the app. The model loads in the background once the app starts, so
    /health answers at once and /ready turns 200 when the model is in memory."""
    limits = limits if limits is not None else Limits()
    registry = registry if registry is not None else CollectorRegistry()
    # *_created series double the scrape size and nothing here reads them
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = RankerMetrics(registry, settings.variant)
    state = ServingState()

    def install(loaded: tuple[ModelSnapshot, Towers]) -> None:
        snapshot, towers = loaded
        engine = RankingEngine(
            snapshot, towers, settings.scoring, settings.cache_size,
            index=settings.index, ann_threshold=settings.ann_threshold,
        )  # fmt: skip
        state.feature_index = {n: i for i, n in enumerate(snapshot.schema["user_features"])}
        offline = snapshot.metadata.get("offline_metrics", {})
        metrics.set_model(snapshot.version, offline.get("auc"), offline.get("ndcg_at_10"))
        state.monitor = QualityMonitor(
            metrics, snapshot.item_category, snapshot.item_age_hours, len(CATEGORIES),
            state.feature_index,
        )  # fmt: skip
        state.encoder = FeedEncoder(
            snapshot.item_ids, CATEGORIES, snapshot.item_category, snapshot.item_age_hours
        )
        state.engine = engine

    async def load_in_background() -> None:
        try:
            loaded = await asyncio.to_thread(_load, settings)
            await asyncio.to_thread(install, loaded)
        except ModelLoadError as exc:
            state.error = str(exc)
            log.error("model not loaded, /ready stays 503: %s", exc)
        except Exception as exc:  # anything else is a bug, but the process keeps serving
            state.error = f"{type(exc).__name__}: {exc}"
            log.exception("model not loaded, /ready stays 503")
        else:
            log.info(
                "model %s loaded from %s for variant %s (%s scoring, %s backend)",
                state.engine.loaded.version if state.engine else "?",
                settings.model,
                settings.variant,
                settings.scoring,
                state.engine.towers.backend if state.engine else "?",
            )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(load_in_background())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(
        title="rankexp ranker", version="0.1.0", lifespan=lifespan, description=limits.describe()
    )
    app.router.route_class = _JSONRoute
    app.state.serving = state
    app.state.metrics = metrics
    app.state.settings = settings

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error_body(exc.errors()), status_code=422)

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready", response_model=Ready,
        responses={503: {"model": NotReady, "description": "loading, or the model is missing"}},
    )  # fmt: skip
    async def ready() -> JSONResponse:
        if state.engine is not None:
            return JSONResponse(
                {"ready": True, "model_version": state.engine.loaded.version,
                 "variant": settings.variant, "backend": state.engine.towers.backend}
            )  # fmt: skip
        reason = state.error or "model is loading"
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)

    def engine_or_503() -> tuple[RankingEngine, QualityMonitor]:
        if state.engine is None or state.monitor is None:
            raise HTTPException(503, detail=f"model not loaded: {state.error or 'loading'}")
        return state.engine, state.monitor

    @app.post("/rank", response_model=RankResponse, responses=_POST_RESPONSES)
    async def rank(req: RankRequest, request: Request) -> Response:
        start = time.perf_counter()
        engine, monitor = engine_or_503()
        holder = request.scope.get(BUCKET_SCOPE_KEY)
        if isinstance(holder, list):
            holder.append(_bucket(req.user_id))
        r = engine.rank(req.user_id, req.num_items)
        if r.cache_hit is not None:
            metrics.cache_requests_child.inc()
            if r.cache_hit:
                metrics.cache_hits_child.inc()
        # recorded now, computed and exported in batches (and before every scrape)
        monitor.observe_response(
            req.user_id, r.rows, None if r.fallback else r.scores,
            engine.user_features(req.user_id),
        )  # fmt: skip
        latency_ms = max((time.perf_counter() - start) * 1000.0, 1e-3)
        assert state.encoder is not None  # set with the engine
        body = state.encoder.encode(
            user_id=req.user_id, rows=r.rows.tolist(), scores=r.scores.tolist(),
            latency_ms=round(latency_ms, 4), model_version=engine.loaded.version,
            variant=settings.variant, fallback=r.fallback,
        )  # fmt: skip
        return _JSONBytes(body)

    @app.post(
        "/feedback", status_code=202, response_model=FeedbackAccepted,
        responses=_POST_RESPONSES,
    )  # fmt: skip
    async def feedback(req: FeedbackRequest) -> JSONResponse:
        engine, monitor = engine_or_503()
        if not engine.has_item(req.item_id):
            detail = [{"loc": ["body", "item_id"], "msg": "unknown item", "type": "value_error"}]
            return JSONResponse(
                {"detail": detail, "message": f"item_id: unknown item {req.item_id}"},
                status_code=422,
            )
        monitor.observe_feedback(req.user_id, req.event, req.dwell_seconds)
        return JSONResponse({"accepted": True}, status_code=202)

    @app.get(
        "/metrics", response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                         "description": "Prometheus text format"}},
    )  # fmt: skip
    async def prometheus_metrics() -> Response:
        # the registry's collection flushes the quality monitor's batch first
        # (ranker.serve.metrics.BeforeCollect), so the scrape counts every response served
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    if settings.inject_latency_ms or settings.inject_error_rate:
        log.warning(
            "TEST ONLY fault injection on /rank: +%g ms latency, %g error rate",
            settings.inject_latency_ms,
            settings.inject_error_rate,
        )
        # added first, so the request metrics (added last, outermost) see the faults
        app.add_middleware(
            FaultInjector,
            latency_ms=settings.inject_latency_ms,
            error_rate=settings.inject_error_rate,
        )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    # outermost: bodies are read (within the limits) before the request is timed
    app.add_middleware(BodyLimit, limits=limits)
    return app
