"""Scoring: the fast path that serves, and the naive path it is measured against.

The engine is backend-neutral numpy; the towers come from a backend
(:mod:`ranker.model.towers`: torch, or onnxruntime without torch)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ranker.model.artifacts import ModelSnapshot
from ranker.model.catalog_index import ANN_THRESHOLD, CatalogIndex, IndexKind, build_index
from ranker.model.towers import Towers

Scoring = Literal["fast", "naive"]


@dataclass(frozen=True)
class Ranking:
    """Top items for one request: catalog row indices, scores, and how they were made."""

    rows: npt.NDArray[np.intp]
    scores: npt.NDArray[np.float32]
    fallback: bool
    cache_hit: bool | None  # None when no user embedding was needed


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    return out


class RankingEngine:
    """Ranks the whole catalog for a user.

    fast: item embeddings are computed once here; a request is one user-tower
    pass (skipped on a cache hit) and a top-k search of the catalog index
    (:mod:`ranker.model.catalog_index`: exact scan below ``ann_threshold`` items, IVF above).
    naive: every catalog item goes through both towers on each request and the
    full list is sorted, as the original design did. Kept for the benchmark.
    """

    def __init__(
        self,
        loaded: ModelSnapshot,
        towers: Towers,
        scoring: Scoring = "fast",
        cache_size: int = 50_000,
        index: IndexKind = "auto",
        ann_threshold: int = ANN_THRESHOLD,
    ) -> None:
        self.loaded = loaded
        self.towers = towers
        self.scoring = scoring
        self.cache_size = cache_size
        self._cache: OrderedDict[int, npt.NDArray[np.float32]] = OrderedDict()
        self._user_row = {int(u): n for n, u in enumerate(loaded.user_ids)}
        self._item_ids = frozenset(int(i) for i in loaded.item_ids)
        self.n_items = len(loaded.item_ids)
        emb = towers.item(loaded.item_x)
        self._item_emb: npt.NDArray[np.float32] = np.ascontiguousarray(emb, dtype=np.float32)
        self._bias = np.float32(towers.bias)
        # Fallback for users the model has never seen: popular and fresh first.
        pop = np.log1p(loaded.item_popularity)
        z = (pop - pop.mean()) / (pop.std() + 1e-9) - loaded.item_age_hours / 72.0
        order = np.argsort(-z, kind="stable")
        self._fallback_rows = order.astype(np.intp)
        self._fallback_scores = _sigmoid(z[order].astype(np.float32))
        # Exact below ann_threshold items (the same top-k as ever); an IVF index above,
        # its nprobe calibrated on a sample of this model's own users.
        sample = loaded.user_x[:: max(1, len(loaded.user_x) // 256)][:256]
        ivf = index == "ivf" or (index == "auto" and self.n_items >= ann_threshold)
        queries = towers.user(sample) if ivf else None
        self.index: CatalogIndex = build_index(
            self._item_emb, index, threshold=ann_threshold, calibration_queries=queries
        )

    def knows(self, user_id: int) -> bool:
        return user_id in self._user_row

    def has_item(self, item_id: int) -> bool:
        return item_id in self._item_ids

    def user_features(self, user_id: int) -> npt.NDArray[np.float32] | None:
        row = self._user_row.get(user_id)
        return None if row is None else self.loaded.user_x[row]

    def _user_embedding(self, user_id: int, row: int) -> tuple[npt.NDArray[np.float32], bool]:
        emb = self._cache.get(user_id)
        if emb is not None:
            self._cache.move_to_end(user_id)
            return emb, True
        emb = self.towers.user(self.loaded.user_x[row : row + 1])[0].copy()
        self._cache[user_id] = emb
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return emb, False

    def rank(self, user_id: int, k: int) -> Ranking:
        k = min(k, self.n_items)
        row = self._user_row.get(user_id)
        if row is None:
            return Ranking(self._fallback_rows[:k], self._fallback_scores[:k], True, None)
        if self.scoring == "naive":
            return self._rank_naive(row, k)
        emb, hit = self._user_embedding(user_id, row)
        top, logits = self.index.search(emb, k)
        return Ranking(top, _sigmoid(logits + self._bias), False, hit)

    def _rank_naive(self, row: int, k: int) -> Ranking:
        # Both towers over every (user, item) pair, then a full sort: the original design.
        user_x = np.repeat(self.loaded.user_x[row : row + 1], self.n_items, axis=0)
        u = self.towers.user(user_x)
        i = self.towers.item(self.loaded.item_x)
        scores = _sigmoid((u * i).sum(axis=1) + self._bias)
        order = np.argsort(-scores, kind="stable")[:k]
        return Ranking(order.astype(np.intp), scores[order].astype(np.float32), False, None)
