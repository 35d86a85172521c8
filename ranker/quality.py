"""Feed quality measured per response and from feedback, fed into the metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ranker.hashing import N_ANALYSIS_BUCKETS, analysis_bucket
from ranker.metrics import DRIFT_FEATURES, RankerMetrics


@dataclass(frozen=True)
class FeedQuality:
    unique_categories: int
    category_entropy: float  # bits
    mean_age_hours: float


class QualityMonitor:
    """Diversity, coverage, freshness and relevance of what one variant serves.

    Per response: distinct categories and their Shannon entropy, the age of
    every item (freshness) and the share of the catalog served since start
    (coverage). From feedback: clicks, likes and dwell per user bucket, which
    give the click-through and engagement rates against impressions.
    """

    def __init__(self, metrics: RankerMetrics, n_items: int, n_categories: int) -> None:
        self.metrics = metrics
        self.n_items = n_items
        self.n_categories = n_categories
        self._seen = np.zeros(n_items, dtype=np.bool_)
        self._seen_count = 0
        self.impressions = np.zeros(N_ANALYSIS_BUCKETS, dtype=np.int64)
        self.clicks = np.zeros(N_ANALYSIS_BUCKETS, dtype=np.int64)
        self.engagements = np.zeros(N_ANALYSIS_BUCKETS, dtype=np.int64)
        self.dwell_seconds = np.zeros(N_ANALYSIS_BUCKETS, dtype=np.float64)
        self.dwell_events = np.zeros(N_ANALYSIS_BUCKETS, dtype=np.int64)

    def observe_response(
        self,
        user_id: int,
        rows: npt.NDArray[np.intp],
        categories: npt.NDArray[np.int64],
        ages: npt.NDArray[np.float64],
        scores: npt.NDArray[np.float32] | None,
        features: npt.NDArray[np.float32] | None,
        feature_index: dict[str, int],
    ) -> FeedQuality:
        m = self.metrics
        bucket = analysis_bucket(user_id)
        n = len(rows)
        self.impressions[bucket] += n
        m.impressions_by_bucket[bucket].inc(n)
        counts = np.bincount(categories, minlength=self.n_categories)
        unique = int((counts > 0).sum())
        p = counts[counts > 0] / n if n else counts[:0].astype(np.float64)
        entropy = float(-(p * np.log2(p)).sum()) if n else 0.0
        m.unique_categories_child.observe(unique)
        m.category_entropy_child.observe(entropy)
        m.item_age_child.observe_many(ages)
        if scores is not None:
            m.score_child.observe_many(scores)
        new = ~self._seen[rows]
        if new.any():
            self._seen[rows[new]] = True
            self._seen_count += int(new.sum())
            m.coverage_child.set(self._seen_count / self.n_items)
        if features is not None:
            for name in DRIFT_FEATURES:
                col = feature_index.get(name)
                if col is not None:
                    m.features[name].observe(float(features[col]))
        return FeedQuality(unique, entropy, float(ages.mean()) if n else math.nan)

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
        return self._seen_count / self.n_items

    def relevance(self) -> dict[str, float]:
        """Click-through and engagement rates over everything served so far."""
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
