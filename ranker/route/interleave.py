"""Team-draft interleaving (Radlinski, Kurup and Joachims 2008), pure and I/O-free.

Two ranked lists of item ids, ``a`` (control) and ``b`` (treatment), are merged
into one feed of at most ``k`` distinct items. The merge proceeds in rounds; in
each round a fair coin decides which team picks first, then each team in turn
adds its highest-ranked item that is not yet in the feed. When one list has
nothing new left the other keeps picking until the feed is full or both lists
are exhausted. Each feed position remembers the team that contributed it, and a
click on that position credits that team (:func:`winner`).

With both lists at least ``k`` long every round adds one item per team (except
possibly the last, when ``k`` is odd), so the teams' sizes differ by at most one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

Team = int  # 0 = control (list a), 1 = treatment (list b)
CONTROL, TREATMENT = 0, 1
WINNERS = ("control", "treatment", "tie")


class _Cursor:
    """Walks one ranked list, skipping items already placed in the feed."""

    __slots__ = ("items", "pos")

    def __init__(self, items: Sequence[int]) -> None:
        self.items = items
        self.pos = 0

    def next_new(self, seen: set[int]) -> int | None:
        items = self.items
        while self.pos < len(items):
            item = items[self.pos]
            if item not in seen:
                return item
            self.pos += 1
        return None


def team_draft(
    a: Sequence[int], b: Sequence[int], k: int, coin: Callable[[], bool]
) -> tuple[list[int], list[int]]:
    """Team-draft interleaving (Radlinski, Kurup, Joachims 2008) of two ranked lists of item ids.

    Returns (items, teams): at most k distinct items and, for each, the team that
    contributed it. Per round a fair coin (coin() True -> control picks first)
    decides which team picks first; each team picks its highest-ranked item not
    yet in the feed. When one list has nothing new left the other keeps picking.
    The coin is called once per round in which both lists still have something new.
    """
    items: list[int] = []
    teams: list[int] = []
    if k <= 0:
        return items, teams
    seen: set[int] = set()
    cursors = (_Cursor(a), _Cursor(b))

    def pick(team: Team) -> bool:
        item = cursors[team].next_new(seen)
        if item is None:
            return False
        seen.add(item)
        items.append(item)
        teams.append(team)
        return True

    order: tuple[Team, ...]
    while len(items) < k:
        has_a = cursors[CONTROL].next_new(seen) is not None
        has_b = cursors[TREATMENT].next_new(seen) is not None
        if has_a and has_b:
            order = (CONTROL, TREATMENT) if coin() else (TREATMENT, CONTROL)
        elif has_a:
            order = (CONTROL,)
        elif has_b:
            order = (TREATMENT,)
        else:
            break
        for team in order:
            if len(items) >= k:
                break
            pick(team)
    return items, teams


def winner(teams_of_clicked: Iterable[int]) -> str:
    """Return "control", "treatment" or "tie" by the count of clicked items per team."""
    counts = [0, 0]
    for team in teams_of_clicked:
        if team not in (CONTROL, TREATMENT):
            raise ValueError(f"team must be {CONTROL} or {TREATMENT}, got {team!r}")
        counts[team] += 1
    if counts[CONTROL] > counts[TREATMENT]:
        return "control"
    if counts[TREATMENT] > counts[CONTROL]:
        return "treatment"
    return "tie"
