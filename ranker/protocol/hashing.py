"""Stable hashes of user ids.

Python's ``hash()`` is salted per process, so assignments would change on every
restart; these use BLAKE2b with a personalisation string per purpose, which
makes the routing hash and the analysis bucket independent of each other.
"""

from __future__ import annotations

import hashlib

N_ANALYSIS_BUCKETS = 64
N_ROUTING_BUCKETS = 10_000


def _h64(person: bytes, data: str) -> int:
    digest = hashlib.blake2b(data.encode(), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "big")


def analysis_bucket(user_id: int | str) -> int:
    """The user's replicate bucket in [0, 64): the unit for variance estimates."""
    return _h64(b"rankexp-bucket", str(user_id)) % N_ANALYSIS_BUCKETS


def routing_bucket(salt: str, user_id: int | str) -> int:
    """The user's routing bucket in [0, 10000) for an experiment's salt."""
    return _h64(b"rankexp-route", f"{salt}:{user_id}") % N_ROUTING_BUCKETS
