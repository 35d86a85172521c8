"""The HTTP contract, in process (TestClient runs the app's lifespan)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from ranker.serve.app import RankerSettings, create_app


def _client(model: str | Path) -> Iterator[TestClient]:
    app = create_app(RankerSettings(model=str(model), variant="control"), CollectorRegistry())
    with TestClient(app) as client:
        yield client


def _wait(client: TestClient, want: int, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/ready")
        settled = r.status_code == 200 or r.json()["reason"] != "model is loading"
        if (settled and r.status_code == want) or time.monotonic() > deadline:
            assert r.status_code == want, r.text
            body: dict[str, object] = r.json()
            return body
        time.sleep(0.05)


@pytest.fixture(scope="module")
def client(model_dirs: dict[str, Path]) -> Iterator[TestClient]:
    for c in _client(model_dirs["v2"]):
        _wait(c, 200)
        yield c


def test_health(client: TestClient) -> None:
    assert client.get("/health").status_code == 200


def test_rank_returns_50_sorted_unique_items(client: TestClient) -> None:
    r = client.post("/rank", json={"user_id": 1})
    assert r.status_code == 200
    body = r.json()
    items = body["items"]
    assert len(items) == 50
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    assert len({i["item_id"] for i in items}) == 50
    assert body["latency_ms"] > 0
    assert body["model_version"] == "v2" and body["variant"] == "control"
    assert body["fallback"] is False
    assert {"item_id", "score", "category", "age_hours"} <= set(items[0])


@pytest.mark.parametrize("n", [1, 7, 500])
def test_num_items_bounds(client: TestClient, n: int) -> None:
    r = client.post("/rank", json={"user_id": 3, "num_items": n})
    assert r.status_code == 200 and len(r.json()["items"]) == n


def test_unknown_user_gets_a_marked_fallback(client: TestClient) -> None:
    r = client.post("/rank", json={"user_id": 10_000_000, "num_items": 20})
    assert r.status_code == 200
    body = r.json()
    assert body["fallback"] is True and len(body["items"]) == 20
    assert len({i["item_id"] for i in body["items"]}) == 20


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_id": 1, "num_items": 0}, "num_items"),
        ({"user_id": 1, "num_items": 501}, "num_items"),
        ({"user_id": 1, "num_items": "ten"}, "num_items"),
        ({"num_items": 5}, "user_id"),
        ({"user_id": -4}, "user_id"),
        ({"user_id": "abc"}, "user_id"),
        ({"user_id": 1, "colour": "red"}, "colour"),
    ],
)
def test_bad_rank_input_is_422_naming_the_field(
    client: TestClient, payload: dict[str, object], field: str
) -> None:
    r = client.post("/rank", json=payload)
    assert r.status_code == 422
    body = r.json()
    assert any(field in d["loc"] for d in body["detail"])
    assert field in body["message"]


def test_feedback_is_accepted(client: TestClient) -> None:
    for event in ("click", "like"):
        r = client.post("/feedback", json={"user_id": 1, "item_id": 5, "event": event})
        assert r.status_code == 202
    r = client.post(
        "/feedback", json={"user_id": 1, "item_id": 5, "event": "dwell", "dwell_seconds": 12.5}
    )
    assert r.status_code == 202


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_id": 1, "item_id": 5, "event": "share"}, "event"),
        ({"user_id": 1, "item_id": 10_000_000, "event": "click"}, "item_id"),
        ({"user_id": 1, "item_id": 5, "event": "dwell", "dwell_seconds": -1}, "dwell_seconds"),
        ({"user_id": 1, "event": "click"}, "item_id"),
    ],
)
def test_bad_feedback_is_422_naming_the_field(
    client: TestClient, payload: dict[str, object], field: str
) -> None:
    r = client.post("/feedback", json=payload)
    assert r.status_code == 422
    assert field in r.json()["message"]


def test_missing_model_keeps_ready_failing_and_serves_health(tmp_path: Path) -> None:
    for c in _client(tmp_path / "nope"):
        body = _wait(c, 503)
        assert "does not exist" in str(body["reason"])
        assert c.get("/health").status_code == 200
        r = c.post("/rank", json={"user_id": 1})
        assert r.status_code == 503 and "model not loaded" in r.json()["detail"]


@pytest.mark.parametrize(
    ("backend", "file", "message"),
    [("torch", "model.pt", "corrupt"), ("onnx", "user_tower.onnx", "bad ONNX tower")],
)
def test_corrupt_model_keeps_ready_failing(
    tmp_path: Path, model_dirs: dict[str, Path], backend: str, file: str, message: str
) -> None:
    bad = tmp_path / "corrupt"
    bad.mkdir()
    for f in model_dirs["v2"].iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / file).write_bytes(b"these are not weights")
    settings = RankerSettings(model=str(bad), variant="control", backend=backend)  # type: ignore[arg-type]
    with TestClient(create_app(settings, CollectorRegistry())) as c:
        body = _wait(c, 503)
        assert message in str(body["reason"])
        assert c.get("/health").status_code == 200


def test_unsupported_model_uri_is_a_clear_not_ready(tmp_path: Path) -> None:
    for c in _client("s3://bucket/models/v2"):
        body = _wait(c, 503)
        assert "unsupported model URI scheme" in str(body["reason"])
