"""Interleaving against A/B at the same traffic, in the ground-truth world.

Run: ``make bench-interleaving`` (or ``.venv/bin/python bench/bench_interleaving.py``).

In process, no HTTP. The models are loaded the way the ranker loads them
(``ranker.model.artifacts.load_snapshot`` + ``ranker.model.towers.load_towers`` +
``ranker.model.engine.RankingEngine``), and each model's top-``k`` feed is precomputed for
every user of the world (``ranker.world.ground_truth.make_world``, the world the models were
trained on). Pairs:

* ``v1 vs v2``: the reference models (``make models``; v2 is the stronger).
* ``v2 vs v2-seed8``: two near-identical models, the v2 profile trained on the same
  world, data and features, differing only by the seed of the weights' initialisation
  and batch order (``ranker.model.train.train(..., init_seed=8)``; about 20 s, cached in
  ``.tmp/bench-interleaving/``).
* ``v2 vs v2``: the same model on both sides, for the A/A false-positive rate.

Click model (the same for both designs): the world's true click probability of
(user, item), times an examination probability of the position,
``1 / log2(position + 2)`` (a position-based model: users look at the top of a feed
more; ``--position-bias none`` clicks with the true probabilities regardless of
position, as ``ranker.world.simulate`` does).

Traffic: each repetition draws ``--max-users`` simulated users (each a fresh id whose
profile is a uniformly drawn user of the world), each making ``1 + Poisson(2)`` feed
requests of ``k`` items. Ids are hashed as the router and ranker do
(``ranker.protocol.hashing``): the routing bucket splits A/B 50/50 (``ranker.route.allocation``),
the analysis bucket is the 64-way replicate of both analyses.

* A/B: a user sees her arm's model's feed; per bucket, clicks and impressions per
  arm; ``rankexp.analysis.analyze`` with the A/B input (ctr, sequential, alpha).
* Interleaving: every feed is ``ranker.route.interleave.team_draft(control list, treatment
  list, k, coin)`` with a fair coin per round (all 2^(k/2) coin sequences are
  precomputed per user, and each feed draws one uniformly); clicks go to the team of
  the clicked item, ``ranker.route.interleave.winner`` gives the feed's outcome (feeds with a
  click only); per bucket, the outcome counts and the clicking users;
  ``rankexp.analysis.analyze`` with the interleaving input.

Both designs look every ``--look-every`` users; the users at the first look that
decides (Promote or Rollback) are recorded. Printed per pair and design: the median
over repetitions (a repetition that never decides counts as more than the cap), how
many decided within the cap, the ratio A/B / interleaving of the medians, and the
share of repetitions where both decided and agree on the direction. Also the A/A
false-positive rate of interleaving (v2 vs v2): the share of ``--aa-reps``
repetitions that ever decide at any look up to the cap (target <= alpha).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ranker.model.artifacts import load_snapshot
from ranker.model.engine import RankingEngine
from ranker.model.towers import load_towers
from ranker.protocol.hashing import N_ANALYSIS_BUCKETS, analysis_bucket, routing_bucket
from ranker.route import allocation
from ranker.route.interleave import CONTROL, TREATMENT, team_draft, winner
from ranker.world.ground_truth import World, make_world
from rankexp.analysis import analyze

B = N_ANALYSIS_BUCKETS
OUTCOME_INDEX = {"control": 0, "treatment": 1, "tie": 2}
ROOT = Path(__file__).resolve().parents[1]
SALT = "bench-interleaving"
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# --- models and feeds -----------------------------------------------------------------


def near_identical_model(models: Path, cache: Path, init_seed: int) -> Path:
    """v2 trained again on the same world and data with another init seed (cached)."""
    out = cache / f"v2-seed{init_seed}"
    if (out / "metadata.json").is_file():
        return out
    from ranker.model.train import train

    world_seed = int(json.loads((models / "v2" / "metadata.json").read_text())["world_seed"])
    t0 = time.perf_counter()
    print(f"training v2 with init seed {init_seed} into {out} ...", flush=True)
    train("v2", out, seed=world_seed, version=f"v2-seed{init_seed}", init_seed=init_seed)
    print(f"  trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def top_k_lists(path: Path, n_users: int, k: int) -> IntArray:
    """(n_users, k) item ids: the model's feed for every user of the world, as served."""
    snapshot = load_snapshot(str(path))
    engine = RankingEngine(snapshot, load_towers(snapshot, "auto", threads=2))
    out = np.empty((n_users, k), dtype=np.int64)
    for u in range(n_users):
        out[u] = snapshot.item_ids[engine.rank(u, k).rows]
    return out


