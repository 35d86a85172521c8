"""Feed quality measured per response and from feedback, fed into the metrics."""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ranker.protocol.hashing import N_ANALYSIS_BUCKETS, analysis_bucket
from ranker.serve.metrics import DRIFT_FEATURES, RankerMetrics

#: responses held before their quality is computed and exported (and at every scrape)
FLUSH_EVERY = 256

#: a user's analysis bucket, memoised (BLAKE2b per response is a microsecond)
_bucket = functools.lru_cache(maxsize=1 << 16)(analysis_bucket)


@dataclass(frozen=True)
class FeedQuality:
    unique_categories: int
    category_entropy: float  # bits
    mean_age_hours: float


def feed_quality(
    categories: npt.NDArray[np.int64], ages: npt.NDArray[np.float64], n_categories: int
) -> FeedQuality:
    """One feed's quality, computed on its own: the definition the batched
    :class:`QualityMonitor` reproduces exactly (tested against it)."""
    n = len(categories)
    counts = np.bincount(categories, minlength=n_categories)
    unique = int((counts > 0).sum())
    p = counts[counts > 0] / n if n else counts[:0].astype(np.float64)
    entropy = float(-(p * np.log2(p)).sum()) if n else 0.0
    return FeedQuality(unique, entropy, float(ages.mean()) if n else math.nan)


def _sums_per_feed(
    values: npt.NDArray[np.floating], lens: npt.NDArray[np.intp]
) -> npt.NDArray[np.floating]:
    """``values`` is several feeds' values back to back, ``lens`` their lengths: each
    feed's ``values.sum()`` as numpy computes it for that feed alone. Feeds of one
    length are summed as the rows of a matrix, which numpy reduces row by row with
    the same pairwise summation as a lone vector (so the same bits)."""
    out = np.zeros(len(lens), dtype=values.dtype)
    if len(lens) == 0:
        return out
    first = int(lens[0])
    if (lens == first).all():
        return values.reshape(len(lens), first).sum(axis=1) if first else out
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    for length in np.unique(lens).tolist():
        if length == 0:
            continue
        sel = np.flatnonzero(lens == length)
        out[sel] = values[starts[sel, None] + np.arange(length)].sum(axis=1)
    return out


