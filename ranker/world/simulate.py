"""Traffic simulator: ground-truth users request feeds and react to them.

Each simulated request picks a user of the world, asks ``--target`` (the router,
or a ranker) for a feed, and draws, for every item shown, a click with the
user's true probability, then a like and a dwell after a click; each event is
sent back as POST /feedback. Because reactions come from the ground truth, a
better model earns a measurably higher click-through rate.

Bounded by ``--requests`` and/or ``--duration``; paced at ``--rate`` feeds per second
(default 50; 0 for as fast as ``--concurrency`` allows); prints a progress line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

import aiohttp
import numpy as np

from ranker.world.ground_truth import World, make_world

DEFAULT_RATE = 50.0


@dataclass
class SimStats:
    requests: int = 0
    failed: int = 0
    impressions: int = 0
    clicks: int = 0
    likes: int = 0
    dwell_seconds: float = 0.0
    feedback_failed: int = 0
    by_variant: Counter[str] = field(default_factory=Counter)
    clicks_by_variant: Counter[str] = field(default_factory=Counter)
    impressions_by_variant: Counter[str] = field(default_factory=Counter)

    def line(self, elapsed: float) -> str:
        ctr = self.clicks / self.impressions if self.impressions else 0.0
        per = " ".join(
            f"{v}:{n}/ctr={self.clicks_by_variant[v] / max(self.impressions_by_variant[v], 1):.3f}"
            for v, n in sorted(self.by_variant.items())
        )
        return (
            f"{elapsed:6.1f}s requests={self.requests} failed={self.failed} "
            f"rate={self.requests / max(elapsed, 1e-9):.0f}/s ctr={ctr:.4f} {per}"
        )


class Simulator:
    def __init__(
        self,
        target: str,
        world: World | None = None,
        num_items: int = 20,
        concurrency: int = 8,
        seed: int = 0,
        users: int | None = None,
        rate: float | None = None,
    ) -> None:
        self.target = target.rstrip("/")
        self.world = world or make_world()
        self.num_items = num_items
        self.concurrency = concurrency
        self.rng = np.random.default_rng(seed)
        self.n_users = min(users or self.world.n_users, self.world.n_users)
        self.rate = rate if rate and rate > 0 else None
        self.stats = SimStats()
        #: Set from any thread to end a run early.
        self.stop = threading.Event()

    async def _one(self, session: aiohttp.ClientSession) -> None:
        user = int(self.rng.integers(0, self.n_users))
        try:
            async with session.post(
                self.target + "/rank", json={"user_id": user, "num_items": self.num_items}
            ) as resp:
                if resp.status != 200:
                    self.stats.failed += 1
                    return
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            self.stats.failed += 1
            return
        variant = str(body.get("routed_variant") or body.get("variant") or "?")
        items = np.array([it["item_id"] for it in body["items"]], dtype=np.int64)
        users = np.full(len(items), user)
        clicked, liked, dwell = self.world.sample_engagement(users, items, self.rng)
        st = self.stats
        st.requests += 1
        st.impressions += len(items)
        st.by_variant[variant] += 1
        st.impressions_by_variant[variant] += len(items)
        st.clicks_by_variant[variant] += int(clicked.sum())
        events: list[dict[str, object]] = []
        # an interleaved feed's token goes back with every event about it
        echo = {"interleaving_token": body["interleaving_token"]} if body.get("interleaved") else {}
        for i in np.flatnonzero(clicked):
            item = int(items[i])
            events.append({"user_id": user, "item_id": item, "event": "click", **echo})
            events.append(
                {"user_id": user, "item_id": item, "event": "dwell",
                 "dwell_seconds": round(float(dwell[i]), 3), **echo}
            )  # fmt: skip
            if liked[i]:
                events.append({"user_id": user, "item_id": item, "event": "like", **echo})
        for ev in events:
            try:
                async with session.post(self.target + "/feedback", json=ev) as resp:
                    if resp.status != 202:
                        st.feedback_failed += 1
                        continue
            except (aiohttp.ClientError, TimeoutError):
                st.feedback_failed += 1
                continue
            if ev["event"] == "click":
                st.clicks += 1
            elif ev["event"] == "like":
                st.likes += 1
            else:
                st.dwell_seconds += float(ev["dwell_seconds"])  # type: ignore[arg-type]

    async def run(
        self,
        requests: int | None = None,
        duration: float | None = None,
        progress_every: float = 2.0,
        out: TextIO | None = None,
    ) -> SimStats:
        if requests is None and duration is None:
            raise ValueError("bound the run: give requests, duration or both")
        stream = out if out is not None else sys.stderr
        start = time.monotonic()
        deadline = start + duration if duration is not None else float("inf")
        issued = 0
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def worker() -> None:
                nonlocal issued
                while time.monotonic() < deadline and (requests is None or issued < requests):
                    if self.stop.is_set():
                        return
                    issued += 1
                    if self.rate is not None:
                        # open-loop pacing: request i is due at start + i / rate
                        delay = start + issued / self.rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    await self._one(session)

            async def progress() -> None:
                while True:
                    await asyncio.sleep(progress_every)
                    stream.write(self.stats.line(time.monotonic() - start) + "\n")

            reporter = asyncio.create_task(progress())
            try:
                await asyncio.gather(*(worker() for _ in range(self.concurrency)))
            finally:
                reporter.cancel()
        stream.write(self.stats.line(time.monotonic() - start) + " (done)\n")
        return self.stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ranker simulate", description=__doc__)
    add_arguments(p)
    return run_cli(p.parse_args(argv))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, help="router (or ranker) base URL")
    p.add_argument("--requests", type=int, default=None, help="stop after this many feeds")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--num-items", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument(
        "--rate", type=float, default=DEFAULT_RATE,
        help=f"feeds per second (default {DEFAULT_RATE:g}; 0: as fast as the concurrency allows)",
    )  # fmt: skip
    p.add_argument("--users", type=int, default=None, help="draw from the first N users only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world-seed", type=int, default=7)


def run_cli(args: argparse.Namespace) -> int:
    if args.requests is None and args.duration is None:
        sys.stderr.write("ranker simulate: give --requests and/or --duration\n")
        return 2
    sim = Simulator(
        args.target, make_world(args.world_seed), args.num_items, args.concurrency, args.seed,
        args.users, rate=args.rate,
    )  # fmt: skip
    stats = asyncio.run(sim.run(args.requests, args.duration))
    return 0 if stats.requests > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
