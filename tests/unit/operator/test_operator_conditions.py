"""Condition helpers follow the API conventions: stable lastTransitionTime, CamelCase."""

from __future__ import annotations

import pytest

from rankexp.api import conditions as cond


def test_set_condition_adds_all_fields() -> None:
    out = cond.set_condition([], "Ready", False, "VariantsNotReady", "m", generation=3, now="T1")
    assert out == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "VariantsNotReady",
            "message": "m",
            "lastTransitionTime": "T1",
            "observedGeneration": 3,
        }
    ]


def test_transition_time_moves_only_when_status_changes() -> None:
    first = cond.set_condition([], "Ready", False, "VariantsNotReady", now="T1")
    same = cond.set_condition(first, "Ready", False, "OtherReason", "new", now="T2")
    assert same[0]["lastTransitionTime"] == "T1"
    assert same[0]["reason"] == "OtherReason"
    flipped = cond.set_condition(same, "Ready", True, "AllVariantsReady", now="T3")
    assert flipped[0]["lastTransitionTime"] == "T3"


def test_other_conditions_are_kept_and_ordered() -> None:
    out = cond.set_condition([], "Degraded", False, "AsExpected", now="T")
    out = cond.set_condition(out, "Custom", True, "Because", now="T")
    out = cond.set_condition(out, "Ready", True, "AllVariantsReady", now="T")
    out = cond.set_condition(out, "Progressing", False, "RolloutComplete", now="T")
    assert [c["type"] for c in out] == ["Ready", "Progressing", "Degraded", "Custom"]
    assert cond.is_true(out, "Ready") and not cond.is_true(out, "Degraded")
    assert cond.find(out, "Missing") is None


@pytest.mark.parametrize("reason", ["not camel", "lowerCase", "With-Dash", ""])
def test_reason_must_be_one_camel_case_word(reason: str) -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        cond.set_condition([], "Ready", True, reason)


def test_status_values() -> None:
    assert cond.as_status(True) == "True"
    assert cond.as_status("Unknown") == "Unknown"
    with pytest.raises(ValueError):
        cond.as_status("yes")


def test_utcnow_is_rfc3339_utc() -> None:
    assert cond.utcnow().endswith("Z") and "T" in cond.utcnow()
