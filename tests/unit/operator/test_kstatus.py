"""kstatus conditions (Reconciling, Stalled) derived from the rest of the status."""

from __future__ import annotations

from typing import Any

import pytest

from rankexp.api import conditions as cond
from rankexp.api import kstatus


def status(phase: str | None, *conditions: tuple[str, str, str]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for type_, value, reason in conditions:
        out = cond.set_condition(out, type_, value, reason, f"{reason} message", now="T0")
    return {"phase": phase, "conditions": out} if phase else {"conditions": out}


def flags(conditions: list[dict[str, Any]]) -> tuple[str, str, str, str]:
    reconciling = cond.find(conditions, "Reconciling") or {}
    stalled = cond.find(conditions, "Stalled") or {}
    return (
        reconciling.get("status", ""),
        reconciling.get("reason", ""),
        stalled.get("status", ""),
        stalled.get("reason", ""),
    )


EXPERIMENTS = {
    "new, nothing yet": (status(None), ("True", "Pending", "False", "AsExpected")),
    "pending": (
        status("Pending", ("Progressing", "True", "WaitingForReplicas")),
        ("True", "WaitingForReplicas", "False", "AsExpected"),
    ),
    "running, ramping": (
        status(
            "Running",
            ("Progressing", "False", "RolloutComplete"),
            ("Concluded", "False", "Ramping"),
        ),  # fmt: skip
        ("True", "Ramping", "False", "AsExpected"),
    ),
    "running, awaiting approval": (
        status("Running", ("Concluded", "False", "AwaitingApproval")),
        ("True", "AwaitingApproval", "False", "AsExpected"),
    ),
    "running, before any analysis": (
        status("Running", ("Ready", "True", "AllVariantsReady")),
        ("True", "Running", "False", "AsExpected"),
    ),
    "paused": (
        status("Running", ("Progressing", "False", "Paused")),
        ("True", "Paused", "False", "AsExpected"),
    ),
    "promoted": (
        status("Promoted", ("Concluded", "True", "Promoted")),
        ("False", "Promoted", "False", "AsExpected"),
    ),
    "inconclusive": (
        status("Inconclusive", ("Concluded", "True", "MaxDurationReached")),
        ("False", "Inconclusive", "False", "AsExpected"),
    ),
    "rolled back": (
        status("RolledBack", ("Concluded", "True", "RolledBack")),
        ("False", "RolledBack", "True", "RolledBack"),
    ),
    "failed": (
        status("Failed", ("Degraded", "True", "UnsupportedModelURI")),
        ("False", "UnsupportedModelURI", "True", "UnsupportedModelURI"),
    ),
    "degraded while running": (
        status("Running", ("Degraded", "True", "NameConflict")),
        ("False", "NameConflict", "True", "NameConflict"),
    ),
}


@pytest.mark.parametrize("case", list(EXPERIMENTS))
def test_experiment_mapping(case: str) -> None:
    given, expected = EXPERIMENTS[case]
    out = kstatus.experiment_conditions(given, 4, "T1")
    assert flags(out) == expected
    for c in out:
        if c["type"] in ("Reconciling", "Stalled"):
            assert c["observedGeneration"] == 4 and c["lastTransitionTime"] == "T1"
    # the other conditions are untouched
    assert [c for c in out if c["type"] not in ("Reconciling", "Stalled")] == given["conditions"]


def test_stalled_carries_the_degraded_message() -> None:
    given = status("Failed", ("Degraded", "True", "InvalidSpec"))
    stalled = cond.find(kstatus.experiment_conditions(given, 1, "T"), "Stalled")
    assert stalled is not None and stalled["message"] == "InvalidSpec message"


ALERT_POLICIES = {
    "never evaluated": (status(None), ("True", "NotEvaluated", "False", "AsExpected")),
    "evaluated": (
        status(None, ("Ready", "True", "Evaluated"), ("Degraded", "False", "AsExpected")),
        ("False", "Evaluated", "False", "AsExpected"),
    ),
    "prometheus down": (
        status(None, ("Ready", "False", "PrometheusUnavailable")),
        ("True", "PrometheusUnavailable", "False", "AsExpected"),
    ),
    "bad rule": (
        status(None, ("Ready", "True", "Evaluated"), ("Degraded", "True", "RuleFailed")),
        ("False", "RuleFailed", "True", "RuleFailed"),
    ),
}


@pytest.mark.parametrize("case", list(ALERT_POLICIES))
def test_alertpolicy_mapping(case: str) -> None:
    given, expected = ALERT_POLICIES[case]
    assert flags(kstatus.alertpolicy_conditions(given, 2, "T")) == expected


def test_complete_adds_conditions_only_when_they_change() -> None:
    old = status("Running", ("Concluded", "False", "Ramping"))
    old["conditions"] = kstatus.experiment_conditions(old, 3, "T0")
    # a patch that changes nothing the conditions derive from stays as it is
    assert kstatus.complete(old, {"variants": []}, 3, "T1", kstatus.experiment_conditions) == {
        "variants": []
    }
    # a new phase brings its conditions; lastTransitionTime moves only where status flipped
    patch = {"phase": "RolledBack"}
    concluded = cond.set_condition(old["conditions"], "Concluded", True, "RolledBack", now="T1")
    patch["conditions"] = concluded  # type: ignore[assignment]
    out = kstatus.complete(old, patch, 3, "T1", kstatus.experiment_conditions)
    assert flags(out["conditions"]) == ("False", "RolledBack", "True", "RolledBack")
    stalled = cond.find(out["conditions"], "Stalled")
    assert stalled is not None and stalled["lastTransitionTime"] == "T1"


def test_complete_derives_from_the_merged_status() -> None:
    # an old status without the kstatus conditions gets them from a partial patch
    old = status("Pending", ("Progressing", "True", "WaitingForReplicas"))
    out = kstatus.complete(old, {"phase": "Running"}, 1, "T", kstatus.experiment_conditions)
    assert out["phase"] == "Running"
    assert flags(out["conditions"])[:2] == ("True", "Running")
