"""Faults under a running router (`ranker route` in front of real rankers): its routing
file corrupted, truncated or deleted, as a broken ConfigMap projection or an operator
error would leave it. The last good config keeps serving and every rejection is
counted; a good file is picked up again."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _variant(url: str, user: int) -> str | None:
    body = json.dumps({"user_id": user, "num_items": 1}).encode()
    request = urllib.request.Request(url + "/rank", body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
        return resp.headers.get("x-rankexp-variant")


def _reload_errors(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith('router_config_reloads_total{result="error"}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _config(control: str, treatment: str, c: int, t: int) -> dict[str, Any]:
    return {
        "experiment": "faults", "salt": "fixed-salt", "control": "control",
        "variants": [
            {"name": "control", "weight": c, "endpoints": [control]},
            {"name": "treatment", "weight": t, "endpoints": [treatment]},
        ],
    }  # fmt: skip


def test_corrupt_truncated_or_deleted_routing_keeps_the_last_good_config(
    start_ranker: Any, start_router: Any, model_dirs: dict[str, Path]
) -> None:
    _, control = start_ranker(model_dirs["v1"], "control")
    _, treatment = start_ranker(model_dirs["v2"], "treatment")
    proc, url, cfg = start_router(_config(control, treatment, 30, 70))
    users = range(200)
    before = [_variant(url, u) for u in users]
    assert 40 < before.count("control") < 90  # 30 % of 200, give or take the hash

    truncated = json.dumps(_config(control, treatment, 0, 100))[:40]
    faults = {
        "garbage bytes": lambda: cfg.write_bytes(b"\x00\xff{not json"),
        "truncated JSON": lambda: cfg.write_text(truncated),
        "weights not summing to 100": lambda: cfg.write_text(
            json.dumps(_config(control, treatment, 90, 90))
        ),
        "file deleted": cfg.unlink,
    }  # fmt: skip
    for count, (what, fault) in enumerate(faults.items(), start=1):
        fault()
        deadline = time.monotonic() + 10
        while _reload_errors(url) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _reload_errors(url) == count, f"{what}: the rejection is counted once"
        assert [_variant(url, u) for u in users] == before, f"{what}: last good config kept"
        proc.ensure_running()
    time.sleep(1)  # more polls of the missing file: still one error, still serving
    assert _reload_errors(url) == len(faults)

    cfg.write_text(json.dumps(_config(control, treatment, 100, 0)))
    deadline = time.monotonic() + 10
    while _variant(url, 1) != "control" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {_variant(url, u) for u in users} == {"control"}, "a good file is picked up again"
