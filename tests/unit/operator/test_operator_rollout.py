"""The traffic state machine (rankexp.experiment.rollout): stages, actions, status fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rankexp.api import ExperimentSpec
from rankexp.experiment import rollout
from rankexp.experiment.rollout import ActionRecord


def spec(weights: dict[str, int], steps: list[int] | None = None, **extra: Any) -> ExperimentSpec:
    names = list(weights)
    raw: dict[str, Any] = {
        "template": {"image": "img"},
        "variants": [
            {"name": n, "model": {"uri": f"/models/{n}"}, "weight": w} for n, w in weights.items()
        ],
        "control": names[0],
        **extra,
    }
    if steps is not None:
        raw["traffic"] = {"steps": steps}
    return ExperimentSpec.model_validate(raw)


def test_stages_ramp_the_non_control_weight_and_end_at_the_spec() -> None:
    plan = rollout.stages(spec({"control": 50, "treatment": 50}, [10, 25, 50]))
    assert plan == [
        {"control": 90, "treatment": 10},
        {"control": 75, "treatment": 25},
        {"control": 50, "treatment": 50},
    ]


def test_stages_split_between_treatments_by_spec_weight_and_drop_steps_at_the_total() -> None:
    plan = rollout.stages(spec({"c": 40, "a": 40, "b": 20}, [15, 60, 90]))
    assert plan == [{"c": 85, "a": 10, "b": 5}, {"c": 40, "a": 40, "b": 20}]
    assert all(sum(stage.values()) == 100 for stage in plan)


def test_split_rounds_by_largest_remainder() -> None:
    assert rollout.split(10, {"a": 1, "b": 1, "c": 1}, ["a", "b", "c"]) == {"a": 4, "b": 3, "c": 3}
    assert rollout.split(7, {"a": 0, "b": 0}, ["a", "b"]) == {"a": 0, "b": 0}


def test_no_steps_means_one_stage() -> None:
    assert rollout.stages(spec({"control": 70, "t": 30})) == [{"control": 70, "t": 30}]


def test_the_design_ignores_replicas_pause_and_promotion() -> None:
    base = spec({"control": 50, "t": 50})
    same = spec({"control": 50, "t": 50}, paused=True, promotion={"auto": True})
    other = spec({"control": 40, "t": 60})
    assert rollout.design_hash(base) == rollout.design_hash(same)
    assert rollout.design_hash(base) != rollout.design_hash(other)


def test_a_run_from_start_to_promotion() -> None:
    s = spec({"control": 50, "t": 50}, [10])
    start = rollout.start(None, s, now="2026-01-01T00:00:00Z", generation=1)
    assert (start.seq, start.type, start.weights, start.stages) == (
        1,
        "Start",
        {"control": 90, "t": 10},
        2,
    )
    ramp = rollout.ramp(start, s, now="2026-01-01T00:01:00Z", generation=1, reason="ok")
    assert (ramp.seq, ramp.step, ramp.weights, ramp.last_stage) == (
        2,
        1,
        {"control": 50, "t": 50},
        True,
    )
    done = rollout.conclude(
        ramp, s, "Promote", now="2026-01-01T00:02:00Z", generation=1, reason="win", winner="t"
    )
    assert done.weights == {"control": 0, "t": 100} and done.scaled_down == ("control",)
    assert (done.outcome, done.winner, done.concluded) == ("Promoted", "t", True)
    assert rollout.replicas(s, done) == {"control": 0, "t": 1}
    back = rollout.conclude(
        ramp, s, "Rollback", now="2026-01-01T00:02:00Z", generation=1, reason="loss"
    )
    assert back.weights == {"control": 100, "t": 0} and back.winner is None


def test_records_round_trip_and_malformed_ones_are_ignored() -> None:
    s = spec({"control": 50, "t": 50})
    record = rollout.start(None, s, now="2026-01-01T00:00:00Z", generation=3)
    assert ActionRecord.from_status(record.to_status()) == record
    assert ActionRecord.from_status(record.annotation()) == record
    for bad in (None, "", "{", {"seq": 1}, {**record.to_status(), "type": "Explode"}):
        assert ActionRecord.from_status(bad) is None


def test_latest_is_the_highest_sequence() -> None:
    s = spec({"control": 50, "t": 50})
    one = rollout.start(None, s, now="2026-01-01T00:00:00Z", generation=1)
    two = rollout.conclude(one, s, "Inconclusive", now="2026-01-01T00:01:00Z", generation=1,
                           reason="time")  # fmt: skip
    assert rollout.latest(one, two) is two and rollout.latest(two, None) is two
    assert rollout.latest(None, None) is None


def test_status_fields_for_a_new_run_and_for_the_same_record_again() -> None:
    s = spec({"control": 50, "t": 50})
    start = rollout.start(None, s, now="2026-01-01T00:00:00Z", generation=1)
    fields = rollout.status_fields({}, start, now="2026-01-01T00:00:00Z")
    assert fields["phase"] == "Pending" and fields["startedAt"] is None
    assert fields["trafficHistory"] == [
        {"since": "2026-01-01T00:00:00Z", "weights": rollout.traffic(start)}
    ]
    status = {**fields, "startedAt": "2026-01-01T00:00:05Z", "phase": "Running"}
    again = rollout.status_fields(status, start, now="2026-01-01T00:00:10Z")
    assert "phase" not in again and again["trafficHistory"] == fields["trafficHistory"]
    done = rollout.conclude(start, s, "Rollback", now="2026-01-01T00:03:00Z", generation=1,
                            reason="guardrail breached")  # fmt: skip
    end = rollout.status_fields(status, done, now="2026-01-01T00:03:00Z")
    assert end["phase"] == "RolledBack" and len(end["trafficHistory"]) == 2
    (concluded,) = [c for c in end["conditions"] if c["type"] == "Concluded"]
    assert (concluded["status"], concluded["reason"]) == ("True", "RolledBack")


def test_event_names_are_fixed_per_action() -> None:
    assert rollout.event_name("exp", "0123456789", 4) == "exp.01234567.action-4"
    s = spec({"control": 50, "t": 50})
    start = rollout.start(None, s, now="2026-01-01T00:00:00Z", generation=1)
    done = rollout.conclude(start, s, "Promote", now="2026-01-01T00:01:00Z", generation=1,
                            reason="t beats control", winner="t")  # fmt: skip
    assert rollout.event_for(done) == ("Normal", "Promoted", "t promoted to 100 %: t beats control")
    assert rollout.event_for(start)[1] == "RunStarted"


def test_segments_clip_the_history_to_the_window() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    history = [
        {"since": "2026-01-01T00:00:00Z", "weights": [{"variant": "c", "weight": 90},
                                                      {"variant": "t", "weight": 10}]},
        {"since": "2026-01-01T00:10:00Z", "weights": [{"variant": "c", "weight": 50},
                                                      {"variant": "t", "weight": 50}]},
    ]  # fmt: skip
    got = rollout.segments(history, t0 + timedelta(minutes=5), t0 + timedelta(minutes=20))
    assert [(a.minute, b.minute, w["t"]) for a, b, w in got] == [(5, 10, 10), (10, 20, 50)]


def test_expected_weights_follow_the_exposures_of_each_period() -> None:
    got = rollout.expected_weights(
        [({"c": 90, "t": 10}, 1000.0), ({"c": 50, "t": 50}, 3000.0)], {"c": 50, "t": 50}
    )
    assert got == pytest.approx({"c": 60.0, "t": 40.0})
    assert rollout.expected_weights([({"c": 90, "t": 10}, 0.0)], {"c": 50, "t": 50}) == {
        "c": 50.0,
        "t": 50.0,
    }


def test_srm_segments_leave_out_the_switch_to_new_weights() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    history = [
        {"since": "2026-01-01T00:00:00Z", "settledAt": "2026-01-01T00:00:10Z",
         "weights": [{"variant": "c", "weight": 90}, {"variant": "t", "weight": 10}]},
        {"since": "2026-01-01T00:05:00Z", "settledAt": "2026-01-01T00:05:20Z",
         "weights": [{"variant": "c", "weight": 50}, {"variant": "t", "weight": 50}]},
        {"since": "2026-01-01T00:09:00Z",
         "weights": [{"variant": "c", "weight": 0}, {"variant": "t", "weight": 100}]},
    ]  # fmt: skip
    margin = timedelta(seconds=8)
    got = rollout.srm_segments(history, t0, t0 + timedelta(minutes=10), margin)
    assert [(a.minute, a.second, b.minute, b.second, w["t"]) for a, b, w in got] == [
        (0, 18, 5, 0, 10),  # from settledAt + margin to the next change
        (5, 28, 9, 0, 50),
    ]  # the last period is not settled: left out
