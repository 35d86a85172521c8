"""Malformed and hostile bodies, in process: a 422 naming the body or the field, never a
400 or a 500. The model is not loaded, so a body that passes validation gets the 503."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from ranker.route.router import Router
from ranker.serve.app import RankerSettings, create_app

HOSTILE: list[tuple[bytes, str]] = [
    (b"[" * 50_000, "body: invalid JSON (recursion limit exceeded"),
    (b'{"user_id": 1, "x": ' + b"[" * 300 + b"]" * 300 + b"}", "body: invalid JSON (recursion"),
    (b"\x10\xff\xfeab", "body: invalid JSON"),
    (b'{"user_id": "\xff"}', "body: invalid JSON"),
    (b'{"user_id": 1,', "body: invalid JSON (EOF"),
    (b"[1, 2]", "body: Input should be"),
    (b'{"user_id": true}', "user_id: Input should be a valid integer"),
    (b'{"user_id": "5"}', "user_id: Input should be a valid integer"),
    (b'{"user_id": 5.5}', "user_id: Input should be a valid integer"),
    (b'{"user_id": -1.0}', "user_id: Input should be greater than or equal to 0"),
]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(RankerSettings(model="/nonexistent", variant="control"), CollectorRegistry())
    with TestClient(app) as c:
        yield c


def _post(client: TestClient, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    return r.status_code, r.json()


@pytest.mark.parametrize(("body", "message"), HOSTILE)
def test_the_ranker_answers_422_naming_the_body_or_field(
    client: TestClient, body: bytes, message: str
) -> None:
    code, answer = _post(client, "/rank", body)
    assert code == 422, answer
    assert answer["message"].startswith(message), answer["message"]
    assert all(d["loc"][0] == "body" for d in answer["detail"])


def test_feedback_bodies_are_strict(client: TestClient) -> None:
    for dwell in ("true", '"3"', "1e400", "-0.5"):
        body = b'{"user_id": 1, "item_id": 2, "event": "dwell", "dwell_seconds": %s}' % (
            dwell.encode()
        )
        code, answer = _post(client, "/feedback", body)
        assert code == 422 and answer["message"].startswith("dwell_seconds: "), answer


def test_integers_written_as_floats_are_integers(client: TestClient) -> None:
    # JSON does not tell 467 from 467.0; past validation, the unloaded model answers 503
    code, answer = _post(client, "/rank", b'{"user_id": 467.0, "num_items": 5.0}')
    assert code == 503, answer
    body = b'{"user_id": 1.0, "item_id": 2.0, "event": "dwell", "dwell_seconds": 3}'
    assert _post(client, "/feedback", body)[0] == 503


def _router_post(tmp_path: Path, body: bytes) -> tuple[int, dict[str, Any]]:
    cfg = tmp_path / "routing.json"
    cfg.write_text(
        json.dumps(
            {
                "experiment": "e",
                "control": "c",
                "variants": [{"name": "c", "weight": 100, "endpoints": []}],
            }
        )  # fmt: skip
    )
    router = Router(cfg, CollectorRegistry())
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/rank", "headers": []}
    asyncio.run(router(scope, receive, send))
    return int(sent[0]["status"]), json.loads(sent[1]["body"])


@pytest.mark.parametrize(("body", "message"), HOSTILE)
def test_the_router_answers_the_same(tmp_path: Path, body: bytes, message: str) -> None:
    code, answer = _router_post(tmp_path, body)
    assert code == 422, answer
    assert answer["message"].startswith(message), answer["message"]
    assert all(d["loc"][0] == "body" for d in answer["detail"])


def test_the_router_routes_integers_written_as_floats(tmp_path: Path) -> None:
    # valid: routed to control, which has no endpoint here
    assert _router_post(tmp_path, b'{"user_id": 467.0}')[0] == 502
