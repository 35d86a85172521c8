"""Benchmark: /rank latency at a fixed offered rate and throughput at saturation.

Starts `ranker serve` as a separate process on 127.0.0.1 (one thread), after the
framework floor (bench/floor_app.py: the same app stack parsing the same request and
returning a prebuilt 50-item answer), with the fast path on the onnxruntime backend
(what the serving image runs), the fast path on the torch backend, and the naive
path (every catalog item through both towers per request, full sort, torch), and
drives it from this process over loopback HTTP with aiohttp:

  * open loop at a fixed offered rate (default 200 req/s): each request is sent
    at its scheduled time whatever happened to earlier ones, and its latency is
    counted from that scheduled time, so a slow server cannot hide queueing
    (no coordinated omission). A request that takes longer than --timeout
    counts as that timeout (the percentiles are then lower bounds).
  * closed loop at saturation: --concurrency workers send back to back for
    --seconds; throughput is completed requests per second.

Prints a table, the ranker's saturation as a share of the floor and the fast/naive
ratios. Figures, not pass/fail.

The floor has FastAPI with the ranker's JSON route class, the BodyLimit middleware
and uvicorn with the ranker's guarded HTTP protocol and limits; it validates the
request into RankRequest and answers with a JSONResponse of a prebuilt 50-item dict
(json.dumps per request). What the ranker does on top: RequestMetricsMiddleware
(request counter and latency histogram), the user-embedding cache look-up and its
counters, the exact top-50 over the catalog (a 10k x 32 matrix-vector product and a
partial selection), recording the response for the quality monitor (computed in
batches of 256 and before every scrape: ranker.serve.quality), and the JSON of its 50
items (ranker.serve.feed_json). On 2 cores the load generator shares the machine with the
server, so the figures move by 10-20 % from run to run: compare runs, not digits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from rankexp.local.probe import is_ready
from rankexp.local.process import Process, free_ports, wait_for


async def _one(session: aiohttp.ClientSession, url: str, user: int, timeout: float) -> bool:
    try:
        async with session.post(
            url, json={"user_id": user, "num_items": 50}, timeout=aiohttp.ClientTimeout(timeout)
        ) as resp:
            await resp.read()
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return False


async def open_loop(
    url: str, rate: float, seconds: float, timeout: float, seed: int
) -> tuple[np.ndarray, int]:
    """Latencies (s) of requests sent at a fixed rate, measured from schedule."""
    n = int(rate * seconds)
    users = np.random.default_rng(seed).integers(0, 10_000, n)
    lat = np.full(n, timeout)
    failures = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        t0 = time.perf_counter() + 0.05

        async def fire(i: int) -> None:
            nonlocal failures
            sched = t0 + i / rate
            delay = sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ok = await _one(session, url, int(users[i]), timeout)
            if ok:
                lat[i] = min(time.perf_counter() - sched, timeout)
            else:
                failures += 1

        await asyncio.gather(*(fire(i) for i in range(n)))
    return lat, failures


async def closed_loop(url: str, concurrency: int, seconds: float, seed: int) -> tuple[int, float]:
    rng = np.random.default_rng(seed)
    done = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        start = time.perf_counter()
        stop = start + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                if await _one(session, url, int(rng.integers(0, 10_000)), 30.0):
                    done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return done, elapsed


PATHS = {  # row name -> (scoring, backend); "floor" is bench/floor_app.py
    "floor": ("floor", "-"),
    "fast, onnx": ("fast", "onnx"),
    "fast, torch": ("fast", "torch"),
    "naive": ("naive", "torch"),
}


def server_argv(model: str, scoring: str, backend: str, port: int) -> list[str]:
    if scoring == "floor":
        floor = Path(__file__).resolve().parent / "floor_app.py"
        return [sys.executable, str(floor), "--port", str(port)]
    return [sys.executable, "-m", "ranker.cli", "serve", "--model", model, "--variant", scoring,
            "--scoring", scoring, "--backend", backend, "--host", "127.0.0.1", "--port", str(port),
            "--torch-threads", "1", "--log-level", "warning"]  # fmt: skip


def run_path(
    model: str, scoring: str, backend: str, args: argparse.Namespace, workdir: Path
) -> dict[str, float]:
    (port,) = free_ports(1)
    proc = Process(
        f"ranker-{scoring}-{backend}",
        server_argv(model, scoring, backend, port),
        log_path=workdir / f"{scoring}-{backend}.log",
    )  # fmt: skip
    proc.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: is_ready(base), timeout=60, what=base, processes=[proc])
        url = base + "/rank"
        # warm up: touch every user once on the fast path so the embedding cache
        # holds them (a steady-state feed); the naive path has no cache to warm
        asyncio.run(closed_loop(url, 8, args.warmup, args.seed))
        # saturation first: an overloaded open-loop phase leaves a backlog that
        # the server keeps working through after the client has given up
        done, elapsed = asyncio.run(closed_loop(url, args.concurrency, args.seconds, args.seed + 1))
        lat, failures = asyncio.run(
            open_loop(url, args.rate, args.seconds, args.timeout, args.seed)
        )
    finally:
        proc.stop()
    ms = lat * 1000.0
    return {
        "sent": float(len(lat)),
        "failed": float(failures),
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "throughput": done / elapsed,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="models/v2")
    p.add_argument("--rate", type=float, default=200.0, help="offered load, requests/s")
    p.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = p.parse_args()

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ranker-") as tmp:
        for name, (scoring, backend) in PATHS.items():
            print(f"... {name}", file=sys.stderr, flush=True)
            results[name] = run_path(args.model, scoring, backend, args, Path(tmp))

    print(f"\nranker /rank, num_items=50, model {args.model}, {os.cpu_count()} cores, "
          f"server and load generator on 127.0.0.1")  # fmt: skip
    print(f"open loop at {args.rate:.0f} req/s for {args.seconds:.0f} s; "
          f"saturation: {args.concurrency} connections for {args.seconds:.0f} s\n")  # fmt: skip
    print("| path        | sent | failed | p50 ms | p95 ms | p99 ms | saturation req/s |")
    print("|-------------|-----:|-------:|-------:|-------:|-------:|-----------------:|")
    for name, r in results.items():
        print(f"| {name:<11} | {r['sent']:.0f} | {r['failed']:.0f} | {r['p50']:.2f} | "
              f"{r['p95']:.2f} | {r['p99']:.2f} | {r['throughput']:.0f} |")  # fmt: skip
    f, t, n = results["fast, onnx"], results["fast, torch"], results["naive"]
    floor = results["floor"]
    print(f"\nsaturation fast (onnx) as a share of the framework floor: "
          f"{f['throughput'] / floor['throughput']:.0%} (torch: "
          f"{t['throughput'] / floor['throughput']:.0%})")  # fmt: skip
    print(f"\nsaturation throughput fast (onnx)/naive: {f['throughput'] / n['throughput']:.1f}x")
    print(f"saturation throughput onnx/torch (fast path): {f['throughput'] / t['throughput']:.2f}x")
    print(f"p99 at {args.rate:.0f} req/s naive/fast (onnx): {n['p99'] / f['p99']:.1f}x")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
