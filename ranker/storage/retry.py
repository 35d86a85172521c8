"""Retries with capped exponential backoff and full jitter, for transient failures only.

A transport raises :class:`Transient` for what waiting can fix: a refused or reset
connection, a timeout, a 5xx, throttling (429, S3 ``SlowDown``). Everything else (403,
404, a digest mismatch) is a :class:`~ranker.storage.errors.ModelFetchError` and goes
straight through. When the tries run out the last transient failure becomes
:class:`~ranker.storage.errors.ModelRegistryUnavailable`, or
:class:`~ranker.storage.errors.ModelFetchTimeout` when it was a timeout.

Delays are "full jitter" (a uniform draw below ``min(cap, base * 2**n)``), so pods
that start together do not retry together; a server's ``Retry-After`` is a floor.
Sleep, clock and randomness are injected, so the schedule is testable without waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ranker.storage.errors import ModelFetchTimeout, ModelRegistryUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class Transient(Exception):
    """A failure worth another try. ``progress``: the try moved the transfer forward
    (bytes arrived), so the count of tries starts again."""

    def __init__(
        self,
        reason: str,
        *,
        timeout: bool = False,
        retry_after: float | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout
        self.retry_after = retry_after
        self.progress = progress


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4  # tries after the first
    base: float = 0.5  # seconds: the first delay is drawn below this
    cap: float = 20.0  # seconds: no delay is drawn above this
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    rng: random.Random = field(default_factory=random.Random, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.base < 0 or self.cap < 0:
            raise ValueError("retries, base and cap must be >= 0")

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1, 2, ...)."""
        ceiling = min(self.cap, self.base * 2 ** (failures - 1))
        drawn = self.rng.uniform(0, ceiling)
        if retry_after is not None:
            drawn = max(drawn, min(retry_after, self.cap))
        return drawn

    def run(self, op: Callable[[], T], what: str) -> T:
        """``op()``, tried again on :class:`Transient` up to ``retries`` times."""
        failures = 0
        tries = 0
        start = self.clock()
        while True:
            tries += 1
            try:
                return op()
            except Transient as exc:
                failures = 1 if exc.progress else failures + 1
                if failures > self.retries:
                    cls = ModelFetchTimeout if exc.timeout else ModelRegistryUnavailable
                    raise cls(
                        f"{what}: {exc.reason} ({tries} tries over {self.clock() - start:.1f} s)"
                    ) from None
                wait = self.delay(failures, exc.retry_after)
                log.warning(
                    "%s: %s; trying again in %.2f s (retry %d of %d)",
                    what, exc.reason, wait, failures, self.retries,
                )  # fmt: skip
                self.sleep(wait)