def examination(k: int, position_bias: str) -> FloatArray:
    if position_bias == "none":
        return np.ones(k)
    return np.asarray(1.0 / np.log2(np.arange(k) + 2.0), dtype=np.float64)


@dataclass
class Interleaved:
    """Every team-draft feed of a pair: per user and coin sequence, the click
    probability and the team of each position."""

    probs: FloatArray  # (users, patterns, k)
    teams: npt.NDArray[np.int8]  # (users, patterns, k)


def interleave_all(world: World, a: IntArray, b: IntArray, k: int, exam: FloatArray) -> Interleaved:
    rounds = (k + 1) // 2
    patterns = 1 << rounds
    n = len(a)
    items = np.empty((n, patterns, k), dtype=np.int64)
    teams = np.empty((n, patterns, k), dtype=np.int8)
    a_lists, b_lists = a.tolist(), b.tolist()
    for p in range(patterns):
        bits = [bool((p >> r) & 1) for r in range(rounds)]
        for u in range(n):
            flips = iter(bits)
            got, who = team_draft(a_lists[u], b_lists[u], k, flips.__next__)
            if len(got) != k:
                raise RuntimeError("a feed came out short: both lists need k distinct items")
            items[u, p] = got
            teams[u, p] = who
    users = np.arange(n)[:, None, None]
    probs = world.click_prob(users, items) * exam
    return Interleaved(np.asarray(probs, dtype=np.float64), teams)


# --- traffic ----------------------------------------------------------------------------


@dataclass
class Traffic:
    """One repetition's users, in arrival order."""

    profile: IntArray  # world user whose latents the simulated user has
    requests: IntArray
    bucket: IntArray  # analysis bucket
    arm: IntArray  # 0 control, 1 treatment (A/B)
    look: IntArray  # index of the first look that includes the user
    n_looks: int
    look_every: int
    req_user: IntArray = field(init=False)

    def __post_init__(self) -> None:
        self.req_user = np.repeat(np.arange(len(self.profile)), self.requests)


def make_traffic(
    rng: np.random.Generator, rep_key: int, n: int, n_world: int, look_every: int, ab: bool
) -> Traffic:
    ids = [f"{rep_key}-{i}" for i in range(n)]
    bucket = np.fromiter((analysis_bucket(u) for u in ids), dtype=np.int64, count=n)
    if ab:
        owner = allocation.owners(
            allocation.layout(["control", "treatment"], {"control": 50, "treatment": 50}),
            ["control", "treatment"],
        )
        arm = np.fromiter((owner[routing_bucket(SALT, u)] for u in ids), dtype=np.int64, count=n)
    else:
        arm = np.zeros(n, dtype=np.int64)
    return Traffic(
        profile=rng.integers(0, n_world, n),
        requests=1 + rng.poisson(2.0, n),
        bucket=bucket,
        arm=arm,
        look=np.arange(n) // look_every,
        n_looks=math.ceil(n / look_every),
        look_every=look_every,
    )


def _cumulative(tr: Traffic, groups: int, group: IntArray, weights: npt.NDArray[Any]) -> FloatArray:
    """(groups, looks, B) cumulative per-bucket sums of per-user ``weights``."""
    idx = (group * tr.n_looks + tr.look) * B + tr.bucket
    sums = np.bincount(idx, weights=weights, minlength=groups * tr.n_looks * B)
    return np.asarray(np.cumsum(sums.reshape(groups, tr.n_looks, B), axis=1), dtype=np.float64)


