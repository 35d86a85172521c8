"""Invariants of rankexp.analysis, checked with hypothesis."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankexp.analysis import DECISIONS, analyze, compare, holm, ks_binned, psi, ratio_estimate

# No deadline: the machine is shared, and a timing check is not a property.
SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

estimate = st.floats(0.001, 100.0)
variance = st.floats(1e-10, 1.0)
count = st.integers(0, 10_000)


@st.composite
def buckets(draw: st.DrawFn, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    den = np.array(draw(st.lists(st.integers(1, 5000), min_size=n, max_size=n)), dtype=float)
    share = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    return np.floor(den * share), den


@SETTINGS
@given(
    estimate,
    variance,
    estimate,
    variance,
    st.sampled_from(["fixed", "sequential"]),
    st.sampled_from(["ratio", "mean"]),
)
def test_swapping_the_arms_negates_the_lift(
    rc: float, vc: float, rt: float, vt: float, method: str, kind: str
) -> None:
    ab = compare((rc, vc), (rt, vt), method=method, alpha=0.05, kind=kind)
    ba = compare((rt, vt), (rc, vc), method=method, alpha=0.05, kind=kind)
    assert ba.lift == -ab.lift
    assert ba.p_value == pytest.approx(ab.p_value, rel=1e-9, abs=1e-300)
    assert ba.ci == pytest.approx((-ab.ci[1], -ab.ci[0]), rel=1e-9, abs=1e-12)


@SETTINGS
@given(buckets(), buckets(), st.integers(2, 1000))
def test_scaling_counts_keeps_the_interval_but_more_users_tighten_it(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int
) -> None:
    # Users are the unit: k times the impressions per user is not k times the
    # information, so scaling every count leaves estimate and variance alone...
    r, v = ratio_estimate(*a)
    rk, vk = ratio_estimate(a[0] * k, a[1] * k)
    assert float(rk) == pytest.approx(float(r), rel=1e-9)
    assert float(vk) == pytest.approx(float(v), rel=1e-6, abs=1e-30)
    # ...while k times the users (k times the replicates) shrinks it.
    rr, vr = ratio_estimate(np.tile(a[0], k), np.tile(a[1], k))
    assert float(rr) == pytest.approx(float(r), rel=1e-9)
    assert float(vr) <= float(v) * (1 + 1e-9)
    c = compare((float(r), float(v)), (float(r), float(v)), method="sequential", alpha=0.05)
    ck = compare((float(rr), float(vr)), (float(rr), float(vr)), method="sequential", alpha=0.05)
    assert ck.ci[1] - ck.ci[0] <= (c.ci[1] - c.ci[0]) * (1 + 1e-9)


@SETTINGS
@given(st.lists(count, min_size=2, max_size=40).filter(lambda c: sum(c) > 0))
def test_histogram_against_itself_does_not_drift(counts: list[int]) -> None:
    assert psi(counts, counts) == 0.0
    assert ks_binned(counts, counts) == (0.0, 1.0)
    assert psi(counts, [2 * c for c in counts]) == pytest.approx(0.0, abs=1e-12)


@SETTINGS
@given(
    st.lists(st.tuples(count, count), min_size=2, max_size=40).filter(
        lambda pairs: sum(a for a, _ in pairs) > 0 and sum(b for _, b in pairs) > 0
    )
)
def test_psi_is_symmetric_and_non_negative(pairs: list[tuple[int, int]]) -> None:
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    assert psi(a, b) >= 0
    assert psi(a, b) == pytest.approx(psi(b, a), rel=1e-9, abs=1e-15)
    d, p = ks_binned(a, b)
    assert 0 <= d <= 1 and 0 <= p <= 1


@SETTINGS
@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_holm_never_lowers_a_p_value_and_keeps_the_order(p: list[float]) -> None:
    adj = holm(p)
    assert all(a >= x and a <= 1 for a, x in zip(adj, p, strict=True))
    order = sorted(range(len(p)), key=lambda i: p[i])
    assert all(adj[i] <= adj[j] for i, j in zip(order, order[1:], strict=False))


@st.composite
def experiments(draw: st.DrawFn) -> dict[str, Any]:
    n_buckets = draw(st.integers(2, 8))
    arr = st.lists(count, min_size=n_buckets, max_size=n_buckets)
    names = [
        "control",
        *draw(st.lists(st.sampled_from(["b", "c", "d"]), min_size=1, max_size=3, unique=True)),
    ]
    weights = [100 // len(names)] * len(names)
    weights[0] += 100 - sum(weights)
    variants = {}
    for name in names:
        v: dict[str, Any] = {
            "buckets": {
                s: draw(arr)
                for s in ("clicks", "impressions", "engagements", "dwell_seconds", "dwell_events")
            },
            "exposures": draw(st.none() | count),
            "requests": 1000,
            "errors": draw(st.integers(0, 50)),
            "latency_p95_ms": draw(st.floats(0, 300)),
            "histograms": {
                "score": {
                    "edges": [0, 0.5, 1],
                    "counts": draw(st.lists(count, min_size=2, max_size=2)),
                }
            },
        }
        variants[name] = v
    return {
        "control": "control",
        "method": draw(st.sampled_from(["sequential", "fixed"])),
        "weights": dict(zip(names, weights, strict=True)),
        "guardrails": {"latency_p95_ms": 100, "error_rate": 0.01},
        "min_samples_per_variant": draw(st.integers(0, 100)),
        "elapsed_seconds": draw(st.none() | st.floats(0, 100)),
        "max_duration_seconds": 50,
        "variants": variants,
    }


@SETTINGS
@given(experiments())
def test_any_valid_input_gives_a_json_decision(p: dict[str, Any]) -> None:
    out = analyze(p)
    assert out["decision"] in DECISIONS
    json.dumps(out, allow_nan=False)
    if any(v["exposures"] is None for v in p["variants"].values()):
        assert out["decision"] in ("Hold", "Inconclusive")
    if out["decision"] == "Promote":
        assert out["winner"] in p["variants"] and out["winner"] != "control"


@SETTINGS
@given(st.floats(0.03, 0.07), st.integers(0, 10**6), st.sampled_from(["sequential", "fixed"]))
def test_relabelling_the_control_negates_every_lift(ctr: float, seed: int, method: str) -> None:
    rng = np.random.default_rng(seed)
    arms = {}
    for name, rate in (("a", 0.05), ("b", ctr)):
        imps = rng.poisson(1000, 64)
        arms[name] = {
            "exposures": 10_000,
            "buckets": {"impressions": imps.tolist(), "clicks": rng.binomial(imps, rate).tolist()},
        }
    p = {"control": "a", "method": method, "weights": {"a": 50, "b": 50}, "variants": arms}
    q = copy.deepcopy(p)
    q["control"] = "b"
    ab, ba = analyze(p)["metrics"]["ctr"]["b"], analyze(q)["metrics"]["ctr"]["a"]
    assert ba["lift"] == -ab["lift"]
    assert ba["p_value"] == pytest.approx(ab["p_value"], rel=1e-9)
    assert ba["ci"] == pytest.approx([-ab["ci"][1], -ab["ci"][0]], rel=1e-9)
    assert (ab["p_value"] <= 0.05) == (ba["p_value"] <= 0.05)
