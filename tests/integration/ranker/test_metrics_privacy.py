"""No user id reaches /metrics: users are aggregated into 64 hash buckets, never labelled."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tests.integration.ranker.conftest import DataPath

pytestmark = pytest.mark.integration

# Distinctive ids: known to the models (< 10,000) and unknown (fallback feeds).
USER_IDS = [9871, 7919, 8642, 987654321, 123456789012, 31415926535897]

#: every label either process may put on a series, and what its values may be
LABELS = {
    "variant": {"control", "treatment"},
    "experiment": {"hostile"},
    "model_version": {"v1", "v2"},
    "endpoint": {"rank", "feedback"},
    "code": None,  # an HTTP status
    "bucket": {str(b) for b in range(64)},
    "feature": {"age", "like_rate", "total_interactions"},
    "result": {"ok", "error"},
    "le": None,  # a histogram bound
}


def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status), json.loads(resp.read())


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def test_metrics_carry_no_user_ids(data_path: DataPath) -> None:
    served = set()
    for user in USER_IDS:
        code, feed = _post(data_path.router + "/rank", {"user_id": user, "num_items": 5})
        assert code == 200
        served.add(feed["routed_variant"])
        item = feed["items"][0]["item_id"]  # type: ignore[index]
        for event in ("click", "like", "dwell"):
            fb = {"user_id": user, "item_id": item, "event": event, "dwell_seconds": 3.0}
            assert _post(data_path.router + "/feedback", fb)[0] == 202
    assert served == {"control", "treatment"}  # both rankers saw some of these users

    for url in (data_path.router, data_path.control, data_path.treatment):
        text = _metrics(url)
        for user in USER_IDS:
            # not anywhere in the text: no label, no value, no help string
            assert not re.search(rf"(?<![\d.]){user}(?![\d])", text), (url, user)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for name, value in sample.labels.items():
                    assert name in LABELS, (url, sample)
                    allowed = LABELS[name]
                    if name == "code":
                        assert re.fullmatch(r"[1-5]\d\d", value), (url, sample)
                    elif allowed is not None:
                        assert value in allowed, (url, sample)
