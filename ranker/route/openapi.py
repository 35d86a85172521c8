"""The router's OpenAPI document (``GET /openapi.json``), generated from pydantic models.

The bodies the router forwards are described by the ranker's own models
(:mod:`ranker.protocol.schemas`), the ones the ranker validates them with, so the two documents
cannot drift apart. What the router adds is declared here: ``routed_variant`` in the
answer, the ``x-rankexp-variant`` header, and its own errors (422 for a missing or
invalid ``user_id``, 408/413 for the body, 502 when no endpoint answered).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from ranker.protocol.limits import Limits
from ranker.protocol.schemas import (
    ErrorBody,
    FeedbackAccepted,
    FeedbackRequest,
    Health,
    RankRequest,
    RankResponse,
    ValidationErrorBody,
)

VARIANT_HEADER = "x-rankexp-variant"


class RoutedRankResponse(RankResponse):
    routed_variant: str = Field(
        description=f"the variant that served the feed, also in the {VARIANT_HEADER} header; "
        "control when the user's variant did not answer; the treatment for an "
        "interleaved feed"
    )
    interleaved: bool | None = Field(
        default=None,
        description="interleaving experiments: true when the feed merges control's and "
        "the treatment's by team draft",
    )
    interleaving_token: str | None = Field(
        default=None,
        description="interleaved feeds: opaque; echo it in every /feedback about this feed",
    )


class RoutedFeedbackAccepted(FeedbackAccepted):
    routed_variant: str = Field(description="the variant the feedback went to")


class RouterReady(BaseModel):
    ready: Literal[True]
    experiment: str


class RouterNotReady(BaseModel):
    ready: Literal[False]
    reason: str | None


class ConfigUnavailable(BaseModel):
    error: str | None


_REF = "#/components/schemas/{model}"


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(model)}},
        **extra,
    }


def _variant_header(required: bool) -> dict[str, Any]:
    return {
        VARIANT_HEADER: {
            "description": "the variant that answered",
            "required": required,
            "schema": {"type": "string"},
        }
    }


def _forwarded(
    summary: str, request: type[BaseModel], status: str, reply: type[BaseModel]
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "operationId": request.__name__.removesuffix("Request").lower(),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {
                status: _json(reply, "the variant's answer", headers=_variant_header(True)),
                "408": _json(ErrorBody, "the body did not arrive in time"),
                "413": _json(ErrorBody, "the body is over the size limit"),
                "422": _json(
                    ValidationErrorBody,
                    "invalid body: the router's (JSON, user_id; no header) or the variant's",
                    headers=_variant_header(False),
                ),
                "502": _json(ErrorBody, "neither the user's variant nor control answered"),
                "503": _json(ErrorBody, "no routing config"),
            },
        }
    }


def _get(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    op_id = summary.split()[0].lower()
    return {"get": {"summary": summary, "operationId": op_id, "responses": responses}}


def router_openapi(
    config_model: type[BaseModel], limits: Limits, version: str = "0.1.0"
) -> dict[str, Any]:
    """The document; ``config_model`` is the routing config's (what ``GET /config``
    shows), ``limits`` the process's."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (RankRequest, "validation"),
        (FeedbackRequest, "validation"),
        (RoutedRankResponse, "serialization"),
        (RoutedFeedbackAccepted, "serialization"),
        (ValidationErrorBody, "serialization"),
        (ErrorBody, "serialization"),
        (Health, "serialization"),
        (RouterReady, "serialization"),
        (RouterNotReady, "serialization"),
        (ConfigUnavailable, "serialization"),
        (config_model, "serialization"),
    ]
    _, top = models_json_schema(models, ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rankexp router",
            "version": version,
            "description": "Sticky assignment of users to an experiment's variants: "
            "`/rank` and `/feedback` go to the variant the user is assigned to.\n\n"
            + limits.describe(),
        },
        "paths": {
            "/rank": _forwarded(
                "Rank: the feed from the user's variant", RankRequest, "200", RoutedRankResponse
            ),
            "/feedback": _forwarded(
                "Feedback to the user's variant", FeedbackRequest, "202", RoutedFeedbackAccepted
            ),
            "/health": _get("Health: 200 while the process lives", {"200": _json(Health, "ok")}),
            "/ready": _get(
                "Ready: 200 once a routing config is loaded",
                {
                    "200": _json(RouterReady, "routing"),
                    "503": _json(RouterNotReady, "no valid routing config"),
                },
            ),
            "/config": _get(
                "Config: the routing in force",
                {
                    "200": _json(config_model, "the routing config"),
                    "503": _json(ConfigUnavailable, "no valid routing config"),
                },
            ),
            "/metrics": _get(
                "Metrics in the Prometheus text format",
                {
                    "200": {
                        "description": "router_* series",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            ),
            "/openapi.json": _get(
                "OpenAPI: this document",
                {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            ),
        },
        "components": {"schemas": top["$defs"]},
    }
