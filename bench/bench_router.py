"""Benchmark: what the router adds on top of calling a ranker directly.

One `ranker serve` (fast path, model v2) and one `ranker route` (a single
variant at weight 100, so every request is forwarded) run as separate
processes on 127.0.0.1; this process drives both in the same run with the
same load generator as bench_ranker.py:

  * open loop at a fixed rate (default 200 req/s), latency from each request's
    scheduled send time: p50/p99 direct, through the router, and the difference;
  * closed loop at saturation (--concurrency connections): throughput direct
    and through the router, and their ratio.

A third path is a router in interleaving mode (every user in the interleaving arm) in
front of that ranker and a second one (same model): each feed is two ranker calls in
parallel, merged by team draft with a signed attribution token.

Two cores carry the ranker, the router and the load generator at once, so at
saturation the router competes with the ranker for CPU; that is part of
what is measured. Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_ranker import closed_loop, open_loop

from rankexp.local.probe import is_ready
from rankexp.local.process import Process, free_ports, wait_for


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="models/v2")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2, help="alternate direct/router this often")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    ranker_port, ranker2_port, router_port, il_port = free_ports(4)
    ranker = f"http://127.0.0.1:{ranker_port}"
    ranker2 = f"http://127.0.0.1:{ranker2_port}"
    router = f"http://127.0.0.1:{router_port}"
    interleaved = f"http://127.0.0.1:{il_port}"
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        cfg = Path(tmp) / "routing.json"
        cfg.write_text(json.dumps({
            "experiment": "bench", "salt": "bench", "control": "control",
            "variants": [{"name": "control", "weight": 100, "endpoints": [ranker]}],
        }))  # fmt: skip
        il_cfg = Path(tmp) / "routing-interleaving.json"
        il_cfg.write_text(json.dumps({
            "experiment": "bench", "salt": "bench", "control": "control", "mode": "interleaving",
            "variants": [{"name": "control", "weight": 0, "endpoints": [ranker]},
                         {"name": "treatment", "weight": 100, "endpoints": [ranker2]}],
        }))  # fmt: skip

        def serve(name: str, port: int) -> Process:
            return Process(name, [sys.executable, "-m", "ranker.cli", "serve", "--model",
                                  args.model, "--variant", name, "--host", "127.0.0.1",
                                  "--port", str(port), "--log-level", "warning"],
                           log_path=Path(tmp) / f"{name}.log")  # fmt: skip

        def route(name: str, config: Path, port: int) -> Process:
            return Process(name, [sys.executable, "-m", "ranker.cli", "route", "--config",
                                  str(config), "--host", "127.0.0.1", "--port", str(port),
                                  "--log-level", "warning"],
                           log_path=Path(tmp) / f"{name}.log")  # fmt: skip

        procs = [
            serve("control", ranker_port),
            serve("treatment", ranker2_port),
            route("router", cfg, router_port),
            route("router-interleaving", il_cfg, il_port),
        ]
        paths = (("direct", ranker), ("router", router), ("interleaved", interleaved))
        try:
            for proc in procs:
                proc.start()
            for url in (ranker, ranker2, router, interleaved):
                wait_for(lambda u=url: is_ready(u), timeout=60, what=url, processes=procs)  # type: ignore[misc]
            for url in (router, interleaved):  # warm caches and pools
                asyncio.run(closed_loop(url + "/rank", 8, 3.0, args.seed))
            lat: dict[str, list[np.ndarray]] = {name: [] for name, _ in paths}
            thr: dict[str, list[float]] = {name: [] for name, _ in paths}
            for r in range(args.rounds):
                for name, url in paths:
                    print(f"... round {r + 1}: {name}", file=sys.stderr, flush=True)
                    done, elapsed = asyncio.run(
                        closed_loop(url + "/rank", args.concurrency, args.seconds, args.seed + r)
                    )
                    thr[name].append(done / elapsed)
                    ms, _ = asyncio.run(open_loop(url + "/rank", args.rate, args.seconds, 2.0,
                                                  args.seed + r))  # fmt: skip
                    lat[name].append(ms * 1000.0)
        finally:
            for proc in reversed(procs):
                proc.stop()

    pct = {
        name: {q: float(np.percentile(np.concatenate(v), q)) for q in (50, 95, 99)}
        for name, v in lat.items()
    }
    sat = {name: float(np.mean(v)) for name, v in thr.items()}
    print(f"\nrouter overhead, /rank num_items=50, {os.cpu_count()} cores, all on 127.0.0.1; "
          f"{args.rounds} alternating rounds of {args.seconds:.0f} s each\n")  # fmt: skip
    print("| path        | p50 ms | p95 ms | p99 ms | saturation req/s |")
    print("|-------------|-------:|-------:|-------:|-----------------:|")
    for name, _ in paths:
        print(f"| {name:<11} | {pct[name][50]:.2f} | {pct[name][95]:.2f} | "
              f"{pct[name][99]:.2f} | {sat[name]:.0f} |")  # fmt: skip
    for name, what in (("router", "the router"), ("interleaved", "the interleaving router")):
        print(f"\nadded by {what} at {args.rate:.0f} req/s: p50 "
              f"{pct[name][50] - pct['direct'][50]:+.2f} ms, p99 "
              f"{pct[name][99] - pct['direct'][99]:+.2f} ms")  # fmt: skip
        print(f"saturation throughput through {what}: {sat[name] / sat['direct']:.0%} of direct")
    print(
        f"\ninterleaving over plain routing: p50 "
        f"{pct['interleaved'][50] - pct['router'][50]:+.2f} ms (two ranker calls in parallel, "
        f"the merge and the token)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
