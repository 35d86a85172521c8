"""Interleaving through real processes: `ranker route` in interleaving mode in front of two
real rankers (v1 control, v2 treatment), all over loopback HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ranker.protocol.hashing import analysis_bucket
from ranker.route import attribution
from ranker.route.interleave import CONTROL, TREATMENT
from ranker.world.simulate import Simulator
from rankexp.local.process import wait_for

pytestmark = pytest.mark.integration

EXPERIMENT, SALT = "il-test", "il-salt"
KEY = attribution.token_key(EXPERIMENT, SALT)


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read()), {}


def _series(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of ``name`` by its label set."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            pairs = tuple(
                (kv.split("=", 1)[0], kv.split("=", 1)[1].strip('"')) for kv in labels.split('",')
            )
            out[tuple((k, v.strip('"')) for k, v in pairs)] = float(value)
    return out


def _sum(url: str, name: str, **match: str) -> float:
    return sum(
        v for labels, v in _series(url, name).items()
        if all(dict(labels).get(k) == want for k, want in match.items())
    )  # fmt: skip


def _config(cu: str, tu: str, c: int = 0, t: int = 100) -> dict[str, Any]:
    return {
        "experiment": EXPERIMENT, "salt": SALT, "control": "control", "mode": "interleaving",
        "variants": [
            {"name": "control", "weight": c, "endpoints": [cu]},
            {"name": "treatment", "weight": t, "endpoints": [tu]},
        ],
    }  # fmt: skip


@pytest.fixture
def rankers(start_ranker, model_dirs: dict[str, Path]) -> tuple[Any, str, Any, str]:  # type: ignore[no-untyped-def]
    cp, cu = start_ranker(model_dirs["v1"], "control")
    tp, tu = start_ranker(model_dirs["v2"], "treatment")
    return cp, cu, tp, tu


def test_merged_feed_keeps_each_rankers_order_and_clicks_go_to_their_team(
    rankers, start_router
) -> None:  # type: ignore[no-untyped-def]
    _, cu, _, tu = rankers
    _, url, _ = start_router(_config(cu, tu), None, "--attribution-window", "2")
    user, k = 7, 20
    status, feed, headers = _post(url + "/rank", {"user_id": user, "num_items": k})
    assert status == 200, feed
    assert feed["interleaved"] is True and feed["routed_variant"] == "treatment"
    assert headers.get("x-rankexp-interleaved") == "1"
    ids = [it["item_id"] for it in feed["items"]]
    assert len(ids) == k == len(set(ids))
    # the token names each item's team; each team's items keep their ranker's order
    decoded = attribution.decode(KEY, feed["interleaving_token"], user)
    assert list(decoded.items) == ids
    assert abs(decoded.teams.count(CONTROL) - decoded.teams.count(TREATMENT)) <= 1
    assert decoded.bucket == analysis_bucket(user)
    direct = {
        team: [it["item_id"] for it in _post(u + "/rank", {"user_id": user, "num_items": k})[1][
            "items"]]
        for team, u in ((CONTROL, cu), (TREATMENT, tu))
    }  # fmt: skip
    for team in (CONTROL, TREATMENT):
        mine = [i for i, t in zip(ids, decoded.teams, strict=True) if t == team]
        assert mine == [i for i in direct[team] if i in mine], f"team {team} out of order"

    token = feed["interleaving_token"]
    by_team = {t: i for i, t in zip(ids, decoded.teams, strict=True)}
    clicks_before = {
        v: _sum(u, "ranking_clicks_total") for v, u in (("control", cu), ("treatment", tu))
    }
    for team, name in ((TREATMENT, "treatment"), (CONTROL, "control")):
        status, body, _ = _post(url + "/feedback", {
            "user_id": user, "item_id": by_team[team], "event": "click",
            "interleaving_token": token})  # fmt: skip
        assert status == 202, body
        assert body["routed_variant"] == name  # forwarded to the team's ranker
    # a repeated click on the same item of the same feed counts once
    status, _, _ = _post(url + "/feedback", {
        "user_id": user, "item_id": by_team[TREATMENT], "event": "click",
        "interleaving_token": token})  # fmt: skip
    assert status == 202
    assert _sum(url, "router_interleaving_clicks_total", team="treatment", result="counted") == 1
    assert _sum(url, "router_interleaving_clicks_total", team="treatment", result="duplicate") == 1
    assert _sum(url, "router_interleaving_clicks_total", team="control", result="counted") == 1
    # the rankers counted the clicks forwarded to them (two for treatment, one for control)
    assert _sum(tu, "ranking_clicks_total") - clicks_before["treatment"] == 2
    assert _sum(cu, "ranking_clicks_total") - clicks_before["control"] == 1

    # one click each: a tie, counted once after the window, in the user's bucket
    wait_for(lambda: _sum(url, "router_interleaving_outcomes_total") >= 1, timeout=10,
             what="the feed's outcome")  # fmt: skip
    outcomes = {
        (dict(lb)["winner"], dict(lb)["bucket"]): v
        for lb, v in _series(url, "router_interleaving_outcomes_total").items() if v
    }  # fmt: skip
    assert outcomes == {("tie", str(analysis_bucket(user))): 1.0}
    assert _sum(url, "router_interleaving_clicking_users_total") == 1
    # after the window a click still reaches the ranker but no longer changes the outcome
    status, _, _ = _post(url + "/feedback", {
        "user_id": user, "item_id": by_team[CONTROL], "event": "click",
        "interleaving_token": token})  # fmt: skip
    assert status == 202
    assert _sum(url, "router_interleaving_clicks_total", result="late") == 1


def test_bad_tokens_are_refused_with_the_field_and_the_router_keeps_serving(
    rankers, start_router
) -> None:  # type: ignore[no-untyped-def]
    _, cu, _, tu = rankers
    _, url, _ = start_router(_config(cu, tu))
    _, feed, _ = _post(url + "/rank", {"user_id": 11, "num_items": 10})
    token = feed["interleaving_token"]
    item = feed["items"][0]["item_id"]
    forged = token[:-8] + ("AAAA" if token[-8:-4] != "AAAA" else "BBBB") + token[-4:]
    other_exp = attribution.encode(attribution.token_key("other", SALT), 11, 0, [item], [0])
    tok = "interleaving_token"
    cases = [
        ({"user_id": 11, "item_id": item, tok: "not a token"}, tok),
        ({"user_id": 11, "item_id": item, tok: forged}, tok),
        ({"user_id": 11, "item_id": item, tok: other_exp}, tok),
        ({"user_id": 12, "item_id": item, tok: token}, tok),  # another user's feed
        ({"user_id": 11, "item_id": 10**6 + 1, tok: token}, "item_id"),
    ]  # fmt: skip
    for body, field in cases:
        status, answer, _ = _post(url + "/feedback", {**body, "event": "click"})
        assert status == 422, (body, answer)
        assert answer["detail"][0]["loc"] == ["body", field], answer
        assert answer["message"].startswith(field), answer
    assert _sum(url, "router_interleaving_token_errors_total") == len(cases)
    assert _sum(url, "router_interleaving_clicks_total") == 0
    status, _, _ = _post(url + "/rank", {"user_id": 11, "num_items": 10})
    assert status == 200


def test_a_treatment_that_is_down_or_slow_is_skipped_and_counted(
    start_ranker, start_router, model_dirs: dict[str, Path]
) -> None:  # type: ignore[no-untyped-def]
    _, cu = start_ranker(model_dirs["v1"], "control")
    slow_proc, slow = start_ranker(model_dirs["v2"], "treatment", "--inject-latency-ms", "400")
    _, url, cfg = start_router(_config(cu, slow), None, "--interleaving-grace", "0.05")
    status, feed, headers = _post(url + "/rank", {"user_id": 3, "num_items": 10})
    assert status == 200 and not feed.get("interleaved") and "interleaving_token" not in feed
    assert feed["routed_variant"] == "control" and headers["x-rankexp-variant"] == "control"
    assert _sum(url, "router_interleaving_fallbacks_total", variant="treatment", reason="slow") == 1
    slow_proc.stop()  # now down: refused connections
    status, feed, _ = _post(url + "/rank", {"user_id": 3, "num_items": 10})
    assert status == 200 and feed["routed_variant"] == "control"
    assert (
        _sum(url, "router_interleaving_fallbacks_total", variant="treatment", reason="error") == 1
    )
    assert _sum(url, "router_interleaved_feeds_total") == 0


def test_simulated_users_prefer_v2_in_interleaved_feeds(rankers, start_router) -> None:  # type: ignore[no-untyped-def]
    """Ground-truth users click what they like; v2 ranks it higher, so its team wins."""
    _, cu, _, tu = rankers
    _, url, _ = start_router(_config(cu, tu), None, "--attribution-window", "1")
    sim = Simulator(url, num_items=20, concurrency=8, seed=5, users=2000)
    stats = asyncio.run(sim.run(requests=1500, out=io.StringIO()))
    assert stats.failed == 0 and stats.feedback_failed == 0
    clicks = _series(url, "router_interleaving_clicks_total")
    assert sum(clicks.values()) == stats.clicks, (clicks, stats.clicks)
    time.sleep(1.5)  # let the last feeds' windows end
    wins = {w: _sum(url, "router_interleaving_outcomes_total", winner=w)
            for w in ("control", "treatment", "tie")}  # fmt: skip
    assert sum(wins.values()) > 500, wins
    assert wins["treatment"] > 1.2 * wins["control"], wins
    assert _sum(url, "router_interleaved_feeds_total") == 1500
