"""The stored bucket allocation: a weight change moves only the users it must.

Property (issue 8, item 5): for any sequence of weight changes over 2 to 10 variants,
users leave only variants whose weight shrank, enter only variants whose weight grew,
a variant whose weight is unchanged keeps exactly its users, and the number of buckets
that change owner is the weight moved x 100. Routing goes through the router's own
config model, serialised and parsed again at every step as a restarted router would.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranker.protocol.hashing import N_ROUTING_BUCKETS
from ranker.route.allocation import (
    BUCKETS_PER_PERCENT,
    AllocationError,
    layout,
    owners,
    reallocate,
    validate,
)
from ranker.route.router import RoutingConfig, assign_variant

USERS = range(10_000)


def _config(weights: dict[str, int], allocation: dict[str, list[tuple[int, int]]]) -> RoutingConfig:
    names = list(weights)
    raw = {
        "experiment": "e",
        "salt": "fixed-salt",
        "control": names[0],
        "variants": [
            {"name": n, "weight": weights[n], "endpoints": [], "buckets": allocation[n]}
            for n in names
        ],
    }
    # through JSON, as the router reads routing.json after a restart
    return RoutingConfig.model_validate_json(json.dumps(raw))


def _owner_list(allocation: dict[str, list[tuple[int, int]]], order: list[str]) -> list[str]:
    table = owners(allocation, order)
    return [order[i] for i in table]


def test_issue_example_a_b_n_keeps_the_unchanged_variant_exactly() -> None:
    """50/25/25 -> 30/25/45 moved 2,007 users out of t1 and 1,933 others in before."""
    order = ["control", "t1", "t2"]
    before_w = {"control": 50, "t1": 25, "t2": 25}
    after_w = {"control": 30, "t1": 25, "t2": 45}
    before_a = reallocate(None, order, before_w)
    after_a = reallocate(before_a, order, after_w)
    before = _config(before_w, before_a)
    after = _config(after_w, after_a)
    moves = Counter((assign_variant(before, u), assign_variant(after, u)) for u in USERS)
    assert moves[("t1", "t1")] == sum(n for (a, _), n in moves.items() if a == "t1")
    assert all(a == b or (a, b) == ("control", "t2") for (a, b) in moves)
    moved = sum(n for (a, b), n in moves.items() if a != b)
    # 20 % of the weight moved: about 2,000 of 10,000 users (binomial sd ~ 40)
    assert 1_800 < moved < 2_200


def test_fresh_layout_matches_the_fixed_layout_of_configs_without_buckets() -> None:
    weights = {"control": 50, "a": 30, "b": 20}
    plain = RoutingConfig.model_validate(
        {
            "experiment": "e",
            "salt": "s",
            "control": "control",
            "variants": [{"name": n, "weight": w} for n, w in weights.items()],
        }
    )
    stored = _config(weights, reallocate(None, list(weights), weights))
    stored = stored.model_copy(update={"salt": "s"})
    assert [assign_variant(plain, u) for u in range(3000)] == [
        assign_variant(stored, u) for u in range(3000)
    ]


@st.composite
def weight_sequences(draw: st.DrawFn) -> tuple[list[str], list[dict[str, int]]]:
    n = draw(st.integers(min_value=2, max_value=10))
    names = ["control", *(f"t{i}" for i in range(1, n))]
    steps = draw(st.integers(min_value=1, max_value=8))
    sequence = []
    for _ in range(steps + 1):
        # n - 1 cut points in 0..100 give n weights summing to 100 (zeros allowed)
        cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
        bounds = [0, *cuts, 100]
        sequence.append({name: bounds[i + 1] - bounds[i] for i, name in enumerate(names)})
    return names, sequence


@settings(max_examples=150, deadline=None)
@given(weight_sequences())
def test_any_sequence_moves_only_the_buckets_it_must(
    case: tuple[list[str], list[dict[str, int]]],
) -> None:
    order, sequence = case
    allocation = reallocate(None, order, sequence[0])
    validate(allocation, sequence[0])
    before = _owner_list(allocation, order)
    for old_w, new_w in zip(sequence, sequence[1:], strict=False):
        stored = json.loads(json.dumps(allocation))  # as kept in the ConfigMap
        allocation = reallocate(stored, order, new_w)
        validate(allocation, new_w)
        after = _owner_list(allocation, order)
        moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        for a, b in moved:
            assert new_w[a] < old_w[a], f"{a} lost buckets but its weight did not shrink"
            assert new_w[b] > old_w[b], f"{b} gained buckets but its weight did not grow"
        for name in order:
            if new_w[name] == old_w[name]:
                mine = [i for i, o in enumerate(before) if o == name]
                assert all(after[i] == name for i in mine), f"{name} lost users"
        weight_moved = sum(max(0, new_w[n] - old_w[n]) for n in order)
        assert len(moved) == weight_moved * BUCKETS_PER_PERCENT
        before = after


@settings(max_examples=40, deadline=None)
@given(weight_sequences())
def test_users_follow_the_buckets_across_router_restarts(
    case: tuple[list[str], list[dict[str, int]]],
) -> None:
    order, sequence = case
    allocation = reallocate(None, order, sequence[0])
    previous = {u: assign_variant(_config(sequence[0], allocation), u) for u in range(2000)}
    for old_w, new_w in zip(sequence, sequence[1:], strict=False):
        allocation = reallocate(allocation, order, new_w)
        config = _config(new_w, allocation)  # a fresh parse: a restarted router
        now = {u: assign_variant(config, u) for u in range(2000)}
        again = {u: assign_variant(_config(new_w, allocation), u) for u in range(2000)}
        assert now == again
        for u in now:
            if now[u] != previous[u]:
                assert new_w[previous[u]] < old_w[previous[u]]
                assert new_w[now[u]] > old_w[now[u]]
        previous = now


def test_removing_and_adding_variants() -> None:
    a = reallocate(None, ["control", "x", "y"], {"control": 40, "x": 30, "y": 30})
    b = reallocate(a, ["control", "x", "z"], {"control": 40, "x": 30, "z": 30})
    assert b["control"] == a["control"] and b["x"] == a["x"]
    assert b["z"] == a["y"]  # the freed buckets go to the newcomer


def test_a_broken_previous_allocation_falls_back_to_the_layout() -> None:
    weights = {"control": 50, "t": 50}
    broken = {"control": [[0, 10]], "t": [[5, 10000]]}
    assert reallocate(broken, ["control", "t"], weights) == layout(["control", "t"], weights)


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ({"control": [[0, 5000]], "t": [[5000, 9000]]}, "owns 4000 buckets"),
        ({"control": [[0, 5000]], "t": [[4000, 9000]]}, "overlap at bucket 4000"),
        ({"control": [[0, 5000]], "t": [[5000, 10001]]}, "is not"),
        ({"control": [[0, 2500], [2500, 5000]], "t": [[5001, 10000]]}, "owns 4999"),
    ],
)
def test_router_rejects_allocations_that_disagree_with_the_weights(
    buckets: dict[str, list[list[int]]], message: str
) -> None:
    raw = {
        "experiment": "e",
        "control": "control",
        "variants": [{"name": n, "weight": 50, "buckets": b} for n, b in buckets.items()],
    }
    with pytest.raises(ValueError, match=message):
        RoutingConfig.model_validate(raw)


def test_buckets_for_some_variants_only_are_rejected() -> None:
    raw = {
        "experiment": "e",
        "control": "control",
        "variants": [
            {"name": "control", "weight": 50, "buckets": [[0, 5000]]},
            {"name": "t", "weight": 50},
        ],
    }
    with pytest.raises(ValueError, match="every variant or for none"):
        RoutingConfig.model_validate(raw)


def test_validate_names_the_gap() -> None:
    with pytest.raises(AllocationError, match="gap"):
        validate({"a": [(0, 5000)], "b": [(6000, 10000)]}, {"a": 50, "b": 40})
    assert N_ROUTING_BUCKETS == 100 * BUCKETS_PER_PERCENT
