"""The ranker's Prometheus series, registered on an injected registry.

Names and labels are the contract in DESIGN.md ("Metrics the ranker exposes");
the control plane's PromQL depends on them, so change them only together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ranker.protocol.hashing import N_ANALYSIS_BUCKETS

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
#: ranking_bucket_latency_seconds: few buckets (64 user buckets x 13 series per variant),
#: dense where a p95 difference of tens of ms must be resolved.
BUCKET_LATENCY_BUCKETS = (
    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
)  # fmt: skip
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # fixed on [0, 1]
ITEM_AGE_BUCKETS = (1.0, 3.0, 6.0, 12.0, 24.0, 48.0, 72.0, 120.0, 168.0, 336.0, 720.0)
FEATURE_BUCKETS = (
    0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0,
)  # fmt: skip
CATEGORY_COUNT_BUCKETS = tuple(float(i) for i in range(1, 13))
ENTROPY_BUCKETS = tuple(round(0.25 * i, 2) for i in range(1, 16))
DRIFT_FEATURES = ("age", "like_rate", "total_interactions")


class BeforeCollect(Collector):
    """Runs hooks when the registry is collected, before the collectors registered
    after it: the quality monitor flushes its batch here, so a scrape (or any
    ``generate_latest``/``get_sample_value``) sees every response served so far.
    It yields no metrics and has no names (a registry restricted to some names
    skips it: flush before collecting such a one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.hooks: list[Callable[[], None]] = []
        registry.register(self)

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return []

    def collect(self) -> Iterator[HistogramMetricFamily]:
        for hook in self.hooks:
            hook()
        return iter(())


class BulkHistogram(Collector):
    """A histogram that takes a whole array per call.

    prometheus_client's Histogram costs a Python call per value; a ranked feed
    has 50 of them, so the hot path bins them with numpy instead. Exposed in
    the standard histogram format (_bucket with le, _sum, _count), with the same
    text as prometheus_client's Histogram given the same observations (tested).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        label_names: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._doc = documentation
        self._label_names = list(label_names)
        self._upper = np.asarray(buckets, dtype=np.float64)
        self._children: dict[tuple[str, ...], tuple[npt.NDArray[np.int64], list[float]]] = {}
        registry.register(self)

    def child(self, *labels: str) -> BulkHistogramChild:
        if labels not in self._children:
            self._children[labels] = (np.zeros(len(self._upper) + 1, dtype=np.int64), [0.0])
        counts, total = self._children[labels]
        return BulkHistogramChild(self._upper, counts, total)

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return [HistogramMetricFamily(self._name, self._doc, labels=self._label_names)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(self._name, self._doc, labels=self._label_names)
        for labels, (counts, total) in self._children.items():
            cum = np.cumsum(counts)
            buckets = [(_fmt(le), float(c)) for le, c in zip(self._upper, cum[:-1], strict=True)]
            buckets.append(("+Inf", float(cum[-1])))
            fam.add_metric(list(labels), buckets, total[0])
        yield fam


def _fmt(x: float) -> str:
    # le as prometheus_client's Histogram writes it
    return str(floatToGoString(x))  # type: ignore[no-untyped-call]


class BulkHistogramChild:
    __slots__ = ("_upper", "_counts", "_total")

    def __init__(
        self, upper: npt.NDArray[np.float64], counts: npt.NDArray[np.int64], total: list[float]
    ) -> None:
        self._upper = upper
        self._counts = counts
        self._total = total

    def observe_many(self, values: npt.NDArray[np.floating]) -> None:
        """Observe every value of ``values``; the sum grows by ``float(values.sum())``."""
        self._count(values)
        self._total[0] += float(values.sum())

    def observe_batch(
        self, values: npt.NDArray[np.floating], sums: npt.NDArray[np.floating]
    ) -> None:
        """Observe every value of ``values``, which are several calls' worth of
        ``observe_many``; ``sums`` are those calls' ``values.sum()``, in order. The
        sum grows exactly as those calls would have made it grow, one after another."""
        self._count(values)
        self._add_in_order(sums)

    def observe_each(self, values: npt.NDArray[np.floating]) -> None:
        """Observe each value as prometheus_client's ``Histogram.observe(float(v))``
        would, one after another: the same buckets, the same sum to the last bit
        (a NaN is in no bucket but in the sum, as there)."""
        values = np.asarray(values, dtype=np.float64)
        nan = np.isnan(values)
        self._count(values[~nan] if nan.any() else values)
        self._add_in_order(values)

    def _count(self, values: npt.NDArray[np.floating]) -> None:
        # le semantics: a value equal to a bound falls in that bucket
        idx = np.searchsorted(self._upper, values, side="left")
        self._counts += np.bincount(idx, minlength=len(self._counts))

    def _add_in_order(self, addends: npt.NDArray[np.floating]) -> None:
        if len(addends):
            # cumsum adds left to right, as repeated float += does (float64, like Python)
            running = np.empty(len(addends) + 1, dtype=np.float64)
            running[0] = self._total[0]
            running[1:] = addends
            self._total[0] = float(np.cumsum(running)[-1])


class RankerMetrics:
    """Every series the ranker owns, with children pre-bound for one variant."""

    def __init__(self, registry: CollectorRegistry, variant: str) -> None:
        self.registry = registry
        self.variant = variant
        v = variant
        #: first in the registry: hooks that run before the series are collected
        self.before_collect = BeforeCollect(registry)
        self.latency = Histogram(
            "ranking_latency_seconds",
            "Time to answer a /rank request",
            ["variant", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # The same /rank latency by user bucket: the replicates of the p95 difference's
        # interval (the latency non-inferiority guardrail); ranking_latency_seconds stays
        # as it is for the alerts and dashboards.
        self.bucket_latency = Histogram(
            "ranking_bucket_latency_seconds",
            "Time to answer a /rank request, by user bucket",
            ["variant", "bucket"],
            buckets=BUCKET_LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "ranking_requests_total",
            "HTTP requests by endpoint and status code",
            ["variant", "model_version", "endpoint", "code"],
            registry=registry,
        )
        self.errors = Counter(
            "ranking_errors_total",
            "Requests that failed on the server side (status >= 500)",
            ["variant", "model_version", "endpoint"],
            registry=registry,
        )
        per_bucket = ["variant", "bucket"]
        self.impressions = Counter(
            "ranking_impressions_total", "Items shown, by user bucket", per_bucket,
            registry=registry,
        )  # fmt: skip
        self.clicks = Counter(
            "ranking_clicks_total", "Click feedback, by user bucket", per_bucket,
            registry=registry,
        )  # fmt: skip
        self.engagements = Counter(
            "ranking_engagements_total", "Like feedback, by user bucket", per_bucket,
            registry=registry,
        )  # fmt: skip
        self.dwell_seconds = Counter(
            "ranking_dwell_seconds_total", "Seconds of dwell, by user bucket", per_bucket,
            registry=registry,
        )  # fmt: skip
        self.dwell_events = Counter(
            "ranking_dwell_events_total", "Dwell feedback events, by user bucket", per_bucket,
            registry=registry,
        )  # fmt: skip
        self.score = BulkHistogram(
            "ranking_score", "Model score of each item served", ["variant"], SCORE_BUCKETS,
            registry,
        )  # fmt: skip
        # The quality series below are fed in batches by ranker.serve.quality.QualityMonitor,
        # hence BulkHistogram (same exposition as prometheus_client's Histogram).
        self.feature_value = BulkHistogram(
            "ranking_feature_value",
            "User feature values seen at request time (drift input)",
            ["variant", "feature"],
            FEATURE_BUCKETS,
            registry,
        )
        self.unique_categories = BulkHistogram(
            "ranking_unique_categories", "Distinct categories per feed", ["variant"],
            CATEGORY_COUNT_BUCKETS, registry,
        )  # fmt: skip
        self.category_entropy = BulkHistogram(
            "ranking_category_entropy", "Shannon entropy (bits) of a feed's categories",
            ["variant"], ENTROPY_BUCKETS, registry,
        )  # fmt: skip
        self.item_age = BulkHistogram(
            "ranking_item_age_hours", "Age of each item served", ["variant"], ITEM_AGE_BUCKETS,
            registry,
        )  # fmt: skip
        self.coverage = Gauge(
            "ranking_catalog_coverage",
            "Share of the catalog served at least once since start",
            ["variant"],
            registry=registry,
        )
        self.cache_hits = Counter(
            "ranking_cache_hits_total", "User-embedding cache hits", ["variant"],
            registry=registry,
        )  # fmt: skip
        self.cache_requests = Counter(
            "ranking_cache_requests_total", "User-embedding cache look-ups", ["variant"],
            registry=registry,
        )  # fmt: skip
        self.model_auc = Gauge(
            "model_auc", "Offline AUC of the loaded model", ["variant", "model_version"],
            registry=registry,
        )  # fmt: skip
        self.model_ndcg = Gauge(
            "model_ndcg", "Offline NDCG@10 of the loaded model", ["variant", "model_version"],
            registry=registry,
        )  # fmt: skip

        # Pre-bind children so the hot path does no label look-ups, and so every
        # bucket's series exists from the start (increase() needs a first sample).
        def bind(c: Counter) -> list[Counter]:
            return [c.labels(v, str(b)) for b in range(N_ANALYSIS_BUCKETS)]

        self.impressions_by_bucket = bind(self.impressions)
        self.clicks_by_bucket = bind(self.clicks)
        self.engagements_by_bucket = bind(self.engagements)
        self.dwell_seconds_by_bucket = bind(self.dwell_seconds)
        self.dwell_events_by_bucket = bind(self.dwell_events)
        self.bucket_latency_by_bucket = [
            self.bucket_latency.labels(v, str(b)) for b in range(N_ANALYSIS_BUCKETS)
        ]
        self.score_child = self.score.child(v)
        self.item_age_child = self.item_age.child(v)
        self.features = {f: self.feature_value.child(v, f) for f in DRIFT_FEATURES}
        self.unique_categories_child = self.unique_categories.child(v)
        self.category_entropy_child = self.category_entropy.child(v)
        self.coverage_child = self.coverage.labels(v)
        self.coverage_child.set(0.0)
        self.cache_hits_child = self.cache_hits.labels(v)
        self.cache_requests_child = self.cache_requests.labels(v)
        self.model_version = "unknown"
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._error_children: dict[str, Counter] = {}
        self._latency_child: Histogram | None = None  # created on first use or set_model

    def set_model(self, version: str, auc: float | None, ndcg: float | None) -> None:
        self.model_version = version
        # Create the request and latency series at 0 as soon as the model serves, so
        # increase() over a window also counts the requests before the first scrape.
        self._request_children[("rank", 200)] = self.requests.labels(
            self.variant, version, "rank", "200"
        )
        # these follow the model version (the request counters above stay as they were)
        self._error_children = {}
        self._latency_child = self.latency.labels(self.variant, version)
        if auc is not None:
            self.model_auc.labels(self.variant, version).set(auc)
        if ndcg is not None:
            self.model_ndcg.labels(self.variant, version).set(ndcg)

    def count_request(
        self, endpoint: str, code: int, seconds: float | None, bucket: int | None = None
    ) -> None:
        """One request; ``seconds`` (its latency) for /rank, and ``bucket`` (the user's
        analysis bucket) when the request got as far as the handler."""
        key = (endpoint, code)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(self.variant, self.model_version, endpoint, str(code))
            self._request_children[key] = child
        child.inc()
        if code >= 500:
            error = self._error_children.get(endpoint)
            if error is None:
                error = self.errors.labels(self.variant, self.model_version, endpoint)
                self._error_children[endpoint] = error
            error.inc()
        if seconds is not None:
            latency = self._latency_child
            if latency is None:
                latency = self.latency.labels(self.variant, self.model_version)
                self._latency_child = latency
            latency.observe(seconds)
            if bucket is not None:
                self.bucket_latency_by_bucket[bucket].observe(seconds)
