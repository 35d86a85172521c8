"""The ranking service: a FastAPI app factory; the model loads in lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ranker.artifacts import ModelLoadError, ModelSnapshot, load_snapshot
from ranker.asgi import ASGIApp, Message, Receive, Scope, Send
from ranker.data import CATEGORIES
from ranker.engine import RankingEngine, Scoring
from ranker.faults import FaultInjector
from ranker.metrics import RankerMetrics
from ranker.quality import QualityMonitor
from ranker.towers import Backend, Towers, load_towers

log = logging.getLogger("ranker.service")


class RankerSettings(BaseSettings):
    """Settings for one ranker process; environment variables RANKER_*."""

    model_config = SettingsConfigDict(env_prefix="RANKER_")

    model: str = Field(description="model directory: a path or a file:// URI")
    variant: str = "default"
    scoring: Scoring = "fast"
    #: towers backend: onnx (onnxruntime, no torch), torch, or auto (onnx when possible)
    backend: Backend = "auto"
    cache_size: int = Field(default=50_000, ge=1)
    torch_threads: int = Field(default=1, ge=1)
    # TEST ONLY (ranker.faults): slow or failing /rank on purpose.
    inject_latency_ms: float = Field(default=0.0, ge=0.0, le=60_000.0)
    inject_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[int, Field(ge=0, strict=True)]
    num_items: Annotated[int, Field(ge=1, le=500, strict=True)] = 50


class RankedItem(BaseModel):
    item_id: int
    score: float
    category: str
    age_hours: float


class RankResponse(BaseModel):
    user_id: int
    items: list[RankedItem]
    latency_ms: float
    model_version: str
    variant: str
    fallback: bool


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[int, Field(ge=0, strict=True)]
    item_id: Annotated[int, Field(ge=0, strict=True)]
    event: Literal["click", "like", "dwell"]
    dwell_seconds: Annotated[float, Field(ge=0.0, le=86_400.0, allow_inf_nan=False)] = 0.0


class ServingState:
    """What the lifespan loads; None until the model is ready."""

    def __init__(self) -> None:
        self.engine: RankingEngine | None = None
        self.monitor: QualityMonitor | None = None
        self.error: str | None = None
        self.feature_index: dict[str, int] = {}
        self.categories = np.asarray(CATEGORIES, dtype=object)


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

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.count_request(path[1:], status, elapsed if path == "/rank" else None)


def _load(settings: RankerSettings) -> tuple[ModelSnapshot, Towers]:
    snapshot = load_snapshot(settings.model)
    return snapshot, load_towers(snapshot, settings.backend, settings.torch_threads)


def create_app(settings: RankerSettings, registry: CollectorRegistry | None = None) -> FastAPI:
    """Build the app. The model loads in the background once the app starts, so
    /health answers at once and /ready turns 200 when the model is in memory."""
    registry = registry if registry is not None else CollectorRegistry()
    # *_created series double the scrape size and nothing here reads them
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = RankerMetrics(registry, settings.variant)
    state = ServingState()

    def install(loaded: tuple[ModelSnapshot, Towers]) -> None:
        snapshot, towers = loaded
        engine = RankingEngine(snapshot, towers, settings.scoring, settings.cache_size)
        state.feature_index = {n: i for i, n in enumerate(snapshot.schema["user_features"])}
        offline = snapshot.metadata.get("offline_metrics", {})
        metrics.set_model(snapshot.version, offline.get("auc"), offline.get("ndcg_at_10"))
        state.monitor = QualityMonitor(metrics, engine.n_items, len(CATEGORIES))
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

    app = FastAPI(title="rankexp ranker", version="0.1.0", lifespan=lifespan)
    app.state.serving = state
    app.state.metrics = metrics
    app.state.settings = settings

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        fields = [".".join(str(p) for p in e["loc"] if p != "body") for e in errors]
        message = "; ".join(
            f"{f or 'body'}: {e['msg']}" for f, e in zip(fields, errors, strict=True)
        )
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        return JSONResponse({"detail": detail, "message": message}, status_code=422)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
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

    @app.post("/rank", response_model=RankResponse)
    async def rank(req: RankRequest) -> JSONResponse:
        start = time.perf_counter()
        engine, monitor = engine_or_503()
        r = engine.rank(req.user_id, req.num_items)
        loaded = engine.loaded
        cats = loaded.item_category[r.rows]
        ages = loaded.item_age_hours[r.rows]
        if r.cache_hit is not None:
            metrics.cache_requests_child.inc()
            if r.cache_hit:
                metrics.cache_hits_child.inc()
        monitor.observe_response(
            req.user_id,
            r.rows,
            cats,
            ages,
            None if r.fallback else r.scores,
            engine.user_features(req.user_id),
            state.feature_index,
        )
        ids = loaded.item_ids[r.rows].tolist()
        names = state.categories[cats].tolist()
        items = [
            {"item_id": i, "score": s, "category": c, "age_hours": round(a, 2)}
            for i, s, c, a in zip(ids, r.scores.tolist(), names, ages.tolist(), strict=True)
        ]
        latency_ms = max((time.perf_counter() - start) * 1000.0, 1e-3)
        return JSONResponse(
            {
                "user_id": req.user_id,
                "items": items,
                "latency_ms": round(latency_ms, 4),
                "model_version": loaded.version,
                "variant": settings.variant,
                "fallback": r.fallback,
            }
        )

    @app.post("/feedback", status_code=202)
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

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
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
    return app
