"""TEST-ONLY fault injection on /rank (ranker serve --inject-latency-ms/--inject-error-rate)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from ranker.protocol.hashing import analysis_bucket
from ranker.serve.app import RankerSettings, create_app


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 30
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/ready").text
        time.sleep(0.05)


def test_injected_errors_fail_rank_only_and_are_counted(model_dirs: dict[str, Path]) -> None:
    registry = CollectorRegistry()
    settings = RankerSettings(model=str(model_dirs["v1"]), variant="t", inject_error_rate=1.0)
    with TestClient(create_app(settings, registry)) as client:
        _ready(client)
        assert client.post("/rank", json={"user_id": 3}).status_code == 500
        assert client.post("/rank", json={"user_id": 4}).status_code == 500
        fb = {"user_id": 3, "item_id": 1, "event": "click"}
        assert client.post("/feedback", json=fb).status_code == 202
        labels = {"variant": "t", "model_version": "v1", "endpoint": "rank"}
        assert registry.get_sample_value("ranking_errors_total", labels) == 2.0
        ok = registry.get_sample_value("ranking_requests_total", {**labels, "code": "200"})
        assert not ok


def test_injected_latency_shows_in_the_latency_histogram(model_dirs: dict[str, Path]) -> None:
    registry = CollectorRegistry()
    settings = RankerSettings(model=str(model_dirs["v1"]), variant="t", inject_latency_ms=60)
    with TestClient(create_app(settings, registry)) as client:
        _ready(client)
        for user in range(5):
            assert client.post("/rank", json={"user_id": user}).status_code == 200
        labels = {"variant": "t", "model_version": "v1"}
        total = registry.get_sample_value("ranking_latency_seconds_sum", labels)
        count = registry.get_sample_value("ranking_latency_seconds_count", labels)
        assert count == 5 and total is not None and total / count >= 0.060
        # the per-user-bucket histogram (the latency guardrail's replicates) sees it too
        by_bucket = {
            b: registry.get_sample_value(
                "ranking_bucket_latency_seconds_count", {"variant": "t", "bucket": str(b)}
            )
            for b in range(64)
        }
        assert sum(c or 0.0 for c in by_bucket.values()) == 5
        for user in range(5):
            assert (by_bucket[analysis_bucket(user)] or 0) >= 1
        below = registry.get_sample_value(
            "ranking_bucket_latency_seconds_bucket",
            {"variant": "t", "bucket": str(analysis_bucket(0)), "le": "0.05"},
        )
        assert below == 0.0  # every request took over 60 ms


def test_no_injection_by_default(model_dirs: dict[str, Path]) -> None:
    settings = RankerSettings(model=str(model_dirs["v1"]))
    assert settings.inject_latency_ms == 0 and settings.inject_error_rate == 0


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--inject-error-rate", "1.5", "inject_error_rate"),
        ("--inject-latency-ms", "-1", "inject_latency_ms"),
    ],
)
def test_bad_fault_flags_exit_2_naming_the_field(
    model_dirs: dict[str, Path], flag: str, value: str, field: str
) -> None:
    argv = [sys.executable, "-m", "ranker.cli", "serve", "--model", str(model_dirs["v1"])]
    result = subprocess.run([*argv, flag, value], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert field in result.stderr
