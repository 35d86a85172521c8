"""Soak benchmark (`make soak`): the local v1/v2 stack under a fixed load for minutes.

Starts a ranker for models/v1 (control) and one for models/v2 (50/50) behind a
router, all on 127.0.0.1 (rankexp.local.stack), and drives the router from this
process with locust's library API (FastHttpUser, headless, no web UI):

  1. saturation: --sat-users users send back to back for --sat-seconds; the
     request rate after the first --warmup seconds is the saturation throughput
     as this load generator reaches it on this machine (it shares the cores with
     the rankers and the router, so that is part of what is measured);
  2. soak: --users users paced with constant_throughput, together --fraction
     (0.7) of that rate, for --seconds. Every --every seconds it records that
     interval's requests, failures, p50 and p99 (locust's response time, send to
     last byte), the RSS (VmRSS) of the router and of each ranker, and the CPU
     cores used by the load generator, by the stack and by everything else on
     the machine (other work on shared cores explains many a p99 spike).

Bounded: about --seconds + 45 s in all. Stops every process it started, also on
Ctrl-C or SIGTERM (then it prints the intervals it has).

The request mix is tests/load_test.py's (/rank : /feedback : /health = 10 : 3 : 1),
one request per task so the paced rate is a request rate: /rank for 50 items fails
unless it answers 200 with 50 items sorted by score, /feedback clicks the top item
of the user's last feed, a user switches to another with probability 0.1 per feed.

Prints the saturation, the target and achieved rate, a table of intervals and a
summary checking issue 10's targets: 0 failures, p99 flat (last interval / first
<= 1.5), RSS growth start -> end < 10 % per process. Figures, not pass/fail: the
exit code is 0 unless the stack could not start (1) or the run was interrupted (130).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType

# locust monkey-patches the standard library for gevent when imported, so it comes
# before anything that opens sockets or starts processes (rankexp.local.*).
import gevent
import numpy as np
from locust import FastHttpUser, constant, constant_throughput, task
from locust.env import Environment
from locust.runners import LocalRunner

from rankexp.local.process import Process
from rankexp.local.stack import LocalStack, VariantSpec

P99_FLAT = 1.5  # last interval's p99 / first interval's, at most
RSS_GROWTH = 10.0  # % start -> end, below


class SoakUser(FastHttpUser):
    """One request per task; the phases subclass it with their wait_time."""

    abstract = True
    network_timeout = 10.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.user_id = random.randint(0, 9_999)
        self.top_item: int | None = None

    @task(10)
    def rank(self) -> None:
        if random.random() < 0.1:
            self.user_id, self.top_item = random.randint(0, 9_999), None
        with self.client.post(
            "/rank", json={"user_id": self.user_id, "num_items": 50}, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            try:
                items = resp.json()["items"]
                scores = [i["score"] for i in items]
                top = int(items[0]["item_id"])
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                resp.failure(f"bad body: {exc!r}")
                return
            if len(items) != 50 or scores != sorted(scores, reverse=True):
                resp.failure("feed not 50 sorted items")
            else:
                self.top_item = top

    @task(3)
    def click(self) -> None:
        if self.top_item is None:
            self.rank()
            return
        self.client.post(
            "/feedback", json={"user_id": self.user_id, "item_id": self.top_item, "event": "click"}
        )

    @task(1)
    def health(self) -> None:
        self.client.get("/health")


def user_class(rate_per_user: float | None) -> type[SoakUser]:
    """Back to back (None) or paced at ``rate_per_user`` requests per second."""
    wait = constant(0) if rate_per_user is None else constant_throughput(rate_per_user)
    return type("SoakUser", (SoakUser,), {"wait_time": wait, "abstract": False})


@dataclass
class Window:
    """Requests completed since the last take(), from locust's request event."""

    ms: list[float] = field(default_factory=list)
    failures: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def on_request(
        self, name: str, response_time: float, exception: BaseException | None, **_: object
    ) -> None:
        self.ms.append(response_time)
        if exception is not None:
            self.failures += 1
            self.reasons[f"{name}: {str(exception)[:100]}"] += 1

    def take(self) -> tuple[np.ndarray, int]:
        ms, failures = np.asarray(self.ms, dtype=float), self.failures
        self.ms, self.failures = [], 0
        return ms, failures


