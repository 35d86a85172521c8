"""The framework floor of `make bench-ranker`: the ranker's own app stack (FastAPI with
the ranker's JSON route class, the body-limit middleware, uvicorn with the ranker's
guarded protocol and limits) serving POST /rank by parsing the same request model and
returning a prebuilt answer of the same size (50 items). What no ranking work can beat.

    python bench/floor_app.py --port P
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ranker.protocol import limits
from ranker.protocol.limits import BodyLimit, Limits
from ranker.protocol.schemas import RankRequest, RankResponse
from ranker.serve.app import _JSONRoute
from ranker.world.ground_truth import CATEGORIES


def prebuilt(n: int = 50) -> dict[str, Any]:
    items = [
        {"item_id": 1000 + 37 * i, "score": round(0.9 - i * 0.0137, 6) + 1e-7 * i,
         "category": CATEGORIES[i % len(CATEGORIES)], "age_hours": round(3.25 + 1.7 * i, 2)}
        for i in range(n)
    ]  # fmt: skip
    return {"user_id": 0, "items": items, "latency_ms": 0.0123, "model_version": "floor",
            "variant": "floor", "fallback": False}  # fmt: skip


def create_floor_app(bounds: Limits) -> FastAPI:
    app = FastAPI(title="rankexp floor")
    app.router.route_class = _JSONRoute
    answer = prebuilt()

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/rank", response_model=RankResponse)
    async def rank(req: RankRequest) -> JSONResponse:
        return JSONResponse({**answer, "user_id": req.user_id})

    app.add_middleware(BodyLimit, limits=bounds)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    bounds = Limits()
    uvicorn.run(create_floor_app(bounds), host=args.host, port=args.port, log_level="warning",
                access_log=False, **limits.uvicorn_options(bounds))  # fmt: skip


if __name__ == "__main__":
    main()
