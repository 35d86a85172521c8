"""rankexp.prom.metrics against a real Prometheus scraping real ranker and router processes.

``increase()`` extrapolates each series to the end of the window: with every
series starting at 0 inside the window, a target's counters all come out as
the true increase times one factor ``f >= 1`` that is shared by every series of
that target (same scrape timestamps). So per-bucket values are checked exactly
against ``sent x f``, with ``f`` measured from the totals and bounded.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ranker.protocol.hashing import N_ANALYSIS_BUCKETS, analysis_bucket
from ranker.serve.metrics import BUCKET_LATENCY_BUCKETS
from rankexp.analysis import DECISIONS, analyze, parse_input
from rankexp.local.process import Process, free_ports, wait_for
from rankexp.local.prom import LocalPrometheus
from rankexp.prom.errors import MissingSeries, PrometheusUnavailable, QueryError
from rankexp.prom.metrics import ExperimentMetrics, analysis_input
from rankexp.prom.queries import EXPOSURES, REQUESTS

pytestmark = pytest.mark.integration

VARIANTS = ("control", "treatment")
SCORE_EDGES = [0.0] + [round(0.05 * i, 2) for i in range(1, 21)]


def _experiment() -> str:
    return f"metrics-{uuid.uuid4().hex[:10]}"


def _values(prometheus: LocalPrometheus, promql: str) -> dict[str, float]:
    return {r["metric"].get("variant", ""): float(r["value"][1]) for r in prometheus.query(promql)}


@pytest.fixture
def targets(prometheus: LocalPrometheus) -> Iterator[LocalPrometheus]:
    """The shared Prometheus; this test's scrape targets are reset afterwards."""
    yield prometheus
    prometheus.set_targets("ranker", [])
    prometheus.set_targets("router", [])


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Any]:
    started: list[Process] = []

    def start(config: dict[str, Any]) -> str:
        path = tmp_path / "routing.json"
        path.write_text(json.dumps(config))
        (port,) = free_ports(1)
        proc = Process(
            "router",
            [sys.executable, "-m", "ranker.cli", "route", "--config", str(path),
             "--host", "127.0.0.1", "--port", str(port)],
            log_path=tmp_path / f"router-{port}.log",
        )  # fmt: skip
        proc.start()
        started.append(proc)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            return httpx.get(url + "/ready", timeout=2).status_code == 200

        wait_for(ready, timeout=30, what=f"{url}/ready", processes=[proc])
        return url

    yield start
    for proc in reversed(started):
        proc.stop()