class QualityMonitor:
    """Diversity, coverage, freshness and relevance of what one variant serves.

    Per response: distinct categories and their Shannon entropy, the age of
    every item (freshness), the model scores, the user's drift features and the
    share of the catalog served since start (coverage). From feedback: clicks,
    likes and dwell per user bucket, which give the click-through and engagement
    rates against impressions.

    A response costs only an append: :meth:`observe_response` keeps references to
    its arrays, and :meth:`flush` computes the batch with a few vectorised numpy
    operations and exports it. The exported values are exactly those of computing
    each response on its own as it is served (histogram buckets, counts, and sums to
    the last bit: the sums are added in the order the responses were served). The
    batch is flushed every ``flush_every`` responses, before the registry is
    collected (a scrape; :class:`ranker.serve.metrics.BeforeCollect`) and before anything
    here is read.
    """

    def __init__(
        self,
        metrics: RankerMetrics,
        item_category: npt.NDArray[np.int64],
        item_age_hours: npt.NDArray[np.float64],
        n_categories: int,
        feature_index: dict[str, int] | None = None,
        flush_every: int = FLUSH_EVERY,
    ) -> None:
        self.metrics = metrics
        self.n_items = len(item_category)
        self.n_categories = n_categories
        self._item_category = np.asarray(item_category, dtype=np.int64)
        self._item_age = np.asarray(item_age_hours, dtype=np.float64)
        index = feature_index or {}
        self._drift = [(name, index[name]) for name in DRIFT_FEATURES if name in index]
        self._flush_every = max(1, flush_every)
        self._pending: list[
            tuple[
                int,
                npt.NDArray[np.intp],
                npt.NDArray[np.float32] | None,
                npt.NDArray[np.float32] | None,
            ]
        ] = []
        self._lock = threading.Lock()
        self._seen = np.zeros(self.n_items, dtype=np.bool_)
        self._seen_count = 0
        self.impressions = np.zeros(N_ANALYSIS_BUCKETS, dtype=np.int64)
        self.clicks = np.zeros(N_ANALYSIS_BUCKETS, dtype=np.int64)
        self.engagements = np.zeros(N_ANALYSIS_BUCKETS, dtype=np.int64)
        self.dwell_seconds = np.zeros(N_ANALYSIS_BUCKETS, dtype=np.float64)
        self.dwell_events = np.zeros(N_ANALYSIS_BUCKETS, dtype=np.int64)
        metrics.before_collect.hooks.append(self.flush)

    def observe_response(
        self,
        user_id: int,
        rows: npt.NDArray[np.intp],
        scores: npt.NDArray[np.float32] | None,
        features: npt.NDArray[np.float32] | None,
    ) -> None:
        """Record one response: its catalog rows, their scores (None for the
        fallback feed) and the user's features (None for an unknown user). The
        arrays are kept, not copied, until the next flush: do not modify them."""
        pending = self._pending
        pending.append((user_id, rows, scores, features))
        if len(pending) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        """Compute and export the quality of the responses recorded since the last flush."""
        with self._lock:
            batch, self._pending = self._pending, []
            if batch:
                self._export(batch)

    def _export(
        self,
        batch: Sequence[
            tuple[
                int,
                npt.NDArray[np.intp],
                npt.NDArray[np.float32] | None,
                npt.NDArray[np.float32] | None,
            ]
        ],
    ) -> None:
        m = self.metrics
        n_feeds = len(batch)
        users = [b[0] for b in batch]
        feeds = [b[1] for b in batch]
        lens = np.fromiter(map(len, feeds), dtype=np.intp, count=n_feeds)
        rows = np.concatenate(feeds).astype(np.intp, copy=False)

        # impressions per user bucket (integers: the order of the additions is moot)
        buckets = np.fromiter(map(_bucket, users), dtype=np.intp, count=n_feeds)
        shown = np.bincount(buckets, weights=lens, minlength=N_ANALYSIS_BUCKETS)
        shown = shown.astype(np.int64)
        self.impressions += shown
        for b in np.flatnonzero(shown).tolist():
            m.impressions_by_bucket[b].inc(int(shown[b]))

        # distinct categories and entropy, per feed (see feed_quality)
        cats = self._item_category[rows]
        width = max(self.n_categories, int(cats.max()) + 1 if len(cats) else 0, 1)
        feed_of = np.repeat(np.arange(n_feeds), lens)
        counts = np.bincount(feed_of * width + cats, minlength=n_feeds * width)
        counts = counts.reshape(n_feeds, width)
        present = counts > 0
        unique = present.sum(axis=1)
        entropy = np.zeros(n_feeds, dtype=np.float64)
        for k in np.unique(unique).tolist():
            if k == 0:
                continue  # an empty feed: entropy 0
            sel = np.flatnonzero(unique == k)
            # each selected row has exactly k non-zero counts, kept in category order
            nonzero = counts[sel][present[sel]].reshape(len(sel), k)
            p = nonzero / lens[sel, None]
            entropy[sel] = -(p * np.log2(p)).sum(axis=1)
        m.unique_categories_child.observe_each(unique.astype(np.float64))
        m.category_entropy_child.observe_each(entropy)

        # freshness: every item's age; the sum grows by each feed's sum in turn
        ages = self._item_age[rows]
        m.item_age_child.observe_batch(ages, _sums_per_feed(ages, lens))

        scored = [b[2] for b in batch if b[2] is not None]
        if scored:
            scores = np.concatenate(scored)
            score_lens = np.fromiter(map(len, scored), dtype=np.intp, count=len(scored))
            m.score_child.observe_batch(scores, _sums_per_feed(scores, score_lens))

        # coverage
        new = ~self._seen[rows]
        if new.any():
            self._seen[rows[new]] = True
            self._seen_count = int(np.count_nonzero(self._seen))
            m.coverage_child.set(self._seen_count / self.n_items)

        # the users' drift features, one observation per response
        if self._drift:
            known = [b[3] for b in batch if b[3] is not None]
            if known:
                features = np.stack(known)
                for name, col in self._drift:
                    m.features[name].observe_each(features[:, col])

    def observe_feedback(self, user_id: int, event: str, dwell_seconds: float) -> None:
        m = self.metrics
        b = analysis_bucket(user_id)
        if event == "click":
            self.clicks[b] += 1
            m.clicks_by_bucket[b].inc()
        elif event == "like":
            self.engagements[b] += 1
            m.engagements_by_bucket[b].inc()
        elif event == "dwell":
            self.dwell_events[b] += 1
            self.dwell_seconds[b] += dwell_seconds
            m.dwell_events_by_bucket[b].inc()
            m.dwell_seconds_by_bucket[b].inc(dwell_seconds)

    @property
    def coverage(self) -> float:
        self.flush()
        return self._seen_count / self.n_items

    def relevance(self) -> dict[str, float]:
        """Click-through and engagement rates over everything served so far."""
        self.flush()
        imps = int(self.impressions.sum())
        return {
            "impressions": float(imps),
            "ctr": float(self.clicks.sum()) / imps if imps else 0.0,
            "engagement_rate": float(self.engagements.sum()) / imps if imps else 0.0,
            "mean_dwell_seconds": (
                float(self.dwell_seconds.sum() / self.dwell_events.sum())
                if self.dwell_events.sum()
                else 0.0
            ),
        }
