"""The whole data path with real processes: rankers, router, Prometheus, simulator,
then rankexp.prom.metrics reads the window and rankexp.analysis decides."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from ranker.world.ground_truth import make_world
from ranker.world.simulate import Simulator
from rankexp.analysis import analyze
from rankexp.local.prom import LocalPrometheus
from rankexp.local.stack import LocalStack, VariantSpec
from rankexp.prom.metrics import ExperimentMetrics, analysis_input

pytestmark = pytest.mark.integration

WORLD = make_world()


def _run(
    prometheus: LocalPrometheus,
    name: str,
    variants: list[VariantSpec],
    *,
    router_weights: dict[str, int] | None = None,
    requests: int = 1200,
) -> dict[str, Any]:
    """Run a bounded simulation through a fresh stack; return the decision record."""
    with LocalStack(variants, experiment=name, salt=name, prometheus=prometheus) as stack:
        if router_weights:
            stack.set_weights(router_weights)
            time.sleep(0.6)  # the router polls its config every 0.2 s
        prometheus.wait_scraped("ranker", len(variants))
        # one worker: the draws then follow the request order, so the run is reproducible
        sim = Simulator(stack.router_url, WORLD, num_items=20, concurrency=1, seed=11)
        stats = asyncio.run(sim.run(requests=requests))
        assert stats.failed == 0 and stats.requests == requests
        # wait until Prometheus has scraped the final counters of every process
        q = f'sum(ranking_impressions_total{{experiment="{name}"}})'
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = prometheus.query(q)
            if got and float(got[0]["value"][1]) == stats.impressions:
                break
            time.sleep(0.25)
        else:
            raise AssertionError(f"Prometheus never saw {stats.impressions} impressions")
        eq = f'sum(router_exposures_total{{experiment="{name}"}})'
        while not (r := prometheus.query(eq)) or float(r[0]["value"][1]) != requests:
            assert time.monotonic() < deadline + 10, "router exposures not scraped"
            time.sleep(0.25)
        time.sleep(1.5)  # one more scrape, so the window's last sample equals the total
        with ExperimentMetrics(prometheus.url) as em:
            data = em.read(name, [v.name for v in variants], "10m")
    weights = {v.name: v.weight for v in variants}
    payload = analysis_input(
        control=variants[0].name,
        weights=weights,
        variants=data,
        method="sequential",
        min_samples_per_variant=100,
        guardrails={"latency_p95_ms": 100, "error_rate": 0.01},
    )
    record: dict[str, Any] = analyze(payload)
    record["_sim"] = stats
    return record


def test_v2_beats_v1_significantly(
    prometheus: LocalPrometheus, model_dirs: dict[str, Path]
) -> None:
    rec = _run(
        prometheus,
        "dp-v1-v2",
        [VariantSpec("control", str(model_dirs["v1"]), 50),
         VariantSpec("treatment", str(model_dirs["v2"]), 50)],
    )  # fmt: skip
    ctr = rec["metrics"]["ctr"]["treatment"]
    assert ctr["lift"] > 0 and ctr["relative_lift"] > 0.2
    assert ctr["p_value"] < 0.05 and ctr["ci"][0] > 0
    assert rec["srm"]["p_value"] > 0.001
    sim = rec["_sim"]
    # Prometheus-derived CTRs agree with what the simulator counted itself
    for v in ("control", "treatment"):
        own = sim.clicks_by_variant[v] / sim.impressions_by_variant[v]
        assert rec["metrics"]["ctr"][v]["estimate"] == pytest.approx(own, rel=0.02)


def test_aa_is_not_significant_and_has_no_srm(
    prometheus: LocalPrometheus, model_dirs: dict[str, Path]
) -> None:
    rec = _run(
        prometheus,
        "dp-aa",
        [VariantSpec("control", str(model_dirs["v1"]), 50),
         VariantSpec("treatment", str(model_dirs["v1"]), 50)],
    )  # fmt: skip
    ctr = rec["metrics"]["ctr"]["treatment"]
    assert ctr["p_value"] > 0.05 and ctr["ci"][0] < 0 < ctr["ci"][1]
    assert rec["srm"]["p_value"] > 0.001
    assert rec["decision"] in ("Continue", "Hold") and rec["winner"] is None
    assert rec["reason_code"] != "SampleRatioMismatch"


def test_router_at_10_90_against_expected_50_50_is_srm(
    prometheus: LocalPrometheus, model_dirs: dict[str, Path]
) -> None:
    rec = _run(
        prometheus,
        "dp-srm",
        [VariantSpec("control", str(model_dirs["v1"]), 50),
         VariantSpec("treatment", str(model_dirs["v1"]), 50)],
        router_weights={"control": 10, "treatment": 90},
        requests=600,
    )  # fmt: skip
    assert rec["srm"]["p_value"] < 0.001
    assert rec["decision"] == "Hold" and rec["reason_code"] == "SampleRatioMismatch"
