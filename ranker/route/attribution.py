"""Click attribution for interleaved feeds: the feed token and the open-feed book.

An interleaved feed carries an opaque ``interleaving_token`` that the client echoes
on ``/feedback``. The token holds everything attribution needs, so any router
replica, and a restarted router, can attribute a click without a database:

    version (1) | feed id (8) | served at, unix s (4) | user bucket (1) |
    user hash (8) | n items (2) | team bits (ceil(n/8)) | item ids (4 x n) | tag (12)

base64url without padding. The tag is an HMAC-SHA256 (truncated to 96 bits) keyed
by the experiment and its salt (the routing config's), so a token from another
experiment, a truncated or edited one, is refused rather than credited.

Outcomes: a feed's clicks are tallied per team in :class:`OutcomeBook` from its
first click until ``window`` seconds after it was served; then the feed is closed
and counted once, as a win for the team with more clicked items or a tie. Feeds
nobody clicked are not outcomes. The book lives in the router's memory: a graceful
stop closes every open feed early (counted), a SIGKILL loses the open tallies (at
most ``window`` seconds of clicked feeds); clicks after the window are refused as late.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ranker.route.interleave import CONTROL, TREATMENT, winner

VERSION = 1
_HEAD = struct.Struct(">B8sIB8sH")
_TAG = 12
MAX_ITEMS = 4096


class TokenError(ValueError):
    """A token that does not decode, is forged, or belongs to another user."""


def token_key(experiment: str, salt: str) -> bytes:
    return hashlib.sha256(f"rankexp-interleaving\0{experiment}\0{salt}".encode()).digest()


def user_hash(key: bytes, user_id: int | str) -> bytes:
    return hashlib.blake2b(str(user_id).encode(), digest_size=8, key=key[:32]).digest()


@dataclass(frozen=True)
class Feed:
    """What a token says about the feed it was issued with."""

    feed_id: bytes
    served_at: int
    bucket: int
    user: bytes
    items: tuple[int, ...]
    teams: tuple[int, ...]

    def team_of(self, item_id: int) -> int | None:
        try:
            return self.teams[self.items.index(item_id)]
        except ValueError:
            return None


def encode(
    key: bytes,
    user_id: int | str,
    bucket: int,
    items: Sequence[int],
    teams: Sequence[int],
    served_at: float | None = None,
    feed_id: bytes | None = None,
) -> str:
    n = len(items)
    if n > MAX_ITEMS or n != len(teams):
        raise ValueError(f"a token holds up to {MAX_ITEMS} items, each with a team")
    bits = bytearray((n + 7) // 8)
    for i, team in enumerate(teams):
        if team == TREATMENT:
            bits[i // 8] |= 1 << (i % 8)
    body = (
        _HEAD.pack(
            VERSION,
            feed_id if feed_id is not None else os.urandom(8),
            int(served_at if served_at is not None else time.time()),
            bucket,
            user_hash(key, user_id),
            n,
        )
        + bytes(bits)
        + struct.pack(f">{n}I", *items)
    )
    tag = hmac.new(key, body, hashlib.sha256).digest()[:_TAG]
    return base64.urlsafe_b64encode(body + tag).rstrip(b"=").decode()


def decode(key: bytes, token: str, user_id: int | str) -> Feed:
    """The feed of ``token``, for the user ``user_id``; :class:`TokenError` otherwise."""
    if not isinstance(token, str) or len(token) > 4 * (MAX_ITEMS * 5 + 64):
        raise TokenError("interleaving_token: not a token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("interleaving_token: not base64url") from None
    if len(raw) < _HEAD.size + _TAG:
        raise TokenError("interleaving_token: too short")
    body, tag = raw[:-_TAG], raw[-_TAG:]
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()[:_TAG]):
        raise TokenError("interleaving_token: not issued for this experiment (bad signature)")
    version, feed_id, served_at, bucket, user, n = _HEAD.unpack_from(body)
    if version != VERSION or len(body) != _HEAD.size + (n + 7) // 8 + 4 * n:
        raise TokenError("interleaving_token: unknown version or length")
    if not hmac.compare_digest(user, user_hash(key, user_id)):
        raise TokenError("interleaving_token: issued to another user")
    bits = body[_HEAD.size : _HEAD.size + (n + 7) // 8]
    items = struct.unpack_from(f">{n}I", body, _HEAD.size + len(bits))
    teams = tuple(TREATMENT if bits[i // 8] >> (i % 8) & 1 else CONTROL for i in range(n))
    return Feed(feed_id, served_at, bucket, user, tuple(items), teams)


@dataclass
class _Open:
    bucket: int
    user: bytes
    clicked: dict[int, int] = field(default_factory=dict)  # item -> team


#: (bucket, winner) -> None: count one closed feed
OnClose = Callable[[int, str], None]


class OutcomeBook:
    """Open clicked feeds, closed ``window`` seconds after they were served."""

    def __init__(
        self,
        on_close: OnClose,
        on_new_user: Callable[[], None],
        window: float = 60.0,
        max_open: int = 100_000,
        max_users: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.on_close = on_close
        self.on_new_user = on_new_user
        self.window = window
        self.max_open = max_open
        self.max_users = max_users
        self.clock = clock
        self._open: dict[bytes, _Open] = {}
        self._due: list[tuple[float, bytes]] = []
        self._users: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def click(self, feed: Feed, item_id: int) -> str:
        """Record a click: "counted", "duplicate" (item already clicked in this feed),
        "late" (after the window) or "unknown_item" (not in the feed)."""
        team = feed.team_of(item_id)
        if team is None:
            return "unknown_item"
        now = self.clock()
        close_at = feed.served_at + self.window
        if now >= close_at:
            return "late"
        entry = self._open.get(feed.feed_id)
        if entry is None:
            if len(self._open) >= self.max_open:
                self._close_next()  # the feed closest to its window's end
            entry = self._open[feed.feed_id] = _Open(feed.bucket, feed.user)
            heapq.heappush(self._due, (close_at, feed.feed_id))
        if item_id in entry.clicked:
            return "duplicate"
        entry.clicked[item_id] = team
        return "counted"

    def close_due(self, now: float | None = None) -> int:
        """Close and count every feed whose window has ended; returns how many."""
        now = self.clock() if now is None else now
        n = 0
        while self._due and self._due[0][0] <= now:
            self._close_next()
            n += 1
        return n

    def close_all(self) -> int:
        n = 0
        while self._due:
            self._close_next()
            n += 1
        return n

    def _close_next(self) -> None:
        _, feed_id = heapq.heappop(self._due)
        entry = self._open.pop(feed_id)
        self.on_close(entry.bucket, winner(entry.clicked.values()))
        if entry.user in self._users:
            self._users.move_to_end(entry.user)
            return
        self._users[entry.user] = None
        if len(self._users) > self.max_users:
            self._users.popitem(last=False)
        self.on_new_user()
