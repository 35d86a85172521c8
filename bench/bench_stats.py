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
  (d) CUPED (rankexp.analysis.cuped) against the unadjusted sequential test in the same
      simulated experiments: here each bucket also has a persistent factor
      (Gamma(kp, 1/kp), the users' own click propensity) shared by a pre-period window
      and the experiment, which sets the pre/post correlation rho. A/A false positives
      over the looks, power and the impressions to the first rejection, and the CI
      width ratio at the last look against the theory sqrt(1 - rho^2) (rho measured
      on the simulated buckets).

Every rate carries a 95 % Wilson interval.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from rankexp.analysis import fixed_test, mixing_variance, msprt_p_value, ratio_estimate, srm_test
from rankexp.analysis.cuped import adjust, pooled_theta
from rankexp.analysis.cuped import moments as cuped_moments

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


def simulate_cuped_arm(
    rng: np.random.Generator,
    n_exp: int,
    looks: int,
    imps_per_look: float,
    pre_imps: float,
    ctr: float,
    pre_ctr: float,
    k: float,
    kp: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cumulative clicks, impressions) of shape (n_exp, looks, BUCKETS) at ``ctr`` and
    the pre-period's (clicks, impressions) of shape (n_exp, 1, BUCKETS) at ``pre_ctr``
    (before any treatment): one persistent factor per bucket for both, a transient one
    per look."""
    persistent = rng.gamma(kp, 1.0 / kp, size=(n_exp, 1, BUCKETS))
    shape = (n_exp, looks, BUCKETS)
    imps = rng.poisson(imps_per_look / BUCKETS, size=shape).astype(np.float64)
    rate = np.minimum(ctr * persistent * rng.gamma(k, 1.0 / k, size=shape), 1.0)
    clicks = rng.binomial(imps.astype(np.int64), rate).astype(np.float64)
    # the pre-period in as many periods as the experiment has looks, each with its own
    # transient factor
    pre_i = rng.poisson(pre_imps / looks / BUCKETS, size=shape).astype(np.float64)
    pre_rate = np.minimum(pre_ctr * persistent * rng.gamma(k, 1.0 / k, size=shape), 1.0)
    pre_c = rng.binomial(pre_i.astype(np.int64), pre_rate).astype(np.float64)
    pre_c, pre_i = pre_c.sum(axis=1, keepdims=True), pre_i.sum(axis=1, keepdims=True)
    return np.cumsum(clicks, axis=1), np.cumsum(imps, axis=1), pre_c, pre_i


def run_cuped(
    rng: np.random.Generator,
    n_exp: int,
    looks: int,
    imps_per_look: float,
    pre_imps: float,
    base: float,
    lift: float,
    k: float,
    kp: float,
    mde: float,
) -> dict[str, np.ndarray]:
    """Sequential p-values unadjusted and with CUPED at each look, the CUPED/unadjusted
    standard-error ratio, the pooled residual correlation rho, and the lift."""
    arms = [
        simulate_cuped_arm(rng, n_exp, looks, imps_per_look, pre_imps, ctr, base, k, kp)
        for ctr in (base, base * (1 + lift))
    ]
    parts = [
        cuped_moments(c, i, np.broadcast_to(pc, c.shape), np.broadcast_to(pi, i.shape))
        for c, i, pc, pi in arms
    ]
    theta = pooled_theta(parts)
    pooled_x = sum(a[2].sum(axis=-1) for a in arms) / sum(a[3].sum(axis=-1) for a in arms)
    (rc, vc), (rt, vt) = (adjust(p, theta, pooled_x) for p in parts)
    c0, t0 = parts
    diff0, var0 = t0.r_y - c0.r_y, t0.var_y + c0.var_y
    diff, var = rt - rc, vt + vc
    rho = (c0.cov + t0.cov) / np.sqrt((c0.var_x + t0.var_x) * var0)
    return {
        "unadjusted": msprt_p_value(diff0, var0, mixing_variance(c0.r_y, t0.r_y, mde)),
        "cuped": msprt_p_value(diff, var, mixing_variance(rc, rt, mde)),
        "se_ratio": np.sqrt(var / var0),
        "rho": rho,
        "diff0": diff0,
        "diff": diff,
    }


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
    ap.add_argument(
        "--persistence", type=float, default=300.0,
        help="(d) Gamma shape kp of each bucket's persistent factor (sets rho)",
    )  # fmt: skip
    ap.add_argument(
        "--cuped-imps-per-look", type=float, default=60_000,
        help="(d) impressions per arm per look",
    )  # fmt: skip
    ap.add_argument(
        "--pre-imps",
        type=float,
        default=None,
        help="(d) pre-period impressions per arm (default: the experiment's)",
    )
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

    cuped_rows(args, rng, alpha)
    print(f"\n{time.perf_counter() - started:.1f} s")


def cuped_rows(args: argparse.Namespace, rng: np.random.Generator, alpha: float) -> None:
    n, looks = args.experiments, args.looks
    per_look = args.cuped_imps_per_look
    pre = per_look * looks if args.pre_imps is None else args.pre_imps

    def simulate(lift: float) -> dict[str, np.ndarray]:
        parts = [
            run_cuped(rng, min(args.chunk, n - i), looks, per_look, pre,
                      args.base_ctr, lift, args.heterogeneity, args.persistence, args.mde)
            for i in range(0, n, args.chunk)
        ]  # fmt: skip
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    aa = simulate(0.0)
    rho = float(np.mean(aa["rho"][:, -1]))
    print(
        f"\n(d) CUPED: persistent bucket factor Gamma({args.persistence:g}), "
        f"{per_look:,.0f} impressions per arm per look, pre-period "
        f"{pre:,.0f} impressions per arm; measured pre/post correlation at the last look "
        f"rho = {rho:.3f} (look 1: {float(np.mean(aa['rho'][:, 0])):.3f})\n"
    )
    print("| scenario | hits | rate | 95% Wilson CI | note |")
    print("|---|---|---|---|---|")
    for label, key in (("sequential, unadjusted", "unadjusted"), ("sequential, CUPED", "cuped")):
        k = int((first_rejection(aa[key], alpha) > 0).sum())
        print(row(f"(d) A/A false positives, {label}, any of {looks} looks", k, n))
    ab = simulate(args.lift)
    needed: dict[str, float] = {}
    for label, key, d in (
        ("sequential, unadjusted", "unadjusted", "diff0"),
        ("sequential, CUPED", "cuped", "diff"),
    ):
        first = first_rejection(ab[key], alpha, ab[d] > 0)
        k = int((first > 0).sum())
        # the first look by which 80 % of the experiments have decided (power 0.8)
        by_look = [float(((first > 0) & (first <= j)).mean()) for j in range(1, looks + 1)]
        look80 = next((j + 1 for j, share in enumerate(by_look) if share >= 0.8), None)
        needed[key] = float("nan") if look80 is None else look80 * per_look
        note = (
            f"80 % decided by look {look80} ({look80 * per_look:,.0f} imps/arm)"
            if look80 is not None
            else f"80 % not reached by look {looks}"
        )
        print(row(f"(d) power, +{args.lift:.0%} lift, {label}, by look {looks}", k, n, note))
    width = float(np.mean(aa["se_ratio"][:, -1]))
    theory = math.sqrt(1 - rho**2)
    print(
        "\n| CUPED vs unadjusted (same experiments) | measured | theory |\n|---|---|---|\n"
        f"| CI width ratio at look {looks} | {width:.3f} | sqrt(1 - rho^2) = {theory:.3f} |\n"
        f"| variance ratio = share of users needed (fixed horizon) | {width**2:.3f} | "
        f"1 - rho^2 = {1 - rho**2:.3f} |\n"
        f"| impressions until 80 % of experiments decided (sequential, +{args.lift:.0%}) "
        f"| {needed['cuped']:,.0f} / {needed['unadjusted']:,.0f} = "
        f"{needed['cuped'] / needed['unadjusted']:.3f} | ~ 1 - rho^2 = {1 - rho**2:.3f} |"
    )


if __name__ == "__main__":
    main()
