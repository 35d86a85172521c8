"""Benchmark: what the router adds on top of calling a ranker directly.

One `ranker serve` (fast path, model v2) and one `ranker route` (a single
variant at weight 100, so every request is forwarded) run as separate
processes on 127.0.0.1; this process drives both in the same run with the
same load generator as bench_ranker.py:

  * open loop at a fixed rate (default 200 req/s), latency from each request's
    scheduled send time: p50/p99 direct, through the router, and the difference;
  * closed loop at saturation (--concurrency connections): throughput direct
    and through the router, and their ratio.

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

from rankexp.local.cluster import Process, free_ports, wait_for
from rankexp.local.probe import is_ready


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="models/v2")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2, help="alternate direct/router this often")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    ranker_port, router_port = free_ports(2)
    ranker = f"http://127.0.0.1:{ranker_port}"
    router = f"http://127.0.0.1:{router_port}"
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        cfg = Path(tmp) / "routing.json"
        cfg.write_text(json.dumps({
            "experiment": "bench", "salt": "bench", "control": "control",
            "variants": [{"name": "control", "weight": 100, "endpoints": [ranker]}],
        }))  # fmt: skip
        procs = [
            Process("ranker", [sys.executable, "-m", "ranker.cli", "serve", "--model", args.model,
                               "--variant", "control", "--host", "127.0.0.1",
                               "--port", str(ranker_port), "--log-level", "warning"],
                    log_path=Path(tmp) / "ranker.log"),
            Process("router", [sys.executable, "-m", "ranker.cli", "route", "--config", str(cfg),
                               "--host", "127.0.0.1", "--port", str(router_port),
                               "--log-level", "warning"],
                    log_path=Path(tmp) / "router.log"),
        ]  # fmt: skip
        try:
            for proc in procs:
                proc.start()
            for url in (ranker, router):
                wait_for(lambda u=url: is_ready(u), timeout=60, what=url, processes=procs)  # type: ignore[misc]
            asyncio.run(closed_loop(router + "/rank", 8, 3.0, args.seed))  # warm caches and pools
            lat: dict[str, list[np.ndarray]] = {"direct": [], "router": []}
            thr: dict[str, list[float]] = {"direct": [], "router": []}
            for r in range(args.rounds):
                for name, url in (("direct", ranker), ("router", router)):
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
    print("| path   | p50 ms | p95 ms | p99 ms | saturation req/s |")
    print("|--------|-------:|-------:|-------:|-----------------:|")
    for name in ("direct", "router"):
        print(f"| {name:<6} | {pct[name][50]:.2f} | {pct[name][95]:.2f} | {pct[name][99]:.2f} | "
              f"{sat[name]:.0f} |")  # fmt: skip
    print(f"\nadded by the router at {args.rate:.0f} req/s: p50 "
          f"{pct['router'][50] - pct['direct'][50]:+.2f} ms, p99 "
          f"{pct['router'][99] - pct['direct'][99]:+.2f} ms")  # fmt: skip
    print(
        f"saturation throughput through the router: {sat['router'] / sat['direct']:.0%} of direct"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
