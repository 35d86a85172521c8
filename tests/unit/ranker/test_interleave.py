import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranker.route.interleave import CONTROL, TREATMENT, team_draft, winner

# Ranked lists of distinct item ids drawn from a small pool so the lists overlap.
ranked = st.lists(st.integers(min_value=0, max_value=40), unique=True, max_size=30)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
ks = st.integers(min_value=0, max_value=35)


def _coin(seed: int) -> random.Random:
    return random.Random(seed)


def _is_subsequence(sub: list[int], seq: list[int]) -> bool:
    it = iter(seq)
    return all(x in it for x in sub)


@settings(max_examples=300)
@given(ranked, ranked, ks, seeds)
def test_feed_is_distinct_bounded_and_each_item_from_its_team(
    a: list[int], b: list[int], k: int, seed: int
) -> None:
    rng = _coin(seed)
    items, teams = team_draft(a, b, k, lambda: rng.random() < 0.5)
    assert len(items) == len(teams)
    assert len(items) == len(set(items))
    assert len(items) == min(k, len(set(a) | set(b)))
    for item, team in zip(items, teams, strict=True):
        assert team in (CONTROL, TREATMENT)
        assert item in (a if team == CONTROL else b)


@settings(max_examples=300)
@given(ranked, ranked, ks, seeds)
def test_each_team_keeps_the_relative_order_of_its_list(
    a: list[int], b: list[int], k: int, seed: int
) -> None:
    rng = _coin(seed)
    items, teams = team_draft(a, b, k, lambda: rng.random() < 0.5)
    for team, source in ((CONTROL, a), (TREATMENT, b)):
        picked = [i for i, t in zip(items, teams, strict=True) if t == team]
        assert _is_subsequence(picked, source)


@settings(max_examples=300)
@given(ranked, ranked, ks, seeds)
def test_each_pick_is_the_teams_best_item_not_yet_in_the_feed(
    a: list[int], b: list[int], k: int, seed: int
) -> None:
    rng = _coin(seed)
    items, teams = team_draft(a, b, k, lambda: rng.random() < 0.5)
    for pos, (item, team) in enumerate(zip(items, teams, strict=True)):
        source = a if team == CONTROL else b
        before = set(items[:pos])
        assert item == next(x for x in source if x not in before)


@settings(max_examples=300)
@given(st.data(), ks, seeds)
def test_team_sizes_differ_by_at_most_one_when_both_lists_are_long_enough(
    data: st.DataObject, k: int, seed: int
) -> None:
    a = data.draw(st.lists(st.integers(0, 80), unique=True, min_size=k, max_size=k + 10))
    b = data.draw(st.lists(st.integers(0, 80), unique=True, min_size=k, max_size=k + 10))
    rng = _coin(seed)
    items, teams = team_draft(a, b, k, lambda: rng.random() < 0.5)
    assert len(items) == k
    assert abs(teams.count(CONTROL) - teams.count(TREATMENT)) <= 1


@settings(max_examples=200)
@given(ranked, ks, seeds)
def test_identical_lists_give_the_same_feed_whatever_the_coin(
    a: list[int], k: int, seed: int
) -> None:
    rng = _coin(seed)
    items, _ = team_draft(a, list(a), k, lambda: rng.random() < 0.5)
    assert items == a[:k]
    assert team_draft(a, a, k, lambda: True)[0] == items
    assert team_draft(a, a, k, lambda: False)[0] == items


def test_one_list_exhausted_the_other_keeps_picking() -> None:
    items, teams = team_draft([1], [2, 3, 4, 5], 4, lambda: True)
    assert items == [1, 2, 3, 4]
    assert teams == [CONTROL, TREATMENT, TREATMENT, TREATMENT]
    items, teams = team_draft([], [7, 8], 5, lambda: True)
    assert (items, teams) == ([7, 8], [TREATMENT, TREATMENT])
    assert team_draft([], [], 3, lambda: True) == ([], [])


def test_coin_decides_who_picks_first_each_round() -> None:
    a, b = [1, 2, 3, 4], [5, 6, 7, 8]
    flips = iter([True, False])
    items, teams = team_draft(a, b, 4, lambda: next(flips))
    assert items == [1, 5, 6, 2]
    assert teams == [CONTROL, TREATMENT, TREATMENT, CONTROL]


def test_shared_top_item_goes_to_the_team_that_picks_first() -> None:
    a, b = [1, 2, 3], [1, 3, 2]
    assert team_draft(a, b, 3, lambda: True) == ([1, 3, 2], [CONTROL, TREATMENT, CONTROL])
    assert team_draft(a, b, 3, lambda: False) == ([1, 2, 3], [TREATMENT, CONTROL, TREATMENT])


def test_coin_is_fair_over_many_feeds() -> None:
    rng = random.Random(20080101)
    a, b = list(range(10)), list(range(10, 20))
    n = 10_000
    control_first = 0
    control_picks = 0
    for _ in range(n):
        items, teams = team_draft(a, b, 5, lambda: rng.random() < 0.5)
        control_first += teams[0] == CONTROL
        control_picks += teams.count(CONTROL)
    # Binomial(10_000, 1/2): sd = 50, so 4 sd is 200.
    assert abs(control_first - n / 2) < 200
    # Odd k: the extra pick goes to whoever picked first in the last round.
    assert abs(control_picks - 2.5 * n) < 200
    # With identical lists each team still gets a fair share of the feed.
    hits = 0
    for _ in range(n):
        _, teams = team_draft(a, a, 1, lambda: rng.random() < 0.5)
        hits += teams[0] == CONTROL
    assert abs(hits - n / 2) < 200


def test_winner_counts_clicks_per_team() -> None:
    assert winner([]) == "tie"
    assert winner([CONTROL]) == "control"
    assert winner([TREATMENT, TREATMENT, CONTROL]) == "treatment"
    assert winner([TREATMENT, CONTROL]) == "tie"
    assert winner(iter([CONTROL, CONTROL, TREATMENT])) == "control"
    with pytest.raises(ValueError, match="team"):
        winner([2])