def start_users(
    url: str, cls: type[SoakUser], users: int, spawn_rate: float, window: Window
) -> LocalRunner:
    env = Environment(user_classes=[cls], host=url)
    env.events.request.add_listener(window.on_request)  # type: ignore[no-untyped-call]
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=spawn_rate)
    return runner


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_CORES = os.cpu_count() or 1


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cpu_seconds(pid: int | str) -> float | None:
    """User + system CPU time of a process, all its threads."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def _machine_cpu() -> tuple[float, float]:
    """Busy and total CPU time of the machine, all cores (from /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]  # guest time is already in user
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK, sum(ticks) / _CLK_TCK


@dataclass
class Probe:
    """RSS of the stack's processes and CPU time used so far, at one moment."""

    t: float
    rss: list[float | None]  # MB (2^20 bytes) per stack process; None once it exited
    cpu: list[float | None]  # s: this process (the load generator), then each stack process
    busy: float  # s, the whole machine
    total: float

    @classmethod
    def take(cls, procs: list[Process]) -> Probe:
        pids = [pr.pid if pr.pid is not None and pr.is_running() else None for pr in procs]
        busy, total = _machine_cpu()
        return cls(
            t=time.monotonic(),
            rss=[None if pid is None else _rss_mb(pid) for pid in pids],
            cpu=[
                _cpu_seconds("self"),
                *(None if pid is None else _cpu_seconds(pid) for pid in pids),
            ],
            busy=busy,
            total=total,
        )


def cpu_cores(a: Probe, b: Probe) -> tuple[list[float], float]:
    """Cores used between two probes: per process (generator, stack...) and by the
    rest of the machine (other work sharing it)."""
    wall = max(b.t - a.t, 1e-9)
    each = [
        (y - x) / wall if x is not None and y is not None else math.nan
        for x, y in zip(a.cpu, b.cpu, strict=True)
    ]
    machine = (b.busy - a.busy) / max(b.total - a.total, 1e-9) * _CORES
    return each, max(machine - float(np.nansum(each)), 0.0)


@dataclass
class Interval:
    t: float  # s since the soak started, at the interval's end
    requests: int
    failures: int
    p50: float  # ms
    p99: float
    probe: Probe
    cpu: tuple[list[float], float] | None  # cpu_cores over the interval


@dataclass
class Saturation:
    rate: float = 0.0
    p50: float = math.nan
    p99: float = math.nan
    failures: int = 0
    cpu: tuple[list[float], float] | None = None


def pct(ms: np.ndarray, q: float) -> float:
    return float(np.percentile(ms, q)) if ms.size else math.nan


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so SIGTERM stops the stack through the same finally blocks


def fmt_mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def fmt_cpu(cpu: tuple[list[float], float] | None) -> str:
    if cpu is None:
        return ""
    each, other = cpu
    return f"{each[0]:.2f} / {sum(each[1:]):.2f} / {other:.2f}"


