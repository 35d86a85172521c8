"""`ranker route` in front of two real rankers, all over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.integration


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], str | None]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status), json.loads(resp.read()), resp.headers.get("x-rankexp-variant")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read()), None


def _exposures(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("router_exposures_total{"):
            variant = line.split('variant="')[1].split('"')[0]
            out[variant] = float(line.rsplit(" ", 1)[1])
    return out


def _config(control_url: str, treatment_url: str, c: int = 50, t: int = 50) -> dict[str, Any]:
    return {
        "experiment": "router-test", "salt": "fixed-salt", "control": "control",
        "variants": [
            {"name": "control", "weight": c, "endpoints": [control_url]},
            {"name": "treatment", "weight": t, "endpoints": [treatment_url]},
        ],
    }  # fmt: skip


@pytest.fixture
def two_rankers(start_ranker, model_dirs: dict[str, Path]) -> tuple[Any, str, Any, str]:  # type: ignore[no-untyped-def]
    cp, cu = start_ranker(model_dirs["v1"], "control")
    tp, tu = start_ranker(model_dirs["v2"], "treatment")
    return cp, cu, tp, tu


def test_sticky_assignment_survives_restarts_and_counts_exposures(
    two_rankers, start_router
) -> None:  # type: ignore[no-untyped-def]
    _, cu, _, tu = two_rankers
    proc, url, _ = start_router(_config(cu, tu))
    users = list(range(40))
    first = {}
    for u in users:
        code, body, header = _post(url + "/rank", {"user_id": u, "num_items": 5})
        assert code == 200
        assert header == body["routed_variant"] == body["variant"]
        first[u] = header
    assert set(first.values()) == {"control", "treatment"}
    again = {u: _post(url + "/rank", {"user_id": u, "num_items": 5})[2] for u in users}
    assert again == first
    counts = _exposures(url)
    assert counts["control"] == 2 * sum(v == "control" for v in first.values())
    assert counts["treatment"] == 2 * sum(v == "treatment" for v in first.values())
    port = int(url.rsplit(":", 1)[1])
    proc.stop()
    _, url2, _ = start_router(_config(cu, tu), port=port)
    assert {u: _post(url2 + "/rank", {"user_id": u, "num_items": 5})[2] for u in users} == first
    # feedback goes to the user's variant too
    code, body, header = _post(url2 + "/feedback", {"user_id": 0, "item_id": 3, "event": "click"})
    assert code == 202 and header == first[0]
    assert _post(url2 + "/rank", {"user_id": "x"})[0] == 422
    assert _post(url2 + "/rank", {"user_id": 1, "num_items": 0})[0] == 422  # the ranker's own


def test_config_change_is_picked_up_without_dropping_requests(two_rankers, start_router) -> None:  # type: ignore[no-untyped-def]
    _, cu, _, tu = two_rankers
    _, url, cfg = start_router(_config(cu, tu, 90, 10))

    async def drive(stop_after: float) -> list[int]:
        codes: list[int] = []
        async with aiohttp.ClientSession() as s:
            end = time.monotonic() + stop_after
            u = 0
            while time.monotonic() < end:
                batch = [s.post(url + "/rank", json={"user_id": u + i, "num_items": 5})
                         for i in range(8)]  # fmt: skip
                for r in await asyncio.gather(*batch):
                    codes.append(r.status)
                    r.release()
                u += 8
        return codes

    async def run() -> list[int]:
        load = asyncio.create_task(drive(3.0))
        await asyncio.sleep(1.0)
        tmp = cfg.with_suffix(".new")
        tmp.write_text(json.dumps(_config(cu, tu, 10, 90)))
        tmp.replace(cfg)  # how a ConfigMap volume swaps its content
        return await load

    codes = asyncio.run(run())
    assert len(codes) > 50 and set(codes) == {200}
    share = [_post(url + "/rank", {"user_id": u, "num_items": 1})[2] for u in range(1000, 1200)]
    assert share.count("treatment") > 150  # now 90 % treatment


def test_a_variant_that_does_not_answer_falls_back_to_control(two_rankers, start_router) -> None:  # type: ignore[no-untyped-def]
    _, cu, tp, tu = two_rankers
    _, url, _ = start_router(_config(cu, tu))
    tp.stop()
    served = [_post(url + "/rank", {"user_id": u, "num_items": 3}) for u in range(30)]
    assert all(code == 200 and header == "control" for code, _, header in served)
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    fallbacks = [ln for ln in text.splitlines() if ln.startswith("router_fallbacks_total{")]
    assert fallbacks and float(fallbacks[0].rsplit(" ", 1)[1]) > 0


def test_an_invalid_config_change_keeps_the_last_good_one(two_rankers, start_router) -> None:  # type: ignore[no-untyped-def]
    _, cu, _, tu = two_rankers
    _, url, cfg = start_router(_config(cu, tu))
    before = [_post(url + "/rank", {"user_id": u, "num_items": 1})[2] for u in range(50)]
    bad = _config(cu, tu, 70, 70)
    cfg.write_text(json.dumps(bad))
    time.sleep(0.6)  # three poll intervals
    after = [_post(url + "/rank", {"user_id": u, "num_items": 1})[2] for u in range(50)]
    assert after == before
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        assert 'router_config_reloads_total{result="error"} 1.0' in resp.read().decode()
