"""Status conditions after the Kubernetes API conventions, as plain dicts.

A condition is ``{type, status, reason, message, lastTransitionTime, observedGeneration}``;
``status`` is "True", "False" or "Unknown"; ``reason`` is one CamelCase word;
``lastTransitionTime`` moves only when ``status`` changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONCLUDED = "Concluded"
#: kstatus's abnormal-true conditions (derived in :mod:`rankexp.api.kstatus`)
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_ORDER = (READY, RECONCILING, STALLED, PROGRESSING, DEGRADED, CONCLUDED)

Status = Literal["True", "False", "Unknown"]
_CAMEL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def utcnow() -> str:
    """RFC 3339 UTC timestamp with second precision, as Kubernetes writes them."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_status(value: bool | str) -> Status:
    if value is True or value == "True":
        return "True"
    if value is False or value == "False":
        return "False"
    if value == "Unknown":
        return "Unknown"
    raise ValueError(f"not a condition status: {value!r}")


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return dict(condition)
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    condition = find(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Return a new list with ``type_`` set; other conditions are kept as they are.

    lastTransitionTime is carried over when the status did not change, so re-running a
    reconcile with the same outcome writes an identical status (a no-op for the API server).
    """
    if not _CAMEL_CASE.match(reason):
        raise ValueError(f"condition reason must be one CamelCase word: {reason!r}")
    new_status = as_status(status)
    previous = find(conditions, type_)
    if previous is not None and previous.get("status") == new_status:
        transition = previous.get("lastTransitionTime") or now or utcnow()
    else:
        transition = now or utcnow()
    condition: dict[str, Any] = {
        "type": type_,
        "status": new_status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    others = [dict(c) for c in conditions or () if c.get("type") != type_]
    return sort_conditions([*others, condition])


def sort_conditions(conditions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Known types first in a fixed order, then the rest by name: a stable status."""
    rank = {t: i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(
        (dict(c) for c in conditions),
        key=lambda c: (rank.get(c.get("type", ""), len(rank)), c.get("type", "")),
    )
