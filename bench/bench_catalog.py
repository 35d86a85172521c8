"""Benchmark: top-50 retrieval against synthetic catalogs of 10k, 100k and 1M items
(64-dim embeddings), exact scan against the IVF index (ranker.model.catalog_index), one
query at a time on one core.

The catalogs look like a two-tower model's item embeddings: items gather around topic
directions (512 topics of Zipf sizes), with a spread inside each, and their norms vary by
15 % as the trained v2 model's do. Queries (users) mix three topics, either focused (one
main interest, Dirichlet 0.3) or broad (Dirichlet 1.0); both are reported.
The IVF index is built once (as at model load, on every core), its nprobe calibrated
on 200 calibration queries for recall@50 >= 0.98; it is then measured on 1000 other
queries: recall@50 against the exact scan, p50/p99 per query, memory.

Prints one table. Figures, not pass/fail.
"""

from __future__ import annotations

import os

# one core for the queries: set before numpy (OpenBLAS) is imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from ranker.model.catalog_index import ExactIndex, IVFIndex, exact_top_k, recall_at_k  # noqa: E402

DIM = 64
K = 50


def synthetic(
    n_items: int, n_queries: int, seed: int, *, focus: float, clusters: int = 512
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Items around topic directions (Zipf-sized topics, a spread inside each, norms
    varying by 15 % as the trained model's item embeddings do); users mixing three
    topics with Dirichlet(``focus``) weights: 0.3 is a user with one main interest, 1.0
    a broad one."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    topic = rng.zipf(1.3, n_items) % clusters
    spread = rng.standard_normal((n_items, DIM)).astype(np.float32) * (0.45 / np.sqrt(DIM))
    norms = rng.lognormal(0.0, 0.15, n_items).astype(np.float32)[:, None]
    items = ((centers[topic] + spread) * norms).astype(np.float32)
    users = np.random.default_rng(seed + 1)
    mix = users.dirichlet(np.full(3, focus), n_queries).astype(np.float32)
    picks = users.integers(0, clusters, (n_queries, 3))
    queries = np.einsum("qm,qmd->qd", mix, centers[picks])
    queries += users.standard_normal(queries.shape).astype(np.float32) * (0.3 / np.sqrt(DIM))
    return np.ascontiguousarray(items), np.ascontiguousarray(queries, dtype=np.float32)


def timed(
    index: ExactIndex | IVFIndex, queries: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    for q in queries[:20]:  # warm-up
        index.search(q, K)
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        index.search(q, K)
        out[i] = time.perf_counter() - t0
    return out * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"top-{K}, {DIM}-dim float32, one query at a time on one core; "
          f"{args.queries} measured queries per catalog\n")  # fmt: skip
    print("| items | queries | index | build s | nlist | nprobe | recall@50 | p50 ms | p99 ms "
          "| memory MB | p99 vs exact |")  # fmt: skip
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        items, _ = synthetic(size, 0, args.seed, focus=1.0)
        for focus, users in ((0.3, "focused users"), (1.0, "broad users")):
            _, queries = synthetic(size, args.queries + 200, args.seed, focus=focus)
            calibrate, measured = queries[:200], queries[200:]
            exact = ExactIndex(items)
            exact_ms = timed(exact, measured)
            exact_p99 = float(np.percentile(exact_ms, 99))
            print(f"| {size:,} | {users} | exact | - | - | - | 1.000 "
                  f"| {np.percentile(exact_ms, 50):.2f} | {exact_p99:.2f} "
                  f"| {exact.memory_bytes() / 2**20:.0f} | 1.00 |", flush=True)  # fmt: skip
            ivf = IVFIndex(items)
            cal = ivf.calibrate(calibrate, K)
            truth = [exact_top_k(items, q, K)[0] for q in measured]
            recall = float(np.mean([recall_at_k(ivf.search(q, K)[0], t)
                                    for q, t in zip(measured, truth, strict=True)]))  # fmt: skip
            ivf_ms = timed(ivf, measured)
            p99 = float(np.percentile(ivf_ms, 99))
            print(f"| {size:,} | {users} | ivf | {ivf.build_seconds:.1f} | {ivf.nlist} "
                  f"| {cal.nprobe} | {recall:.3f} | {np.percentile(ivf_ms, 50):.2f} | {p99:.2f} "
                  f"| {ivf.memory_bytes() / 2**20:.0f} | {p99 / exact_p99:.2f} |",
                  flush=True)  # fmt: skip
            del ivf
        del items


if __name__ == "__main__":
    main()
