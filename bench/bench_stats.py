"""Simulation benchmark of rankexp.analysis: error rates, power, SRM detection.

Run: ``make bench-stats`` (or ``.venv/bin/python bench/bench_stats.py``).

The world: each experiment has two arms of 64 user buckets, observed at
``--looks`` equally spaced looks. Per look and bucket, impressions are
Poisson and clicks binomial at the arm's CTR times a Gamma(k, 1/k) factor,
the between-bucket heterogeneity that users (not impressions) being the unit
creates (the header prints the measured design effect: users-as-unit
variance over the binomial one). The counters are cumulative,
as Prometheus reports them, and every look runs the library's own estimators
(``ratio_estimate``, ``fixed_test``, ``msprt_p_value``, ``srm_test``)
vectorised over all experiments.

Rows:
  (a) A/A false-positive rate: the share of experiments that reject at *any*
      of the looks; ``fixed`` is the z-test checked at every look (peeking),
      ``fixed, last look only`` its honest single-look use.
  (b) power for a true +5 % relative CTR lift at a 5 % base rate, and the
      median look of the first rejection among experiments that reject.
  (c) SRM: how often the chi-square flags a 50/50 experiment that really runs
      48/52 at 200,000 exposures (and a true 50/50 one, for the false alarms).

Every rate carries a 95 % Wilson interval.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from rankexp.analysis import fixed_test, mixing_variance, msprt_p_value, ratio_estimate, srm_test

BUCKETS = 64


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval for k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def simulate_arm(
    rng: np.random.Generator, n_exp: int, looks: int, imps_per_look: float, ctr: float, k: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (clicks, impressions), shape (n_exp, looks, BUCKETS)."""
    shape = (n_exp, looks, BUCKETS)
    imps = rng.poisson(imps_per_look / BUCKETS, size=shape).astype(np.float64)
    rate = np.minimum(ctr * rng.gamma(k, 1.0 / k, size=shape), 1.0)
    clicks = rng.binomial(imps.astype(np.int64), rate).astype(np.float64)
    return np.cumsum(clicks, axis=1), np.cumsum(imps, axis=1)


def run_tests(
    rng: np.random.Generator,
    n_exp: int,
    looks: int,
    imps_per_look: float,
    base: float,
    lift: float,
    k: float,
    alpha: float,
    mde: float,
) -> dict[str, np.ndarray]:
    """p-values of each test at each look, shape (n_exp, looks), plus the lift."""
    c_num, c_den = simulate_arm(rng, n_exp, looks, imps_per_look, base, k)
    t_num, t_den = simulate_arm(rng, n_exp, looks, imps_per_look, base * (1 + lift), k)
    rc, vc = ratio_estimate(c_num, c_den)
    rt, vt = ratio_estimate(t_num, t_den)
    diff, var = rt - rc, vt + vc
    p_fixed, _ = fixed_test(diff, var, alpha)
    p_seq = msprt_p_value(diff, var, mixing_variance(rc, rt, mde))
    n_last = c_den[:, -1].sum(axis=-1)
    binomial = rc[:, -1] * (1 - rc[:, -1]) / n_last
    return {"fixed": p_fixed, "sequential": p_seq, "diff": diff, "de": vc[:, -1] / binomial}


def first_rejection(
    p: np.ndarray, alpha: float, right_sign: np.ndarray | None = None
) -> np.ndarray:
    """1-based look of the first rejection per experiment (0 = never)."""
    rej = p <= alpha
    if right_sign is not None:
        rej &= right_sign
    first = np.argmax(rej, axis=1) + 1
    return np.where(rej.any(axis=1), first, 0)


def row(label: str, k: int, n: int, extra: str = "") -> str:
    lo, hi = wilson(k, n)
    return f"| {label} | {k}/{n} | {k / n:.4f} | [{lo:.4f}, {hi:.4f}] | {extra} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiments", type=int, default=2000)
    ap.add_argument("--looks", type=int, default=20)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--mde", type=float, default=0.05, help="relative; sets the mixing variance")
    ap.add_argument("--base-ctr", type=float, default=0.05)
    ap.add_argument("--lift", type=float, default=0.05, help="true relative lift in (b)")
    ap.add_argument("--imps-per-look", type=float, default=15_000, help="per arm")
    ap.add_argument("--heterogeneity", type=float, default=40.0, help="Gamma shape k")
    ap.add_argument("--chunk", type=int, default=500, help="experiments simulated at once")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    n, looks, alpha = args.experiments, args.looks, args.alpha
    started = time.perf_counter()

    def simulate(lift: float) -> dict[str, np.ndarray]:
        parts = [
            run_tests(
                rng,
                min(args.chunk, n - i),
                looks,
                args.imps_per_look,
                args.base_ctr,
                lift,
                args.heterogeneity,
                alpha,
                args.mde,
            )
            for i in range(0, n, args.chunk)
        ]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    total_imps = args.imps_per_look * looks
    print(
        f"{n} experiments x {looks} looks, 64 buckets, base CTR {args.base_ctr:g}, "
        f"{args.imps_per_look:,.0f} impressions per arm per look "
        f"({total_imps:,.0f} at the last look), alpha {alpha:g}, mixing mde {args.mde:g}"
    )
    aa = simulate(0.0)
    print(f"median design effect at the last look: {np.median(aa['de']):.2f}\n")
    print("| scenario | hits | rate | 95% Wilson CI | note |")
    print("|---|---|---|---|---|")
    for label, key in (("sequential (msprt)", "sequential"), ("fixed z, peeking", "fixed")):
        k = int((first_rejection(aa[key], alpha) > 0).sum())
        print(row(f"(a) A/A false positives, {label}, any of {looks} looks", k, n))
    k = int((aa["fixed"][:, -1] <= alpha).sum())
    print(row("(a) A/A false positives, fixed z, last look only", k, n, "no peeking"))

    ab = simulate(args.lift)
    positive = ab["diff"] > 0
    for label, key in (("sequential (msprt)", "sequential"), ("fixed z, peeking", "fixed")):
        first = first_rejection(ab[key], alpha, positive)
        k = int((first > 0).sum())
        med = float(np.median(first[first > 0])) if k else float("nan")
        note = f"median first look {med:g} ({med * args.imps_per_look:,.0f} imps/arm)"
        print(row(f"(b) power, +{args.lift:.0%} lift, {label}, by look {looks}", k, n, note))
    k = int(((ab["fixed"][:, -1] <= alpha) & positive[:, -1]).sum())
    print(row(f"(b) power, +{args.lift:.0%} lift, fixed z, last look only", k, n, "no peeking"))

    exposures = 200_000
    for label, share in (("48/52 (true SRM)", 0.48), ("50/50 (no SRM)", 0.50)):
        control = rng.binomial(exposures, share, size=n).astype(np.float64)
        observed = np.stack([control, exposures - control], axis=1)
        _, p = srm_test(observed, [50, 50])
        k = int((p < 0.001).sum())
        print(row(f"(c) SRM flagged (p < 0.001), {label}, {exposures:,} exposures", k, n))

    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
