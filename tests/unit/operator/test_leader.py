"""Leader election's rules on a Lease held in memory, with a clock the test moves.

The real thing (three operator processes, a kube-apiserver, SIGKILL and SIGSTOP) is in
tests/integration/operator/test_ha.py; here each rule of client-go's elector and of the
fence is checked one at a time.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from rankexp.runtime import leader


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryLeases:
    """A LeaseClient with the API server's optimistic concurrency (resourceVersion)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False
        self.writes: list[str | None] = []

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.down:
            raise ConnectionError("unreachable")
        return copy.deepcopy(self.lease)

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise leader.Conflict("exists")
        return self._store(body)

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.lease is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise leader.Conflict("changed")
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(self.lease["spec"]["holderIdentity"])
        return copy.deepcopy(self.lease)


CONFIG = {"namespace": "ns", "lease_duration": 15.0, "renew_deadline": 10.0, "retry_period": 2.0}


def elector(identity: str, leases: MemoryLeases, clock: Clock) -> leader.Elector:
    config = leader.LeaseConfig(identity=identity, **CONFIG)  # type: ignore[arg-type]
    wall = lambda: datetime(2026, 1, 1, tzinfo=UTC)  # noqa: E731
    return leader.Elector(config, leases, fence=leader.Fence(clock), clock=clock, wall=wall)


def test_the_first_candidate_creates_the_lease_and_may_write() -> None:
    leases, clock = MemoryLeases(), Clock()
    a = elector("a", leases, clock)
    assert not a.fence.ok()
    assert a.try_acquire_or_renew()
    assert a.leading and a.fence.ok()
    spec = leases.lease["spec"]  # type: ignore[index]
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0
    assert spec["leaseDurationSeconds"] == 15 and spec["renewTime"].endswith("Z")


def test_a_valid_lease_is_not_taken_until_it_was_seen_unchanged_for_the_duration() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = elector("a", leases, clock), elector("b", leases, clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 14.9  # a stops renewing; b counts from when it saw the last change
    assert not b.try_acquire_or_renew()
    clock.now += 0.2
    assert b.try_acquire_or_renew()
    assert leases.lease["spec"]["holderIdentity"] == "b"  # type: ignore[index]
    assert leases.lease["spec"]["leaseTransitions"] == 1  # type: ignore[index]


def test_renewals_restart_the_candidates_countdown() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = elector("a", leases, clock), elector("b", leases, clock)
    assert a.try_acquire_or_renew()
    for _ in range(20):
        clock.now += 2.0
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert leases.writes.count("b") == 0


def test_the_fence_closes_renew_deadline_after_the_last_renewal_began() -> None:
    leases, clock = MemoryLeases(), Clock()
    a = elector("a", leases, clock)
    assert a.try_acquire_or_renew()
    leases.down = True  # a partition: renewals fail
    clock.now += 9.9
    assert not a.try_acquire_or_renew() and a.fence.ok()
    clock.now += 0.2
    assert not a.fence.ok()
    with pytest.raises(leader.NotLeader, match="does not hold the leader Lease"):
        a.fence.check("PATCH /x")


def test_the_old_leader_fence_is_closed_before_anyone_else_can_hold_the_lease() -> None:
    # a (stopped) renewed last at t0; b saw that renewal no earlier than t0: b can take
    # over at t0 + 15 at the earliest, a's fence closed at t0 + 10.
    leases, clock = MemoryLeases(), Clock()
    a, b = elector("a", leases, clock), elector("b", leases, clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    t0 = clock.now
    while not b.try_acquire_or_renew():
        clock.now += 0.5
        if clock.now - t0 >= 10.0:
            assert not a.fence.ok()
    assert clock.now - t0 >= 15.0 and not a.fence.ok()


def test_a_leader_that_wakes_up_after_a_takeover_has_lost() -> None:
    leases, clock = MemoryLeases(), Clock()
    fast = {**CONFIG, "retry_period": 0.001}
    a = leader.Elector(leader.LeaseConfig(identity="a", **fast), leases,  # type: ignore[arg-type]
                       fence=leader.Fence(clock), clock=clock)  # fmt: skip
    b = elector("b", leases, clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 16.0  # a was stopped (SIGSTOP) for 16 s
    assert b.try_acquire_or_renew()
    lost: list[bool] = []
    a.renew_forever(on_lost=lambda: lost.append(True))  # its first renewal fails: lost
    assert lost == [True] and not a.leading and not a.fence.ok()
    clock.now -= 15.0  # even a clock that went back does not reopen a closed fence
    assert not a.fence.ok()
    assert leases.lease["spec"]["holderIdentity"] == "b"  # type: ignore[index]


def test_release_hands_over_at_once_and_closes_the_fence() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = elector("a", leases, clock), elector("b", leases, clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release()
    assert not a.fence.ok() and not a.leading
    assert leases.lease["spec"]["holderIdentity"] is None  # type: ignore[index]
    assert b.try_acquire_or_renew()  # an empty holder is free at once


def test_a_takeover_written_on_an_old_version_loses() -> None:
    leases, clock = MemoryLeases(), Clock()
    a, b = elector("a", leases, clock), elector("b", leases, clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 16.0
    read = leases.get

    def a_renews_after_b_read(namespace: str, name: str) -> dict[str, Any] | None:
        got = read(namespace, name)
        leases.get = read  # type: ignore[method-assign]
        assert a.try_acquire_or_renew()  # a's renewal reaches the API server first
        return got

    leases.get = a_renews_after_b_read  # type: ignore[method-assign]
    assert not b.try_acquire_or_renew()  # b's update carries the old resourceVersion: 409
    assert leases.lease["spec"]["holderIdentity"] == "a"  # type: ignore[index]
    assert not b.fence.ok()


def test_no_election_means_an_open_fence() -> None:
    assert leader.Fence().ok()


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"), [(10, 10, 2), (10, 12, 2), (15, 10, 10), (15, 10, 0)]
)
def test_durations_must_nest(duration: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError):
        leader.LeaseConfig(namespace="ns", identity="a", lease_duration=duration,
                           renew_deadline=deadline, retry_period=retry)  # fmt: skip
