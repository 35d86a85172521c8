"""The batched QualityMonitor exports exactly what computing each response on its
own, as it is served, exported (the per-request code it replaced, kept here as the
reference on prometheus_client's own Histogram, Counter and Gauge)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ranker.protocol.hashing import N_ANALYSIS_BUCKETS, analysis_bucket
from ranker.serve.metrics import (
    CATEGORY_COUNT_BUCKETS,
    DRIFT_FEATURES,
    ENTROPY_BUCKETS,
    FEATURE_BUCKETS,
    ITEM_AGE_BUCKETS,
    SCORE_BUCKETS,
    RankerMetrics,
)
from ranker.serve.quality import QualityMonitor, feed_quality

QUALITY_SERIES = (
    "ranking_impressions",
    "ranking_score",
    "ranking_feature_value",
    "ranking_unique_categories",
    "ranking_category_entropy",
    "ranking_item_age_hours",
    "ranking_catalog_coverage",
)
N_CATEGORIES = 12
FEATURES = {"age": 0, "like_rate": 3, "total_interactions": 5}


class Reference:
    """The per-request monitor as it was: every series updated as each response is served."""

    def __init__(self, registry: CollectorRegistry, variant: str, n_items: int) -> None:
        v = variant
        per_bucket = ["variant", "bucket"]
        imps = Counter(
            "ranking_impressions", "Items shown, by user bucket", per_bucket, registry=registry
        )
        self.impressions = [imps.labels(v, str(b)) for b in range(N_ANALYSIS_BUCKETS)]
        self.score = Histogram(
            "ranking_score",
            "Model score of each item served",
            ["variant"],
            buckets=SCORE_BUCKETS,
            registry=registry,
        ).labels(v)
        fv = Histogram(
            "ranking_feature_value",
            "User feature values seen at request time (drift input)",
            ["variant", "feature"],
            buckets=FEATURE_BUCKETS,
            registry=registry,
        )
        self.features = {f: fv.labels(v, f) for f in DRIFT_FEATURES}
        self.unique = Histogram(
            "ranking_unique_categories",
            "Distinct categories per feed",
            ["variant"],
            buckets=CATEGORY_COUNT_BUCKETS,
            registry=registry,
        ).labels(v)
        self.entropy = Histogram(
            "ranking_category_entropy",
            "Shannon entropy (bits) of a feed's categories",
            ["variant"],
            buckets=ENTROPY_BUCKETS,
            registry=registry,
        ).labels(v)
        self.age = Histogram(
            "ranking_item_age_hours",
            "Age of each item served",
            ["variant"],
            buckets=ITEM_AGE_BUCKETS,
            registry=registry,
        ).labels(v)
        self.coverage = Gauge(
            "ranking_catalog_coverage",
            "Share of the catalog served at least once since start",
            ["variant"],
            registry=registry,
        ).labels(v)
        self.coverage.set(0.0)
        self.seen = np.zeros(n_items, dtype=np.bool_)
        self.seen_count = 0
        self.n_items = n_items
        # sums as the per-request code made them: float(values.sum()) added per call
        self.score_sum = 0.0
        self.age_sum = 0.0

    def observe(
        self, user_id: int, rows: Any, cats: Any, ages: Any, scores: Any, features: Any
    ) -> None:
        n = len(rows)
        self.impressions[analysis_bucket(user_id)].inc(n)
        q = feed_quality(cats, ages, N_CATEGORIES)
        self.unique.observe(q.unique_categories)
        self.entropy.observe(q.category_entropy)
        for a in ages:  # buckets as Histogram.observe; the sum as BulkHistogram did it
            self.age.observe(float(a))
        self.age_sum += float(ages.sum())
        if scores is not None:
            for s in scores:
                self.score.observe(float(s))
            self.score_sum += float(scores.sum())
        new = ~self.seen[rows]
        if new.any():
            self.seen[rows[new]] = True
            self.seen_count += int(new.sum())
            self.coverage.set(self.seen_count / self.n_items)
        if features is not None:
            for name in DRIFT_FEATURES:
                self.features[name].observe(float(features[FEATURES[name]]))


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        if fam.name in QUALITY_SERIES
        for s in fam.samples
    }


def _text(registry: CollectorRegistry, names: tuple[str, ...]) -> list[str]:
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.split("{")[0]
        .split(" ")[0]
        .removesuffix("_bucket")
        .removesuffix("_sum")
        .removesuffix("_count")
        .removesuffix("_total")
        in names
        or any(line.startswith(f"# {w} {n} ") for w in ("HELP", "TYPE") for n in names)
    ]


@pytest.mark.parametrize("flush_every", [1, 7, 256, 10_000])
def test_batched_equals_per_request(flush_every: int) -> None:
    rng = np.random.default_rng(flush_every)
    n_items = 3_000
    item_category = rng.integers(0, N_CATEGORIES, n_items)
    item_age = rng.random(n_items) * 800.0
    item_age[:4] = [1.0, 3.0, 720.0, 0.0]  # on bucket bounds
    user_x = (rng.random((500, 8)) * np.array([90, 1, 1, 1, 1, 2000, 1, 1])).astype(np.float32)
    user_x[0, 0] = 20.0  # on a bound

    reg = CollectorRegistry()
    metrics = RankerMetrics(reg, "t")
    monitor = QualityMonitor(
        metrics, item_category, item_age, N_CATEGORIES, FEATURES, flush_every=flush_every
    )
    ref_reg = CollectorRegistry()
    ref = Reference(ref_reg, "t", n_items)

    for i in range(1_500):
        user = int(rng.integers(0, 700))
        k = int(rng.choice([50, 50, 50, 1, 2, 8, 13, 100, 500]))
        fallback = i % 11 == 0
        if i % 97 == 0:  # a feed of one category
            rows = np.flatnonzero(item_category == 3)[:k].astype(np.intp)
        else:
            rows = rng.choice(n_items, k, replace=False).astype(np.intp)
        scores = rng.random(len(rows)).astype(np.float32)
        scores[:1] = 0.05  # on a bound
        features = user_x[user] if user < 500 else None
        monitor.observe_response(user, rows, None if fallback else scores, features)
        ref.observe(
            user, rows, item_category[rows], item_age[rows], None if fallback else scores, features
        )
        if i % 400 == 399:  # a scrape in the middle sees everything so far
            assert _samples(reg) == _expected(ref, ref_reg)

    got, want = _samples(reg), _expected(ref, ref_reg)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key  # exactly, sums to the last bit
    # the same exposition text as prometheus_client's Histogram, line for line
    same = ("ranking_feature_value", "ranking_unique_categories", "ranking_category_entropy")
    assert _text(reg, same) == _text(ref_reg, same)
    assert monitor.coverage == ref.seen_count / n_items
    assert monitor.relevance()["impressions"] == sum(c._value.get() for c in ref.impressions)


def _expected(ref: Reference, ref_reg: CollectorRegistry) -> dict[Any, float]:
    want = _samples(ref_reg)
    # score and age sums: one float(values.sum()) per response, as BulkHistogram adds them
    want[("ranking_score_sum", (("variant", "t"),))] = ref.score_sum
    want[("ranking_item_age_hours_sum", (("variant", "t"),))] = ref.age_sum
    return want


def test_nothing_served_exports_zeros() -> None:
    reg = CollectorRegistry()
    metrics = RankerMetrics(reg, "t")
    monitor = QualityMonitor(metrics, np.zeros(10, np.int64), np.ones(10), N_CATEGORIES, FEATURES)
    monitor.flush()
    assert reg.get_sample_value("ranking_unique_categories_count", {"variant": "t"}) == 0
    assert reg.get_sample_value("ranking_catalog_coverage", {"variant": "t"}) == 0.0
    monitor.observe_response(1, np.array([2, 3], dtype=np.intp), None, None)
    # collecting the registry flushes
    assert reg.get_sample_value("ranking_catalog_coverage", {"variant": "t"}) == 0.2
    assert reg.get_sample_value("ranking_category_entropy_sum", {"variant": "t"}) == 0.0