def growth(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (b / a - 1.0) * 100.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="models", help="holds v1/ and v2/")
    p.add_argument("--seconds", type=float, default=600.0, help="soak duration")
    p.add_argument("--every", type=float, default=60.0, help="interval length")
    p.add_argument("--fraction", type=float, default=0.7, help="of saturation to offer")
    p.add_argument("--sat-seconds", type=float, default=25.0, help="saturation step")
    p.add_argument("--warmup", type=float, default=5.0, help="not counted, at the step's start")
    p.add_argument("--sat-users", type=int, default=32, help="back-to-back users at saturation")
    p.add_argument("--users", type=int, default=0, help="paced users (0: one per 10 req/s)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)

    specs = [VariantSpec("v1", f"{args.models}/v1", 50), VariantSpec("v2", f"{args.models}/v2", 50)]
    stack = LocalStack(specs, experiment="soak", salt="soak")
    t_begin = time.monotonic()
    try:
        stack.start()
    except Exception as exc:  # any reason the stack did not come up
        print(f"the stack did not start: {exc}", file=sys.stderr)
        return 1
    # LocalStack starts the rankers in variant order, then the router.
    procs = [stack.processes[-1], *stack.processes[:-1]]
    names = ["router", *(v.name for v in specs)]
    window = Window()
    sat = Saturation()
    intervals: list[Interval] = []
    ready: Probe | None = None
    target, users, interrupted = 0.0, 0, False
    runner: LocalRunner | None = None
    try:
        ready = Probe.take(procs)
        print(f"... stack up in {time.monotonic() - t_begin:.0f} s: router {stack.router_url}, "
              f"rankers {stack.ranker_urls}", file=sys.stderr, flush=True)  # fmt: skip

        # 1. saturation, closed loop
        print(f"... saturation: {args.sat_users} users back to back for {args.sat_seconds:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        runner = start_users(
            stack.router_url, user_class(None), args.sat_users, args.sat_users, window
        )
        gevent.sleep(args.warmup)
        window.take()
        before = Probe.take(procs)
        gevent.sleep(max(args.sat_seconds - args.warmup, 1.0))
        ms, failures = window.take()
        after = Probe.take(procs)
        sat = Saturation(ms.size / (after.t - before.t), pct(ms, 50), pct(ms, 99), failures,
                         cpu_cores(before, after))  # fmt: skip
        runner.quit()
        runner = None
        target = args.fraction * sat.rate
        users = args.users or min(max(math.ceil(target / 10.0), 10), 500)
        print(f"saturation through the router: {sat.rate:.0f} req/s (p50 {sat.p50:.2f} ms, "
              f"p99 {sat.p99:.2f} ms, {sat.failures} failures); soak target "
              f"{args.fraction:.0%} = {target:.0f} req/s from {users} paced users",
              flush=True)  # fmt: skip
        gevent.sleep(2.0)  # let queues drain before the soak's first interval

        # 2. soak, paced
        runner = start_users(
            stack.router_url, user_class(target / users), users, users / 2.0, window
        )
        gevent.sleep(3.0)  # ramp: users spawned over 2 s, not counted
        window.take()
        start = Probe.take(procs)
        intervals.append(Interval(0.0, 0, 0, math.nan, math.nan, start, None))
        print(f"... soak: {args.seconds:.0f} s, an interval every {args.every:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        k = 0
        while intervals[-1].t < args.seconds - 1e-6:
            k += 1
            gevent.sleep(max(start.t + min(k * args.every, args.seconds) - time.monotonic(), 0.0))
            ms, failures = window.take()
            now = Probe.take(procs)
            row = Interval(now.t - start.t, int(ms.size), failures, pct(ms, 50), pct(ms, 99), now,
                           cpu_cores(intervals[-1].probe, now))  # fmt: skip
            intervals.append(row)
            print(f"... t={row.t:4.0f} s  {row.requests} req  {failures} failed  "
                  f"p50 {row.p50:.2f} ms  p99 {row.p99:.2f} ms  RSS "
                  + " ".join(f"{n} {fmt_mb(v)}" for n, v in zip(names, now.rss, strict=True))
                  + f"  CPU gen/stack/other {fmt_cpu(row.cpu)}",
                  file=sys.stderr, flush=True)  # fmt: skip
            dead = [pr.name for pr in procs if not pr.is_running()]
            if dead:
                print(f"... {', '.join(dead)} exited: soak stopped", file=sys.stderr, flush=True)
                break
    except KeyboardInterrupt:
        interrupted = True
        print("... interrupted: stopping the stack", file=sys.stderr, flush=True)
    finally:
        try:
            if runner is not None:
                runner.quit()
        finally:
            stack.stop()

    if ready is not None and len(intervals) >= 2:
        if interrupted:
            print(f"\ninterrupted: the figures cover {intervals[-1].t:.0f} s of {args.seconds:.0f}")
        report(args, names, ready, sat, target, users, intervals, window.reasons)
    return 130 if interrupted else 0


def report(
    args: argparse.Namespace,
    names: list[str],
    ready: Probe,
    sat: Saturation,
    target: float,
    users: int,
    intervals: list[Interval],
    reasons: Counter[str],
) -> None:
    start, rows, end = intervals[0], intervals[1:], intervals[-1]
    total = sum(r.requests for r in rows)
    failures = sum(r.failures for r in rows)
    first, last = rows[0], rows[-1]
    ratio = last.p99 / first.p99
    grow = [growth(a, b) for a, b in zip(start.probe.rss, end.probe.rss, strict=True)]
    mid = intervals[len(intervals) // 2]
    grow_late = [growth(a, b) for a, b in zip(mid.probe.rss, end.probe.rss, strict=True)]

    print(
        f"\nsoak through the router, v1/v2 50/50, all on 127.0.0.1, {_CORES} cores shared with "
        "whatever else runs; /rank num_items=50 : /feedback : /health = 10 : 3 : 1\n"
    )
    counted = args.sat_seconds - args.warmup
    print(f"saturation ({args.sat_users} users back to back, {counted:.0f} s after "
          f"{args.warmup:.0f} s warm-up): {sat.rate:.0f} req/s, p50 {sat.p50:.2f} ms, "
          f"p99 {sat.p99:.2f} ms, {sat.failures} failures; "
          f"CPU cores gen/stack/other {fmt_cpu(sat.cpu)}")  # fmt: skip
    print(f"target: {args.fraction:.0%} of saturation = {target:.0f} req/s ({users} paced users); "
          f"achieved {total / end.t:.0f} req/s over {end.t:.0f} s\n")  # fmt: skip
    rss_head = " | ".join(f"RSS {n} MB" for n in names)
    print(f"|   t s | requests | failures | p50 ms | p99 ms | {rss_head} | "
          "CPU cores gen / stack / other |")  # fmt: skip
    print(
        "|------:|---------:|---------:|-------:|-------:|" + "------:|" * len(names) + "------:|"
    )
    rss = " | ".join(fmt_mb(v) for v in ready.rss)
    print(f"| ready |          |          |        |        | {rss} |  |")
    for r in intervals:
        rss = " | ".join(fmt_mb(v) for v in r.probe.rss)
        if r is start:
            print(f"| {0:>5.0f} |          |          |        |        | {rss} |  |")
        else:
            print(f"| {r.t:>5.0f} | {r.requests:>8} | {r.failures:>8} | {r.p50:>6.2f} | "
                  f"{r.p99:>6.2f} | {rss} | {fmt_cpu(r.cpu)} |")  # fmt: skip
    print("\nready: when the stack answered /ready, before the saturation step; 0: the soak's "
          "start. CPU: cores used by the load generator (this process), by the router and "
          "rankers together, and by everything else on the machine.\n")  # fmt: skip

    print(f"total: {total} requests, {failures} failures ({failures / max(total, 1):.4%})")
    for reason, count in reasons.most_common(5):
        print(f"  {count} x {reason}")
    p99s = [r.p99 for r in rows]
    print(f"p99: first interval {first.p99:.2f} ms, last {last.p99:.2f} ms, last/first "
          f"{ratio:.2f} (min {min(p99s):.2f}, max {max(p99s):.2f})")  # fmt: skip
    for n, a, b, g, gl in zip(names, start.probe.rss, end.probe.rss, grow, grow_late, strict=True):
        g_txt = "-" if g is None else f"{g:+.1f} %"
        gl_txt = "-" if gl is None else f"{gl:+.1f} %"
        print(f"RSS {n}: {fmt_mb(a)} -> {fmt_mb(b)} MB ({g_txt}; second half {gl_txt})")
    each, other = cpu_cores(start.probe, end.probe)
    print(f"CPU cores over the soak: generator {each[0]:.2f}, "
          + ", ".join(f"{n} {c:.2f}" for n, c in zip(names, each[1:], strict=True))
          + f", other work {other:.2f} (of {_CORES})")  # fmt: skip
    known = [g for g in grow if g is not None]
    worst = max(known) if len(known) == len(grow) else math.inf

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    print("\ntargets:")
    print(f"  0 failures:                      {verdict(failures == 0)} ({failures})")
    print(f"  p99 flat, last/first <= {P99_FLAT}:    {verdict(ratio <= P99_FLAT)} ({ratio:.2f})")
    print(f"  RSS growth < {RSS_GROWTH:.0f} % per process:  {verdict(worst < RSS_GROWTH)} "
          f"(largest {worst:+.1f} %)")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
