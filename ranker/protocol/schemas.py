"""The HTTP contract: request and response bodies of the ranker, and its error shape.

One source for both OpenAPI documents: FastAPI renders the ranker's from these models
and :mod:`ranker.route.openapi` the router's, so what the router documents for the
bodies it forwards is what the ranker validates them with. Pydantic only: the router
imports this without FastAPI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _integral(value: Any) -> Any:
    # JSON does not tell 467 from 467.0 (its schema's "integer" admits both), so a
    # float with no fraction is that integer. Strict otherwise: true, "467" and 467.5
    # are not integers.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: For the integers of a request body; it goes after their Field (behind it, ge and le
#: would no longer render as JSON Schema's minimum and maximum).
AsInt = BeforeValidator(_integral)
UserId = Annotated[int, Field(ge=0, strict=True, description="the user; any integer >= 0"), AsInt]


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    num_items: Annotated[int, Field(ge=1, le=500, strict=True), AsInt] = 50


class RankedItem(BaseModel):
    item_id: int
    score: float
    category: str
    age_hours: float


class RankResponse(BaseModel):
    user_id: int
    items: list[RankedItem] = Field(description="sorted by score, highest first; no duplicates")
    latency_ms: float
    model_version: str
    variant: str
    fallback: bool = Field(
        description="true for a user the model has never seen: a popularity/freshness feed"
    )


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    item_id: Annotated[int, Field(ge=0, strict=True, description="an item of the catalog"), AsInt]
    event: Literal["click", "like", "dwell"]
    # strict: a JSON true or "3" is not a duration
    dwell_seconds: Annotated[
        float, Field(ge=0.0, le=86_400.0, allow_inf_nan=False, strict=True)
    ] = 0.0
    interleaving_token: str = Field(
        default="",
        max_length=32_768,
        description="echo of the feed's interleaving_token (interleaving experiments): "
        "the router attributes the click to the team that contributed the item",
    )


class FeedbackAccepted(BaseModel):
    accepted: Literal[True]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    ready: Literal[True]
    model_version: str
    variant: str
    backend: str


class NotReady(BaseModel):
    ready: Literal[False]
    reason: str


class ErrorBody(BaseModel):
    """Any error that is not about a field: 408, 413, 502, 503."""

    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description='where, e.g. ["body", "num_items"]')
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """422: pydantic's errors, and one line naming the fields."""

    detail: list[ValidationIssue]
    message: str = Field(description="e.g. `num_items: Input should be less than or equal to 500`")


def validation_error_body(
    errors: Iterable[Mapping[str, Any]], prefix: tuple[str | int, ...] = ()
) -> dict[str, Any]:
    """The 422 body for pydantic (or FastAPI) errors; ``prefix`` goes before each ``loc``."""
    detail = []
    lines = []
    for e in errors:
        loc = [*prefix, *e["loc"]]
        detail.append({"loc": loc, "msg": e["msg"], "type": e["type"]})
        if e["type"] == "json_invalid":
            # FastAPI puts a character position in loc; it names no field
            reason = (e.get("ctx") or {}).get("error") or e["msg"]
            lines.append(f"body: invalid JSON ({reason})")
        else:
            field = ".".join(str(p) for p in loc if p != "body")
            lines.append(f"{field or 'body'}: {e['msg']}")
    return {"detail": detail, "message": "; ".join(lines)}
