"""Simulation benchmark of the latency non-inferiority guardrail (rankexp.analysis.quantile).

Run: ``make bench-latency`` (or ``.venv/bin/python bench/bench_latency_guardrail.py``).

The world: each experiment has two arms; at each of ``--looks`` looks every arm serves
``--per-look`` more requests, spread over 64 user buckets and binned into the ranker's
``ranking_bucket_latency_seconds`` buckets (cumulative over the looks, as Prometheus
reports them). Latencies are log-normal (median 8 ms, sigma 0.6) with a share of stalls
uniform on 50-300 ms: 2 % ("stalls 2 %", p95 in the log-normal's tail) and 6 % ("stalls
6 %", the hostile case: p95 sits at the edge of the stall mode, where a p95 is
intrinsically unstable). The treatment adds a fixed shift (0 = A/A).

At every look the guardrail runs as the analysis runs it: the p95 difference with a
bucket-bootstrap interval (2000 resamples) at one-sided level ``alpha / 2`` (alpha 0.05),
breached when the interval's lower end is above the margin (20 ms). Rows: the share of
experiments breached at *any* look (detection for a shift, false alarms for A/A), with a
95 % Wilson interval, the median first look that breached, and the bootstrap's time per
analysis.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from ranker.serve.metrics import BUCKET_LATENCY_BUCKETS
from rankexp.analysis.quantile import N_RESAMPLES, breaches, quantile_difference

LE = np.asarray(BUCKET_LATENCY_BUCKETS)
BINS = LE.size + 1


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def arm(rng: np.random.Generator, requests: int, shift: float, stalls: float) -> np.ndarray:
    lat = rng.lognormal(math.log(0.008), 0.6, requests)
    stall = rng.random(requests) < stalls
    lat[stall] = rng.uniform(0.05, 0.3, int(stall.sum()))
    lat += shift
    bucket = rng.integers(0, 64, requests)
    bins = np.searchsorted(LE, lat, side="left")
    return np.bincount(bucket * BINS + bins, minlength=64 * BINS).reshape(64, BINS).astype(float)


def run(
    args: argparse.Namespace, shift_ms: float, stalls: float, times: list[float]
) -> tuple[int, list[int]]:
    rng = np.random.default_rng(args.seed + int(shift_ms * 1000) + int(stalls * 1e4))
    flagged, first_looks = 0, []
    for _ in range(args.experiments):
        c = np.zeros((64, BINS))
        t = np.zeros((64, BINS))
        for look in range(1, args.looks + 1):
            c += arm(rng, args.per_look, 0.0, stalls)
            t += arm(rng, args.per_look, shift_ms / 1000.0, stalls)
            start = time.perf_counter()
            d = quantile_difference(LE, c, t, alpha_one_sided=args.alpha / 2)
            times.append(time.perf_counter() - start)
            if d is not None and breaches(d, args.margin_ms / 1000.0):
                flagged += 1
                first_looks.append(look)
                break
    return flagged, first_looks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=200)
    ap.add_argument("--looks", type=int, default=20)
    ap.add_argument("--per-look", type=int, default=150, help="requests per arm per look")
    ap.add_argument("--margin-ms", type=float, default=20.0)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    print(
        f"latency non-inferiority: margin +{args.margin_ms:g} ms, one-sided "
        f"{args.alpha / 2:g}, {N_RESAMPLES} bucket-bootstrap resamples; "
        f"{args.experiments} experiments x {args.looks} looks x {args.per_look} "
        "requests per arm per look"
    )
    times: list[float] = []
    for stalls in (0.02, 0.06):
        print(f"\nstalls {stalls:.0%}")
        for shift in (0.0, 10.0, 20.0, 50.0):
            k, looks = run(args, shift, stalls, times)
            lo, hi = wilson(k, args.experiments)
            what = "A/A false alarms" if shift == 0 else f"+{shift:g} ms detected"
            first = f", median first look {int(np.median(looks))}" if looks else ""
            print(
                f"  {what:<18} {k / args.experiments:.3f} "
                f"(95 % Wilson [{lo:.3f}, {hi:.3f}]; {k}/{args.experiments}{first})"
            )
    ms = np.asarray(times) * 1000.0
    p50, p99 = np.percentile(ms, [50, 99])
    print(f"\nbootstrap per analysis: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({ms.size} analyses)")


if __name__ == "__main__":
    main()