class Sent:
    """What the test sent, per variant: the ground truth to compare with."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, list[float]]] = {
            v: {
                s: [0.0] * N_ANALYSIS_BUCKETS
                for s in ("impressions", "clicks", "engagements", "dwell_seconds", "dwell_events")
            }
            for v in VARIANTS
        }
        self.scored_items: dict[str, int] = defaultdict(int)
        self.rank_requests: dict[str, int] = defaultdict(int)
        self.exposures: dict[str, int] = defaultdict(int)

    def rank(self, client: httpx.Client, url: str, user: int, n: int) -> tuple[str, list[int]]:
        resp = client.post(url + "/rank", json={"user_id": user, "num_items": n})
        resp.raise_for_status()
        body = resp.json()
        variant = body["variant"]
        self.buckets[variant]["impressions"][analysis_bucket(user)] += len(body["items"])
        self.rank_requests[variant] += 1
        if not body["fallback"]:
            self.scored_items[variant] += len(body["items"])
        if "routed_variant" in body:
            assert body["routed_variant"] == variant
            self.exposures[variant] += 1
        return variant, [item["item_id"] for item in body["items"]]

    def feedback(
        self, client: httpx.Client, url: str, variant: str, user: int, item: int, event: str,
        dwell: float = 0.0,
    ) -> None:  # fmt: skip
        resp = client.post(
            url + "/feedback",
            json={"user_id": user, "item_id": item, "event": event, "dwell_seconds": dwell},
        )
        assert resp.status_code == 202, resp.text
        b = analysis_bucket(user)
        series = {"click": "clicks", "like": "engagements", "dwell": "dwell_events"}[event]
        self.buckets[variant][series][b] += 1
        if event == "dwell":
            self.buckets[variant]["dwell_seconds"][b] += dwell


def test_read_returns_what_was_sent(
    start_ranker: Any,
    start_router: Any,
    targets: LocalPrometheus,
    model_dirs: dict[str, Path],
) -> None:
    prometheus = targets
    exp = _experiment()
    _, control_url = start_ranker(model_dirs["v1"], "control")
    _, treatment_url = start_ranker(model_dirs["v2"], "treatment")
    urls = {"control": control_url, "treatment": treatment_url}
    router_url = start_router(
        {
            "experiment": exp,
            "salt": exp,
            "control": "control",
            "variants": [{"name": v, "weight": 50, "endpoints": [urls[v]]} for v in VARIANTS],
        }
    )
    labels = {"experiment": exp, "namespace": "default"}
    prometheus.add_targets("ranker", [u.removeprefix("http://") for u in urls.values()], labels)
    prometheus.add_targets("router", [router_url.removeprefix("http://")], labels)
    prometheus.wait_scraped("ranker", 2)
    prometheus.wait_scraped("router", 1)
    sel = f'experiment="{exp}"'

    # Every counter must have a sample at 0 inside the window (before the traffic).
    def zeros_scraped() -> bool:
        clicks = _values(
            prometheus,
            f'min by (variant) (count_over_time(ranking_clicks_total{{{sel},bucket="0"}}[1m]))',
        )
        exposures = _values(
            prometheus, f"min by (variant) (count_over_time({EXPOSURES}{{{sel}}}[1m]))"
        )
        return all(clicks.get(v, 0) >= 1 and exposures.get(v, 0) >= 1 for v in VARIANTS)

    wait_for(zeros_scraped, timeout=30, what="zero-valued series scraped")

    sent = Sent()
    with httpx.Client(timeout=10) as client:
        # ranking_requests_total and the latency histogram appear with the first
        # request; rank once and wait for them so that increase() has a baseline.
        for v in VARIANTS:
            sent.rank(client, urls[v], 9_999, 5)

        def requests_scraped() -> bool:
            got = _values(prometheus, f'{REQUESTS}{{{sel},endpoint="rank"}}')
            return set(got) == set(VARIANTS)

        wait_for(requests_scraped, timeout=30, what="ranking_requests_total scraped")
        rank_after_baseline = dict.fromkeys(VARIANTS, 0)

        for user in range(120):
            for v in VARIANTS:
                variant, items = sent.rank(client, urls[v], user, 10 + user % 7)
                rank_after_baseline[variant] += 1
                if user % 3 == 0:
                    sent.feedback(client, urls[v], variant, user, items[0], "click")
                if user % 5 == 0:
                    sent.feedback(client, urls[v], variant, user, items[1], "like")
                if user % 4 == 0:
                    sent.feedback(client, urls[v], variant, user, items[0], "dwell", 2.5 + user)
        for user in range(500, 620):  # through the router: exposures
            variant, items = sent.rank(client, router_url, user, 8)
            rank_after_baseline[variant] += 1
            if user % 2 == 0:
                sent.feedback(client, router_url, variant, user, items[0], "click")

    totals = {v: sum(sent.buckets[v]["impressions"]) for v in VARIANTS}
    clicks = {v: sum(sent.buckets[v]["clicks"]) for v in VARIANTS}
    assert all(sent.exposures[v] > 0 for v in VARIANTS), sent.exposures

    def all_scraped() -> bool:
        imp = _values(prometheus, f"sum by (variant) (ranking_impressions_total{{{sel}}})")
        clk = _values(prometheus, f"sum by (variant) (ranking_clicks_total{{{sel}}})")
        exp_ = _values(prometheus, f"sum by (variant) ({EXPOSURES}{{{sel}}})")
        return (
            imp == {v: float(totals[v]) for v in VARIANTS}
            and clk == {v: float(clicks[v]) for v in VARIANTS}
            and exp_ == {v: float(sent.exposures[v]) for v in VARIANTS}
        )

    wait_for(all_scraped, timeout=30, what="the traffic in Prometheus")

    # increase() extrapolates by up to ~1.1 scrape intervals past the last sample: a
    # series with >= 6 samples (the youngest: the requests) keeps that under +22 %.
    def enough_samples() -> bool:
        got = _values(
            prometheus,
            f'min by (variant) (count_over_time({REQUESTS}{{{sel},endpoint="rank"}}[5m]))',
        )
        return all(got.get(v, 0) >= 6 for v in VARIANTS)

    wait_for(enough_samples, timeout=30, what="six samples of ranking_requests_total")

    began = datetime.now(UTC)
    with ExperimentMetrics(prometheus.url) as reader:
        data = reader.read(exp, list(VARIANTS), "5m", namespace="default")
        # CUPED's pre-period: the same series over a window ending at a given start, read
        # with `@` in the same request. Ending now, it is the window just read; ending
        # before the series existed, there is none (left out, not zeros or missing data).
        now = datetime.now(UTC)
        pre = reader.read(exp, list(VARIANTS), "5m", now, namespace="default",
                          pre_period=(timedelta(minutes=5), now),
                          pre_series=("clicks", "impressions"))  # fmt: skip
        early = reader.read(exp, list(VARIANTS), "5m", now, namespace="default",
                            pre_period=(timedelta(minutes=1), began - timedelta(hours=1)),
                            pre_series=("clicks", "impressions"))  # fmt: skip
    for v in VARIANTS:
        assert pre[v]["pre_buckets"] == {k: pre[v]["buckets"][k] for k in ("clicks", "impressions")}
        assert sum(pre[v]["pre_buckets"]["impressions"]) > 0
        assert "pre_buckets" not in early[v] and early[v]["buckets"] == pre[v]["buckets"]

    assert set(data) == set(VARIANTS)
    for v in VARIANTS:
        d = data[v]
        got = d["buckets"]
        assert set(got) == set(sent.buckets[v])
        assert all(len(values) == N_ANALYSIS_BUCKETS for values in got.values())
        # one extrapolation factor per target, >= 1 and small
        f = sum(got["impressions"]) / totals[v]
        assert 1.0 <= f < 1.5, f
        for series, expected in sent.buckets[v].items():
            assert got[series] == pytest.approx([x * f for x in expected], rel=1e-6, abs=1e-9), (
                v,
                series,
            )
        # clicks land in the bucket of the user who clicked, nowhere else
        clicked = {b for b, x in enumerate(sent.buckets[v]["clicks"]) if x > 0}
        assert {b for b, x in enumerate(got["clicks"]) if x > 0} == clicked

        score = d["histograms"]["score"]
        assert score["edges"] == pytest.approx(SCORE_EDGES)
        assert sum(score["counts"]) == pytest.approx(sent.scored_items[v] * f, rel=1e-6)
        for feature in ("age", "like_rate", "total_interactions"):
            h = d["histograms"][feature]
            assert len(h["edges"]) == len(h["counts"]) + 1
            assert sum(h["counts"]) > 0

        # requests count only /rank (not /feedback) after the baseline request
        assert rank_after_baseline[v] <= d["requests"] < 1.5 * (rank_after_baseline[v] + 1)
        assert d["errors"] == 0.0  # no 5xx: the errors series does not exist
        assert d["latency_p95_ms"] is not None and 0.0 < d["latency_p95_ms"] <= 1000.0
        # the per-user-bucket latency: 64 rows of len(le) + 1 bins, +Inf last
        lat = d["latency_histogram"]
        assert lat["le"] == pytest.approx(BUCKET_LATENCY_BUCKETS)
        assert len(lat["counts"]) == N_ANALYSIS_BUCKETS
        assert all(len(row) == len(lat["le"]) + 1 for row in lat["counts"])
        total = sum(map(sum, lat["counts"]))
        assert total == pytest.approx(d["requests"], rel=0.25)

    # exposures: one factor for the router target
    fr = data["control"]["exposures"] / sent.exposures["control"]
    assert 1.0 <= fr < 1.5, fr
    assert data["treatment"]["exposures"] == pytest.approx(sent.exposures["treatment"] * fr)

    payload = analysis_input(
        control="control",
        weights={"control": 50, "treatment": 50},
        variants=data,
        method="fixed",
        guardrails=[
            {"metric": "latency_p95_ms", "max": 100},
            {"metric": "latency_p95_ms", "maxIncreaseMs": 20},
            {"metric": "error_rate", "max": 0.01},
        ],
        drift={"psi": 0.2, "ks_p_value": 0.05, "action": "rollback"},
        min_samples_per_variant=10,
        experiment=exp,
    )
    json.dumps(payload)  # plain JSON, as `rankexp analyze` reads it
    parse_input(payload)
    record = analyze(payload)
    assert record["decision"] in DECISIONS
    (lat_guard,) = [g for g in record["guardrails"] if g["kind"] == "latency_non_inferiority"]
    assert lat_guard["value"] is not None and lat_guard["ci_low"] <= lat_guard["ci_high"]
    assert record["metrics"]["ctr"]["control"]["estimate"] == pytest.approx(
        clicks["control"] / totals["control"], rel=1e-6
    )

    # same experiment, a variant nobody serves, or another namespace: missing, not zeros
    with ExperimentMetrics(prometheus.url) as reader:
        with pytest.raises(MissingSeries) as info:
            reader.read(exp, ["control", "ghost"], "5m")
        assert info.value.variant == "ghost"
        assert {v for _, v in info.value.missing} == {"ghost"}
        assert (EXPOSURES, "ghost") in info.value.missing
        with pytest.raises(MissingSeries):
            reader.read(exp, list(VARIANTS), "5m", namespace="elsewhere")

    # The same rankers scraped under a second experiment label that has no router:
    # everything is there except the exposures, which are missing (never 0).
    exp2 = _experiment()
    sel2 = f'experiment="{exp2}"'
    prometheus.add_targets(
        "ranker", [u.removeprefix("http://") for u in urls.values()], {"experiment": exp2}
    )

    def two_samples() -> bool:
        got = _values(
            prometheus,
            f'min by (variant) (count_over_time(ranking_clicks_total{{{sel2},bucket="0"}}[1m]))',
        )
        return all(got.get(v, 0) >= 2 for v in VARIANTS)

    wait_for(two_samples, timeout=30, what="second experiment label scraped twice")
    with ExperimentMetrics(prometheus.url) as reader, pytest.raises(MissingSeries) as info:
        reader.read(exp2, list(VARIANTS), "5m")
    assert info.value.missing == [(EXPOSURES, "control"), (EXPOSURES, "treatment")]


def test_unknown_experiment_is_missing_series(prometheus: LocalPrometheus) -> None:
    with ExperimentMetrics(prometheus.url) as reader, pytest.raises(MissingSeries) as info:
        reader.read(_experiment(), list(VARIANTS), "1m")
    assert info.value.metric == "ranking_impressions_total"
    assert info.value.variant == "control"
    assert len(info.value.missing) > 10


def test_nothing_listening_is_prometheus_unavailable() -> None:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    with ExperimentMetrics(url, retries=0, timeout=2) as reader:
        with pytest.raises(PrometheusUnavailable) as info:
            reader.read("exp", list(VARIANTS), "1m")
    assert info.value.url == url


def test_wrong_url_is_unavailable(prometheus: LocalPrometheus) -> None:
    # an HTTP server answers, but not the Prometheus API (404): a misconfigured URL
    with ExperimentMetrics(prometheus.url + "/nope", retries=0) as reader:
        with pytest.raises(PrometheusUnavailable, match="404"):
            reader.read("exp", list(VARIANTS), "1m")


def test_bad_query_is_query_error(prometheus: LocalPrometheus) -> None:
    with ExperimentMetrics(prometheus.url) as reader, pytest.raises(QueryError):
        reader.query("sum by (variant (", datetime.now(UTC))
