"""The two OpenAPI documents: valid, complete, and agreeing on what the router forwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ranker.protocol.limits import Limits
from ranker.route.openapi import VARIANT_HEADER, router_openapi
from ranker.route.router import _METHODS, Router, RoutingConfig
from ranker.serve.app import RankerSettings, create_app


@pytest.fixture(scope="module")
def ranker_doc() -> dict[str, Any]:
    app = create_app(RankerSettings(model="/nonexistent"), CollectorRegistry())
    return app.openapi()


@pytest.fixture(scope="module")
def router_doc() -> dict[str, Any]:
    return router_openapi(RoutingConfig, Limits())


def _valid_openapi_31(doc: dict[str, Any]) -> None:
    # schemathesis ships the OpenAPI 3.1 meta-schema and jsonschema-rs
    import jsonschema_rs
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    jsonschema_rs.validator_for(OPENAPI_31).validate(doc)
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name


def test_both_documents_are_valid_openapi(
    ranker_doc: dict[str, Any], router_doc: dict[str, Any]
) -> None:
    _valid_openapi_31(ranker_doc)
    _valid_openapi_31(router_doc)


def test_the_router_documents_what_it_answers(router_doc: dict[str, Any]) -> None:
    documented = {(p, m.upper()) for p, ops in router_doc["paths"].items() for m in ops}
    assert documented == {(p, m) for p, m in _METHODS.items()}


def test_forwarded_bodies_are_the_rankers_schemas(
    ranker_doc: dict[str, Any], router_doc: dict[str, Any]
) -> None:
    ours, theirs = router_doc["components"]["schemas"], ranker_doc["components"]["schemas"]
    for name in ("RankRequest", "FeedbackRequest", "RankedItem", "ValidationErrorBody"):
        assert ours[name] == theirs[name], name
    for path, status, routed, plain in [
        ("/rank", "200", "RoutedRankResponse", "RankResponse"),
        ("/feedback", "202", "RoutedFeedbackAccepted", "FeedbackAccepted"),
    ]:
        for doc in (router_doc, ranker_doc):
            body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
            assert body["schema"]["$ref"].endswith(path[1:].capitalize() + "Request")
        reply = router_doc["paths"][path]["post"]["responses"][status]
        assert reply["content"]["application/json"]["schema"]["$ref"].endswith(routed)
        assert reply["headers"][VARIANT_HEADER]["required"] is True
        assert ranker_doc["paths"][path]["post"]["responses"][status]["content"][
            "application/json"
        ]["schema"]["$ref"].endswith(plain)
        # the ranker's answer plus routed_variant (and, for a feed, the two optional
        # interleaving fields), nothing else
        extra = dict(ours[routed]["properties"])
        assert extra.pop("routed_variant")["type"] == "string"
        if path == "/rank":
            assert extra.pop("interleaving_token")["anyOf"][0] == {"type": "string"}
            assert extra.pop("interleaved")["anyOf"][0] == {"type": "boolean"}
        assert extra == theirs[plain]["properties"]
        assert set(ours[routed]["required"]) == {*theirs[plain]["required"], "routed_variant"}


def test_every_body_error_is_documented(
    ranker_doc: dict[str, Any], router_doc: dict[str, Any]
) -> None:
    for path in ("/rank", "/feedback"):
        assert {"408", "413", "422", "503"} <= set(ranker_doc["paths"][path]["post"]["responses"])
        assert {"408", "413", "422", "502", "503"} <= set(
            router_doc["paths"][path]["post"]["responses"]
        )
    for doc in (ranker_doc, router_doc):
        metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        assert set(metrics) == {"text/plain"}
        assert "over 65536 bytes is answered 413" in doc["info"]["description"]


def test_the_router_serves_its_document(tmp_path: Path) -> None:
    import asyncio
    import json

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
    router = Router(cfg, CollectorRegistry(), limits=Limits(max_body_bytes=1000))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/openapi.json", "headers": []}
    asyncio.run(router(scope, receive, send))
    assert sent[0]["status"] == 200
    doc = json.loads(sent[1]["body"])
    assert doc["info"]["title"] == "rankexp router"
    assert "over 1000 bytes is answered 413" in doc["info"]["description"]
