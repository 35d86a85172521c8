"""Top-k maximum inner product search over the catalog's item embeddings.

Two indexes with one interface (:class:`CatalogIndex`):

* :class:`ExactIndex`: a matrix-vector product and a partial sort, exactly what the
  engine has always done (the same top-k, in the same order, for the same input).
* :class:`IVFIndex`: faiss's inverted-file index (``IndexIVFFlat``, inner product). The
  catalog is split into ``nlist`` k-means cells; a query scans the ``nprobe`` cells
  whose centroids score highest, so its cost grows with ``nprobe * N / nlist`` instead
  of ``N``. The vectors are stored as they are (no compression): the scores of the
  items it returns are exact, only items in unscanned cells can be missed.
  ``nprobe`` is calibrated once, when the index is built: the smallest power of two
  whose recall@k against the exact scan, on a sample of real queries, reaches the
  target.

:func:`build_index` picks one: exact below ``ann_threshold`` items (measured with
``make bench-catalog``: below it the exact scan is as fast and needs no build), IVF at
and above it. faiss (``faiss-cpu`` from PyPI) is used because it is maintained, ships
wheels, has inner-product IVF and HNSW, and searches with a single thread when asked.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

IndexKind = Literal["auto", "exact", "ivf"]
#: catalogs of at least this many items get the IVF index under ``auto``
ANN_THRESHOLD = 50_000
#: nprobe is raised until recall@k on the calibration queries reaches this
RECALL_TARGET = 0.98


class CatalogIndex(Protocol):
    kind: str

    def search(
        self, query: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """(catalog rows, inner products) of the top ``k`` for ``query``, best first."""
        ...

    def memory_bytes(self) -> int: ...


#: exact_top_k samples every STRIDE-th score to bound the k-th largest from below
STRIDE = 8


def exact_top_k(
    emb: npt.NDArray[np.float32], query: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """(rows, logits) of the exact top ``k``, best first; ties: lower row first (the
    order of a full stable sort).

    Selecting among all ``N`` scores (``argpartition``) costs more than the product
    itself. Instead: the ``k``-th largest of every ``STRIDE``-th score is a lower bound
    of the true ``k``-th largest (a subset's k-th largest cannot exceed the whole
    set's), so every row scoring at least that bound is a candidate and the true top
    ``k`` are all among them (about ``k * STRIDE`` rows). A partition of the
    candidates' scores then gives the true ``k``-th largest, and only the rows scoring
    at least that (``k``, more on a tie) are sorted exactly, in row order so that a
    stable sort breaks ties by row."""
    logits = emb @ query
    n = len(logits)
    k = min(k, n)
    if n >= 4 * k * STRIDE:
        sample = logits[::STRIDE].copy()
        sample.partition(len(sample) - k)
        candidates = (logits >= sample[len(sample) - k]).nonzero()[0]
        scores = logits[candidates]
        kth = scores.copy()
        kth.partition(len(kth) - k)
        keep = scores >= kth[len(kth) - k]
        candidates, scores = candidates[keep], scores[keep]
    else:
        candidates, scores = np.arange(n), logits
    order = (-scores).argsort(kind="stable")[:k]
    top = candidates[order].astype(np.intp, copy=False)
    return top, logits[top]


class ExactIndex:
    kind = "exact"

    def __init__(self, emb: npt.NDArray[np.float32]) -> None:
        self.emb = emb

    def search(
        self, query: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        return exact_top_k(self.emb, query, k)

    def memory_bytes(self) -> int:
        return int(self.emb.nbytes)


@dataclass
class Calibration:
    nprobe: int
    recall: float
    #: recall@k per nprobe tried
    tried: dict[int, float] = field(default_factory=dict)


def recall_at_k(found: npt.NDArray[np.intp], truth: npt.NDArray[np.intp]) -> float:
    return len(np.intersect1d(found, truth)) / max(len(truth), 1)


class IVFIndex:
    """faiss ``IndexIVFFlat`` with inner product (see the module docstring)."""

    kind = "ivf"

    def __init__(
        self,
        emb: npt.NDArray[np.float32],
        *,
        nlist: int | None = None,
        train_size: int = 100_000,
        seed: int = 0,
        build_threads: int | None = None,
    ) -> None:
        import faiss

        self._faiss: Any = faiss
        n, dim = emb.shape
        self.n = n
        self.nlist = nlist or max(16, 2 ** round(math.log2(math.sqrt(n))))
        t0 = time.perf_counter()
        faiss.omp_set_num_threads(build_threads or os.cpu_count() or 1)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = emb if n <= train_size else emb[rng.choice(n, train_size, replace=False)]
        index.cp.seed = seed
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.add(np.ascontiguousarray(emb, dtype=np.float32))
        self.index = index
        self.build_seconds = time.perf_counter() - t0
        # one query at a time on one core: OpenMP threads only add wake-ups to a request
        faiss.omp_set_num_threads(1)
        self.calibration = Calibration(nprobe=min(8, self.nlist), recall=float("nan"))
        self.index.nprobe = self.calibration.nprobe
        self._emb = emb

    def calibrate(
        self, queries: npt.NDArray[np.float32], k: int, target: float = RECALL_TARGET
    ) -> Calibration:
        """The smallest power-of-two nprobe whose mean recall@k over ``queries`` against
        the exact scan reaches ``target`` (all cells at worst: then it is exact)."""
        truth = [exact_top_k(self._emb, q, k)[0] for q in queries]
        tried: dict[int, float] = {}
        nprobe = 1
        while True:
            self.index.nprobe = nprobe
            _, found = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
            recall = float(np.mean([recall_at_k(f, t) for f, t in zip(found, truth, strict=True)]))
            tried[nprobe] = recall
            if recall >= target or nprobe >= self.nlist:
                break
            nprobe = min(nprobe * 2, self.nlist)
        self.calibration = Calibration(nprobe, recall, tried)
        return self.calibration

    def search(
        self, query: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        scores, rows = self.index.search(query.reshape(1, -1), min(k, self.n))
        keep = rows[0] >= 0  # fewer than k in the scanned cells: -1 padding
        return rows[0][keep].astype(np.intp), scores[0][keep].astype(np.float32)

    def memory_bytes(self) -> int:
        # the stored vectors and ids plus the centroids (faiss's own overhead is small)
        return int(self.n * (self._emb.shape[1] * 4 + 8) + self.nlist * self._emb.shape[1] * 4)


def build_index(
    emb: npt.NDArray[np.float32],
    kind: IndexKind = "auto",
    *,
    threshold: int = ANN_THRESHOLD,
    calibration_queries: npt.NDArray[np.float32] | None = None,
    k: int = 50,
) -> CatalogIndex:
    """The catalog's index: exact below ``threshold`` items under ``auto``."""
    if kind == "exact" or (kind == "auto" and len(emb) < threshold):
        return ExactIndex(emb)
    index = IVFIndex(emb)
    if calibration_queries is not None and len(calibration_queries):
        index.calibrate(calibration_queries, k)
    return index