def simulate_ab(
    rng: np.random.Generator, tr: Traffic, probs: tuple[FloatArray, FloatArray]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cumulative (clicks, impressions) as (arm, look, bucket), users per (arm, look)."""
    stacked = np.stack(probs)  # (2, users, k)
    u = tr.req_user
    p = stacked[tr.arm[u], tr.profile[u]]
    clicks_req = (rng.random(p.shape) < p).sum(axis=1)
    n = len(tr.profile)
    clicks = np.bincount(u, weights=clicks_req, minlength=n)
    imps = (tr.requests * p.shape[1]).astype(np.float64)
    c = _cumulative(tr, 2, tr.arm, clicks)
    i = _cumulative(tr, 2, tr.arm, imps)
    users = np.cumsum(
        np.bincount(tr.arm * tr.n_looks + tr.look, minlength=2 * tr.n_looks).reshape(2, -1),
        axis=1,
    )
    return c, i, users.astype(np.float64)


def simulate_interleaving(
    rng: np.random.Generator, tr: Traffic, il: Interleaved
) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """Cumulative outcomes as (outcome, look, bucket), clicking users per look, and the
    per-feed check that the vectorised winner matches ``ranker.route.interleave.winner``."""
    u = tr.req_user
    pattern = rng.integers(0, il.probs.shape[1], len(u))
    p = il.probs[tr.profile[u], pattern]
    team = il.teams[tr.profile[u], pattern]
    clicked = rng.random(p.shape) < p
    c = (clicked & (team == CONTROL)).sum(axis=1)
    t = (clicked & (team == TREATMENT)).sum(axis=1)
    outcome = np.where(c > t, 0, np.where(t > c, 1, 2))
    has = (c + t) > 0
    # Spot-check the vectorised outcome against the library's winner().
    for j in np.flatnonzero(has)[:50]:
        assert OUTCOME_INDEX[winner(team[j][clicked[j]].tolist())] == outcome[j]
    n = len(tr.profile)
    per_user = np.zeros((3, n))
    np.add.at(per_user, (outcome[has], u[has]), 1.0)
    out = np.stack([_cumulative(tr, 1, np.zeros(n, np.int64), per_user[o])[0] for o in range(3)])
    clicking = np.bincount(u, weights=(c + t).astype(np.float64), minlength=n) > 0
    users = np.cumsum(
        np.bincount(tr.look, weights=clicking.astype(np.float64), minlength=tr.n_looks)
    )
    return (
        np.asarray(out, dtype=np.float64),
        np.asarray(users, dtype=np.float64),
        clicking.astype(np.float64),
        float(has.mean()),
    )


# --- decisions --------------------------------------------------------------------------


@dataclass
class Settings:
    alpha: float
    mde_ab: float
    mde_il: float
    min_per_arm: float
    min_clicking: float


def first_decision_ab(
    clicks: FloatArray, imps: FloatArray, users: FloatArray, tr: Traffic, s: Settings
) -> tuple[int | None, int]:
    """(users at the first look that decides, +1 Promote / -1 Rollback / 0)."""
    for look in range(tr.n_looks):
        payload: dict[str, Any] = {
            "method": "sequential",
            "alpha": s.alpha,
            "mde": s.mde_ab,
            "primary_metric": "ctr",
            "secondary_metrics": [],
            "weights": {"control": 50, "treatment": 50},
            "min_samples_per_variant": s.min_per_arm,
            "variants": {
                name: {
                    "exposures": float(users[a, look]),
                    "buckets": {
                        "clicks": clicks[a, look].tolist(),
                        "impressions": imps[a, look].tolist(),
                    },
                }
                for a, name in enumerate(("control", "treatment"))
            },
        }
        d = analyze(payload)["decision"]
        if d in ("Promote", "Rollback"):
            return min((look + 1) * tr.look_every, len(tr.profile)), 1 if d == "Promote" else -1
    return None, 0


def first_decision_il(
    outcomes: FloatArray, clicking: FloatArray, tr: Traffic, s: Settings
) -> tuple[int | None, int]:
    for look in range(tr.n_looks):
        payload = {
            "mode": "interleaving",
            "method": "sequential",
            "alpha": s.alpha,
            "mde": s.mde_il,
            "outcomes": {name: outcomes[o, look].tolist() for name, o in OUTCOME_INDEX.items()},
            "clicking_users": float(clicking[look]),
            "min_users_with_click": s.min_clicking,
        }
        d = analyze(payload)["decision"]
        if d in ("Promote", "Rollback"):
            return min((look + 1) * tr.look_every, len(tr.profile)), 1 if d == "Promote" else -1
    return None, 0


# --- report -----------------------------------------------------------------------------


@dataclass
class Row:
    control: str
    treatment: str
    ab: list[tuple[int | None, int]]
    il: list[tuple[int | None, int]]
    lift: float  # measured relative CTR lift, A/B, mean over reps
    delta: float  # measured preference share, mean over reps


def median_users(results: list[tuple[int | None, int]], cap: int) -> tuple[float, int]:
    users = [math.inf if u is None else float(u) for u, _ in results]
    return float(np.median(users)), sum(u is not None for u, _ in results)


def fmt_users(x: float, cap: int) -> str:
    return f"> {cap:,}" if not math.isfinite(x) else f"{x:,.0f}"


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z**2 / n
    mid = (p + z**2 / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--cache", type=Path, default=ROOT / ".tmp" / "bench-interleaving")
    ap.add_argument("--reps", type=int, default=20, help="repetitions per pair")
    ap.add_argument("--aa-reps", type=int, default=200, help="repetitions of the A/A pair")
    ap.add_argument("--seed", type=int, default=20080101)
    ap.add_argument("--max-users", type=int, default=100_000, help="cap per repetition")
    ap.add_argument("--look-every", type=int, default=100, help="users between looks")
    ap.add_argument("--k", type=int, default=10, help="feed size")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--mde-ab", type=float, default=0.05, help="A/B: relative CTR lift")
    ap.add_argument("--mde-il", type=float, default=0.05, help="interleaving: preference share")
    ap.add_argument("--min-per-arm", type=float, default=100, help="A/B: users per arm")
    ap.add_argument("--min-clicking", type=float, default=100, help="interleaving: clicking users")
    ap.add_argument("--position-bias", choices=["pbm", "none"], default="pbm")
    ap.add_argument(
        "--init-seeds",
        default="8,9",
        help="init seeds of the v2 retrains: v2 vs the first, the first vs the second",
    )
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    t_start = time.perf_counter()

    for name in ("v1", "v2"):
        if not (args.models / name / "metadata.json").is_file():
            sys.exit(f"{args.models / name} missing: run `make models` first")
    seeds = [int(x) for x in args.init_seeds.split(",")]
    variants = {f"v2-seed{x}": near_identical_model(args.models, args.cache, x) for x in seeds}
    world_seed = int(json.loads((args.models / "v2" / "metadata.json").read_text())["world_seed"])
    world = make_world(world_seed)
    k = args.k
    exam = examination(k, args.position_bias)

    t0 = time.perf_counter()
    paths = {"v1": args.models / "v1", "v2": args.models / "v2", **variants}
    lists = {name: top_k_lists(p, world.n_users, k) for name, p in paths.items()}
    users_idx = np.arange(world.n_users)[:, None]
    probs = {name: world.click_prob(users_idx, ls) * exam for name, ls in lists.items()}
    ctr = {name: float(p.mean()) for name, p in probs.items()}
    names = list(variants)
    # v1 vs v2; v2 vs the same recipe on another seed; two seeds of it (near-identical);
    # last the A/A pair.
    pairs = [("v1", "v2"), ("v2", names[0])]
    if len(names) > 1:
        pairs.append((names[0], names[1]))
    pairs.append(("v2", "v2"))
    inter = {pair: interleave_all(world, lists[pair[0]], lists[pair[1]], k, exam) for pair in pairs}
    t_pre = time.perf_counter() - t0

    s = Settings(args.alpha, args.mde_ab, args.mde_il, args.min_per_arm, args.min_clicking)
    clicks = (
        "true probability x 1/log2(position + 2) examination"
        if args.position_bias == "pbm"
        else "true probability (no position bias)"
    )
    print(
        f"world seed {world_seed}: {world.n_users:,} user profiles, {world.n_items:,} items; "
        f"feeds of k = {k}; click model: {clicks}, the same for both designs.\n"
        "expected CTR per impression (true, whole population): "
        + ", ".join(f"{n} {c:.4f}" for n, c in ctr.items())
        + f"\n{args.reps} reps per pair, A/A {args.aa_reps} reps; "
        f"cap {args.max_users:,} users per rep; a look every {args.look_every} users; "
        f"sequential tests at alpha {args.alpha} (A/B: mde {args.mde_ab} relative CTR, "
        f">= {args.min_per_arm:g} users per arm; interleaving: mde {args.mde_il} "
        f"preference share, >= {args.min_clicking:g} clicking users)."
        f"\nprecomputed feeds and team drafts in {t_pre:.1f} s",
        flush=True,
    )

    rows = []
    for pi, (a, b) in enumerate(pairs[:-1]):
        t0 = time.perf_counter()
        ab_res: list[tuple[int | None, int]] = []
        il_res: list[tuple[int | None, int]] = []
        deltas, lifts = [], []
        for rep in range(args.reps):
            rng = np.random.default_rng([args.seed, pi, rep])
            key = args.seed * 1000 + rep
            tr = make_traffic(rng, key, args.max_users, world.n_users, args.look_every, True)
            c, i, users = simulate_ab(rng, tr, (probs[a], probs[b]))
            ab_res.append(first_decision_ab(c, i, users, tr, s))
            lifts.append((c[1, -1].sum() / i[1, -1].sum()) / (c[0, -1].sum() / i[0, -1].sum()) - 1)
            o, clicking, _, _ = simulate_interleaving(rng, tr, inter[(a, b)])
            il_res.append(first_decision_il(o, clicking, tr, s))
            tot = o[:, -1].sum(axis=1)
            deltas.append((tot[1] - tot[0]) / tot.sum())
        rows.append(Row(a, b, ab_res, il_res, float(np.mean(lifts)), float(np.mean(deltas))))
        print(f"  {a} vs {b}: {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    aa_res: list[tuple[int | None, int]] = []
    aa = pairs[-1]
    for rep in range(args.aa_reps):
        rng = np.random.default_rng([args.seed, 99, rep])
        key = args.seed * 1000 + 500_000 + rep
        tr = make_traffic(rng, key, args.max_users, world.n_users, args.look_every, False)
        o, clicking, _, _ = simulate_interleaving(rng, tr, inter[aa])
        aa_res.append(first_decision_il(o, clicking, tr, s))
    print(f"  {aa[0]} vs {aa[1]} (A/A): {time.perf_counter() - t0:.1f} s", flush=True)

    cap = args.max_users
    print()
    print(
        "| pair | true CTR lift | Δ (measured) | A/B users (median) | A/B decided "
        "| interleaving users (median) | interleaving decided | A/B / interleaving "
        "| same direction (both decided) | right direction A/B, interleaving |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        a, b = row.control, row.treatment
        m_ab, n_ab = median_users(row.ab, cap)
        m_il, n_il = median_users(row.il, cap)
        if math.isfinite(m_ab) and math.isfinite(m_il):
            ratio = f"{m_ab / m_il:.1f}x"
        elif math.isfinite(m_il):
            ratio = f"> {cap / m_il:.1f}x"
        else:
            ratio = "n/a"
        both = [
            (x[1], y[1])
            for x, y in zip(row.ab, row.il, strict=True)
            if x[0] is not None and y[0] is not None
        ]
        agree = f"{sum(x == y for x, y in both)}/{len(both)}" if both else "n/a"
        true_lift = ctr[b] / ctr[a] - 1
        truth = 1 if true_lift > 0 else -1
        right = " , ".join(
            f"{sum(d == truth for u, d in res if u is not None)}/{n}"
            for res, n in ((row.ab, n_ab), (row.il, n_il))
        )
        print(
            f"| {a} vs {b} | {100 * true_lift:+.1f} % (measured {100 * row.lift:+.1f} %) "
            f"| {row.delta:+.3f} | {fmt_users(m_ab, cap)} | {n_ab}/{len(row.ab)} "
            f"| {fmt_users(m_il, cap)} | {n_il}/{len(row.il)} | {ratio} | {agree} | {right} |"
        )
    hits = sum(u is not None for u, _ in aa_res)
    lo, hi = wilson(hits, len(aa_res))
    print()
    print(
        f"A/A (v2 vs v2), interleaving: {hits}/{len(aa_res)} reps ever decided over "
        f"{math.ceil(cap / args.look_every)} looks up to {cap:,} users: false-positive rate "
        f"{hits / len(aa_res):.3f} (95 % Wilson [{lo:.3f}, {hi:.3f}]; target <= {args.alpha})"
    )
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
