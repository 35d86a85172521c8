"""A real Prometheus scrapes a real ranker process."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_prometheus_scrapes_ranker_counters(
    start_ranker, prometheus, model_dirs: dict[str, Path]
) -> None:  # type: ignore[no-untyped-def]
    _, url = start_ranker(model_dirs["v1"], "scrape-check")
    prometheus.set_targets("ranker", [url.removeprefix("http://")], {"experiment": "scrape"})
    prometheus.wait_scraped("ranker", 1)
    for user in range(10):
        req = urllib.request.Request(
            url + "/rank", json.dumps({"user_id": user, "num_items": 10}).encode(),
            {"content-type": "application/json"},
        )  # fmt: skip
        urllib.request.urlopen(req, timeout=5).read()
    q = 'sum(ranking_impressions_total{variant="scrape-check"})'
    deadline = time.monotonic() + 20
    value = 0.0
    while time.monotonic() < deadline:
        res = prometheus.query(q)
        value = float(res[0]["value"][1]) if res else 0.0
        if value == 100:
            break
        time.sleep(0.2)
    assert value == 100
    prometheus.set_targets("ranker", [])
