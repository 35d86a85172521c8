"""The interleaving token and the open-feed book (pure; the clock is a parameter)."""

from __future__ import annotations

import pytest

from ranker.route import attribution
from ranker.route.attribution import OutcomeBook, TokenError, decode, encode, token_key

KEY = token_key("exp", "salt")


def test_a_token_round_trips_and_names_each_items_team() -> None:
    items, teams = [5, 9, 2, 70_000, 1], [1, 0, 0, 1, 1]
    tok = encode(KEY, 42, 17, items, teams, served_at=1000.0, feed_id=b"f" * 8)
    feed = decode(KEY, tok, 42)
    assert feed.items == tuple(items) and feed.teams == tuple(teams)
    assert (feed.bucket, feed.served_at, feed.feed_id) == (17, 1000, b"f" * 8)
    assert [feed.team_of(i) for i in items] == teams
    assert feed.team_of(3) is None
    assert "=" not in tok and "+" not in tok and "/" not in tok  # url-safe, unpadded


@pytest.mark.parametrize(
    "mutate, user",
    [
        (lambda t: t[:-5] + ("A" if t[-5] != "A" else "B") + t[-4:], 42),  # edited tag
        (lambda t: t[:10] + ("A" if t[10] != "A" else "B") + t[11:], 42),  # edited body
        (lambda t: t[:20], 42),  # truncated
        (lambda t: t, 43),  # another user
        (lambda t: encode(token_key("other", "salt"), 42, 0, [1], [0]), 42),  # another experiment
        (lambda t: "%%%", 42),  # not base64url
    ],
)
def test_tokens_that_were_not_issued_for_this_user_and_experiment_are_refused(
    mutate: object, user: int
) -> None:
    tok = encode(KEY, 42, 3, [1, 2, 3], [0, 1, 0])
    with pytest.raises(TokenError, match="interleaving_token"):
        decode(KEY, mutate(tok), user)  # type: ignore[operator]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _book(window: float = 10.0, max_open: int = 100) -> tuple[OutcomeBook, list, list, Clock]:  # type: ignore[type-arg]
    closed: list[tuple[int, str]] = []
    users: list[int] = []
    clock = Clock()
    book = OutcomeBook(lambda b, w: closed.append((b, w)), lambda: users.append(1),
                       window=window, max_open=max_open, clock=clock)  # fmt: skip
    return book, closed, users, clock


def _feed(user: int, served: float, items=(1, 2, 3, 4), teams=(0, 1, 0, 1), bucket: int = 5):  # type: ignore[no-untyped-def]
    return decode(KEY, encode(KEY, user, bucket, list(items), list(teams), served_at=served), user)


def test_a_feed_is_counted_once_after_its_window_by_clicks_per_team() -> None:
    book, closed, users, clock = _book()
    f = _feed(1, clock.now)
    assert book.click(f, 2) == "counted"
    assert book.click(f, 4) == "counted"
    assert book.click(f, 4) == "duplicate"
    assert book.click(f, 1) == "counted"
    assert book.click(f, 99) == "unknown_item"
    clock.now += 9.9
    assert book.close_due() == 0 and closed == []
    clock.now += 0.2
    assert book.close_due() == 1
    assert closed == [(5, "treatment")] and users == [1]
    assert book.click(f, 3) == "late"
    assert len(book) == 0


def test_ties_new_users_and_the_bound_on_open_feeds() -> None:
    book, closed, users, clock = _book(max_open=2)
    a, b, c = _feed(1, clock.now), _feed(1, clock.now + 1), _feed(2, clock.now + 2)
    book.click(a, 1)
    book.click(a, 2)  # one click each: tie
    book.click(b, 1)  # control
    book.click(c, 2)  # third open feed: the one closest to its end (a) is closed first
    assert closed == [(5, "tie")]
    assert book.close_all() == 2
    assert [w for _, w in closed] == ["tie", "control", "treatment"]
    assert len(users) == 2  # user 1 counted once over two feeds


def test_a_token_holds_up_to_max_items() -> None:
    with pytest.raises(ValueError):
        encode(KEY, 1, 0, list(range(attribution.MAX_ITEMS + 1)), [0] * (attribution.MAX_ITEMS + 1))
