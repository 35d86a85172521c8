"""`ranker serve` as a real process on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ranker.protocol.hashing import analysis_bucket

pytestmark = pytest.mark.integration


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_ranks_and_feedback_reach_the_metrics(start_ranker, model_dirs: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    _, url = start_ranker(model_dirs["v1"], "control")
    users = [1, 2, 3, 1, 77]
    for u in users:
        code, body = _post(url + "/rank", {"user_id": u, "num_items": 20})
        assert code == 200 and len(body["items"]) == 20 and body["variant"] == "control"
    assert _post(url + "/rank", {"user_id": 1, "num_items": 0})[0] == 422
    assert _post(url + "/feedback", {"user_id": 2, "item_id": 9, "event": "click"})[0] == 202
    assert _post(url + "/feedback", {"user_id": 2, "item_id": 9, "event": "like"})[0] == 202
    fb = {"user_id": 3, "item_id": 4, "event": "dwell", "dwell_seconds": 7.5}
    assert _post(url + "/feedback", fb)[0] == 202

    s = _samples(url)
    v = "control"
    imps = {b: _value(s, "ranking_impressions_total", variant=v, bucket=str(b)) for b in range(64)}
    assert sum(imps.values()) == 20 * len(users)
    assert imps[analysis_bucket(1)] >= 40
    b2, b3 = str(analysis_bucket(2)), str(analysis_bucket(3))
    assert _value(s, "ranking_clicks_total", variant=v, bucket=b2) == 1
    assert _value(s, "ranking_engagements_total", variant=v, bucket=b2) == 1
    assert _value(s, "ranking_dwell_seconds_total", variant=v, bucket=b3) == 7.5
    assert _value(s, "ranking_dwell_events_total", variant=v, bucket=b3) == 1
    mv = "v1"
    req = "ranking_requests_total"
    assert _value(s, req, variant=v, model_version=mv, endpoint="rank", code="200") == 5
    assert _value(s, req, variant=v, model_version=mv, endpoint="rank", code="422") == 1
    assert _value(s, req, variant=v, model_version=mv, endpoint="feedback", code="202") == 3
    assert _value(s, "ranking_latency_seconds_count", variant=v, model_version=mv) == 6
    # by user bucket: only the five ranks the handler served (not the 422)
    lat = "ranking_bucket_latency_seconds_count"
    per = {b: _value(s, lat, variant=v, bucket=str(b)) for b in range(64)}
    assert sum(per.values()) == 5 and per[analysis_bucket(1)] >= 2
    # every bucket's series exists from the start (increase() needs a first sample)
    assert all((lat, frozenset({"variant": v, "bucket": str(b)}.items())) in s for b in range(64))
    assert _value(s, "ranking_score_count", variant=v) == 100
    assert _value(s, "ranking_item_age_hours_count", variant=v) == 100
    assert _value(s, "ranking_unique_categories_count", variant=v) == 5
    assert _value(s, "ranking_category_entropy_count", variant=v) == 5
    assert _value(s, "ranking_feature_value_count", variant=v, feature="like_rate") == 5
    assert _value(s, "ranking_cache_requests_total", variant=v) == 5
    assert _value(s, "ranking_cache_hits_total", variant=v) == 1  # user 1, second time
    assert 0 < _value(s, "ranking_catalog_coverage", variant=v) <= 100 / 10_000
    assert 0.5 < _value(s, "model_auc", variant=v, model_version=mv) < 1
    assert 0 < _value(s, "model_ndcg", variant=v, model_version=mv) < 1


def test_a_missing_model_keeps_the_process_alive_and_not_ready(
    start_ranker, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    proc, url = start_ranker(tmp_path / "missing", "treatment", wait_ready=False)
    import time

    deadline = time.monotonic() + 20
    while "model not loaded" not in proc.log_tail() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "does not exist" in proc.log_tail()
    try:
        urllib.request.urlopen(url + "/ready", timeout=2)
        raise AssertionError("/ready should fail")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
    assert _post(url + "/rank", {"user_id": 1})[0] == 503
    proc.ensure_running()
