"""Guardrails: non-inferiority against control, absolute limits, and durations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from rankexp.analysis import (
    InputError,
    analyze,
    cs_half_width,
    inferiority_test,
    parse_duration,
    parse_input,
)
from rankexp.cli.commands import main
from rankexp.prom.metrics import analysis_input

SETTINGS = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
METHODS = ["fixed", "sequential"]


def arm(
    *,
    seed: int,
    imps: float = 2000,
    ctr: float = 0.05,
    engagement: float = 0.02,
    dwell: float = 14.0,
) -> dict[str, Any]:
    """One arm: 64 buckets of about ``imps`` impressions each."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(imps, 64)
    clicks = rng.binomial(n, ctr)
    events = np.maximum(clicks, 1)
    return {
        "exposures": 50_000,
        "latency_p95_ms": 20.0,
        "buckets": {
            "impressions": n.tolist(),
            "clicks": clicks.tolist(),
            "engagements": rng.binomial(n, engagement).tolist(),
            "dwell_events": events.tolist(),
            "dwell_seconds": (events * rng.gamma(50.0, dwell / 50.0, 64)).tolist(),
        },
    }


def payload(
    control: dict[str, Any],
    treatment: dict[str, Any],
    margins: dict[str, float],
    method: str = "sequential",
) -> dict[str, Any]:
    return {
        "method": method,
        "primary_metric": "ctr",
        "secondary_metrics": [],
        "weights": {"control": 50, "treatment": 50},
        "guardrails": [
            {"metric": "latency_p95_ms", "max": 100},
            *({"metric": k, "nonInferiorityMargin": v} for k, v in margins.items()),
        ],
        "variants": {"control": control, "treatment": treatment},
    }


def non_inferiority(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [g for g in record["guardrails"] if g["kind"] == "non_inferiority"]


@pytest.mark.parametrize("method", METHODS)
def test_clearly_worse_treatment_is_rolled_back(method: str) -> None:
    # engagement 15 % below control, margin 2 %: inferior with confidence.
    out = analyze(
        payload(
            arm(seed=0),
            arm(seed=1, engagement=0.017),
            {"engagement_rate": 0.02},
            method,
        )
    )
    assert (out["decision"], out["reason_code"], out["winner"]) == (
        "Rollback",
        "GuardrailBreached",
        None,
    )
    assert "engagement_rate" in out["reason"] and "-2.00%" in out["reason"]
    (g,) = non_inferiority(out)
    assert g["ok"] is False and g["limit"] == -0.02 and g["variant"] == "treatment"
    assert g["value"] < -0.1
    assert set(g) == {"metric", "variant", "value", "limit", "ok", "kind"}


@pytest.mark.parametrize("method", METHODS)
def test_breach_outranks_a_primary_win(method: str) -> None:
    out = analyze(
        payload(
            arm(seed=0, ctr=0.05),
            arm(seed=1, ctr=0.06, engagement=0.015),
            {"engagement_rate": 0.05},
            method,
        )
    )
    assert (out["decision"], out["reason_code"]) == ("Rollback", "GuardrailBreached")
    assert out["metrics"]["ctr"]["treatment"]["significant"] is True


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("relative", [0.0, -0.01])
def test_equal_or_within_margin_with_lots_of_data_is_ok(method: str, relative: float) -> None:
    # About 1.3 million impressions per arm; the treatment is equal, or 1 %
    # worse, against a 2 % margin on every metric.
    rate = 0.02 * (1 + relative)
    out = analyze(
        payload(
            arm(seed=0, imps=20_000),
            arm(seed=1, imps=20_000, engagement=rate, dwell=14.0 * (1 + relative)),
            {"engagement_rate": 0.02, "dwell_time": 0.02, "ctr": 0.02},
            method,
        )
    )
    checks = non_inferiority(out)
    assert [g["metric"] for g in checks] == ["engagement_rate", "dwell_time", "ctr"]
    assert all(g["ok"] is True for g in checks)
    assert out["reason_code"] != "GuardrailBreached"
    assert abs(checks[0]["value"] - relative) < 0.03


@pytest.mark.parametrize("method", METHODS)
def test_tiny_data_never_breaches(method: str) -> None:
    # About 640 impressions per arm (15 and 11 engagements): the point
    # estimate is 20 % worse, far beyond the margin, but not with confidence.
    out = analyze(
        payload(
            arm(seed=4, imps=10),
            arm(seed=104, imps=10, engagement=0.014),
            {"engagement_rate": 0.02},
            method,
        )
    )
    (g,) = non_inferiority(out)
    assert g["value"] < -0.15
    assert g["ok"] is True
    assert out["decision"] != "Rollback"


@pytest.mark.parametrize("method", METHODS)
def test_too_few_exposures_hold_even_when_inferior(method: str) -> None:
    control, treatment = arm(seed=0), arm(seed=1, engagement=0.015)
    control["exposures"] = treatment["exposures"] = 400
    out = analyze(payload(control, treatment, {"engagement_rate": 0.02}, method))
    assert (out["decision"], out["reason_code"]) == ("Hold", "TooFewSamples")
    assert non_inferiority(out)[0]["ok"] is False  # reported, but it does not act


def test_missing_data_holds_and_never_breaches() -> None:
    control, treatment = arm(seed=0), arm(seed=1, engagement=0.01)
    for v in (control, treatment):
        del v["buckets"]["engagements"]
    out = analyze(payload(control, treatment, {"engagement_rate": 0.02}))
    assert (out["decision"], out["reason_code"]) == ("Hold", "MissingData")
    (g,) = non_inferiority(out)
    assert g["ok"] is None and g["value"] is None


def test_zero_control_holds() -> None:
    control, treatment = arm(seed=0), arm(seed=1)
    control["buckets"]["engagements"] = [0] * 64
    out = analyze(payload(control, treatment, {"engagement_rate": 0.02}))
    assert (out["decision"], out["reason_code"]) == ("Hold", "MissingData")
    assert non_inferiority(out)[0]["ok"] is None


def test_absolute_entries_say_so_and_the_dict_form_stays_absolute() -> None:
    p = payload(arm(seed=0), arm(seed=1), {})
    p["guardrails"] = {"latency_p95_ms": 10}
    out = analyze(p)
    assert out["guardrails"] == [
        {
            "metric": "latency_p95_ms",
            "variant": "treatment",
            "value": 20.0,
            "limit": 10.0,
            "ok": False,
            "kind": "absolute",
        }
    ]
    assert (out["decision"], out["reason_code"]) == ("Rollback", "GuardrailBreached")


def test_holm_across_the_non_inferiority_checks() -> None:
    # engagement about 7 % worse: one-sided p about 0.03 against a 2 % margin.
    # Alone it breaches; with a second check in the family, Holm doubles it.
    control, treatment = arm(seed=0), arm(seed=1, engagement=0.02 * 0.905)
    alone = analyze(payload(control, treatment, {"engagement_rate": 0.02}, "fixed"))
    assert alone["reason_code"] == "GuardrailBreached"
    two = analyze(
        payload(control, treatment, {"engagement_rate": 0.02, "dwell_time": 0.5}, "fixed")
    )
    assert [g["ok"] for g in non_inferiority(two)] == [True, True]
    assert two["reason_code"] != "GuardrailBreached"


def test_fixed_is_a_one_sided_z_test() -> None:
    ctl, trt = (0.1, 1e-6), (0.097, 1e-6)  # relative -3 %, se about 1.35 %
    res = inferiority_test(ctl, trt, 0.0, method="fixed")
    assert res is not None
    rel, p = res
    assert rel == pytest.approx(-0.03)
    se = np.sqrt(1e-6 / 0.1**2 + 0.097**2 * 1e-6 / 0.1**4)
    assert p == pytest.approx(stats.norm.cdf(-0.03 / se))


def test_sequential_matches_the_confidence_sequence() -> None:
    # Breached (p <= alpha) exactly when the CS's upper end is below -margin.
    ctl, trt, margin, alpha = (0.1, 2e-6), (0.095, 2e-6), 0.02, 0.05
    res = inferiority_test(ctl, trt, margin, method="sequential", mde=0.05)
    assert res is not None
    rel, p = res
    var = 2e-6 / 0.1**2 + 0.095**2 * 2e-6 / 0.1**4
    upper = rel + float(cs_half_width(var, 0.05**2, alpha))
    assert (p <= alpha) == (upper < -margin)
    # The always-valid test is more cautious than the one-look z-test.
    fixed = inferiority_test(ctl, trt, margin, method="fixed")
    assert fixed is not None and fixed[1] <= p


def test_zero_control_estimate_has_no_relative_lift() -> None:
    assert inferiority_test((0.0, 0.0), (0.1, 1e-4), 0.02, method="fixed") is None


@SETTINGS
@given(
    st.integers(0, 2**32 - 1),
    st.floats(0.6, 1.2),
    st.floats(0.0, 0.5),
    st.floats(0.0, 0.5),
    st.sampled_from(METHODS),
    st.sampled_from([10, 200, 2000]),
)
def test_widening_the_margin_never_breaches(
    seed: int, factor: float, margin: float, wider: float, method: str, imps: int
) -> None:
    control = arm(seed=seed, imps=imps)
    treatment = arm(seed=seed + 1, imps=imps, engagement=0.02 * factor, dwell=14.0 * factor)
    narrow = {"engagement_rate": margin, "dwell_time": margin / 2}
    wide = {k: min(v + wider, 0.99) for k, v in narrow.items()}
    before = analyze(payload(control, treatment, narrow, method))
    after = analyze(payload(control, treatment, wide, method))
    for b, a in zip(non_inferiority(before), non_inferiority(after), strict=True):
        assert b["value"] == a["value"]
        if b["ok"]:
            assert a["ok"]
    if before["reason_code"] != "GuardrailBreached":
        assert after["reason_code"] != "GuardrailBreached"


@SETTINGS
@given(
    st.floats(0.001, 100.0),
    st.floats(1e-10, 1.0),
    st.floats(0.001, 100.0),
    st.floats(1e-10, 1.0),
    st.floats(0.0, 0.9),
    st.floats(0.0, 0.9),
    st.sampled_from(METHODS),
    st.sampled_from(["ratio", "mean"]),
)
def test_inferiority_p_grows_with_the_margin(
    rc: float, vc: float, rt: float, vt: float, m1: float, m2: float, method: str, kind: str
) -> None:
    lo, hi = sorted((m1, m2))
    a = inferiority_test((rc, vc), (rt, vt), lo, method=method, kind=kind)
    b = inferiority_test((rc, vc), (rt, vt), hi, method=method, kind=kind)
    assert a is not None and b is not None
    assert 0.0 <= a[1] <= b[1] + 1e-12 <= 1.0 + 1e-12


# --- input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"metric": "cpu", "nonInferiorityMargin": 0.02}, "guardrails[1].metric"),
        ({"metric": "ctr", "nonInferiorityMargin": 1.5}, "guardrails[1].nonInferiorityMargin"),
        ({"metric": "ctr", "nonInferiorityMargin": "2%"}, "guardrails[1].nonInferiorityMargin"),
        ({"metric": "ctr", "nonInferiorityMargin": True}, "guardrails[1].nonInferiorityMargin"),
        ({"metric": "ctr", "nonInferiorityMargin": 0.1, "max": 1}, "guardrails[1]"),
        ({"metric": ["ctr"], "nonInferiorityMargin": 0.1}, "guardrails[1].metric"),
        (
            {"metric": "ctr", "nonInferiorityMargin": float("nan")},
            "guardrails[1].nonInferiorityMargin",
        ),
        ({"metric": "ctr"}, "guardrails"),
        ("ctr", "guardrails"),
    ],
)
def test_bad_non_inferiority_entries_name_the_field(entry: dict[str, Any], field: str) -> None:
    p = payload(arm(seed=0), arm(seed=1), {})
    p["guardrails"].append(entry)
    with pytest.raises(InputError) as err:
        parse_input(p)
    assert err.value.field == field
    assert str(err.value).startswith(field + ": ")


def test_snake_case_margin_and_parsed_model() -> None:
    p = payload(arm(seed=0), arm(seed=1), {})
    p["guardrails"].append({"metric": "dwell_time", "non_inferiority_margin": 0.05})
    m = parse_input(p)
    assert m.guardrails == {"latency_p95_ms": 100}
    assert m.non_inferiority == {"dwell_time": 0.05}


def test_analysis_input_keeps_non_inferiority_entries() -> None:
    variants = {"control": arm(seed=0), "treatment": arm(seed=1)}
    common: dict[str, Any] = {
        "control": "control",
        "weights": {"control": 50, "treatment": 50},
        "variants": variants,
    }
    limits = analysis_input(**common, guardrails=[{"metric": "latency_p95_ms", "max": 100}])
    assert limits["guardrails"] == {"latency_p95_ms": 100}
    both = analysis_input(
        **common,
        guardrails=[
            {"metric": "latency_p95_ms", "max": 100},
            {"metric": "ctr", "nonInferiorityMargin": 0.02},
        ],
    )
    assert parse_input(both).non_inferiority == {"ctr": 0.02}
    assert [g["kind"] for g in analyze(both)["guardrails"]] == ["absolute", "non_inferiority"]


# --- durations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("24h", 86400),
        ("90m", 5400),
        ("1h30m", 5400),
        ("45s", 45),
        ("1.5h", 5400),
        ("300ms", 0.3),
        ("2h45m30.5s", 9930.5),
        ("0", 0),
        ("0s", 0),
        ("+5m", 300),
        ("1us", 1e-6),
        ("1\u00b5s", 1e-6),
        ("10ns", 1e-8),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "24", "1d", "h", "1h 30m", "-5m", "1.2.3s", "5 m", "1H", "1h30", "abc", "9" * 400 + "h"],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def _duration_payload(**extra: Any) -> dict[str, Any]:
    p = payload(arm(seed=0), arm(seed=1), {})
    p.update(extra)
    return p


def test_duration_strings_match_the_seconds_fields() -> None:
    strings = analyze(_duration_payload(max_duration="24h", elapsed="1h30m"))
    seconds = analyze(_duration_payload(max_duration_seconds=86400, elapsed_seconds=5400))
    assert strings == seconds
    m = parse_input(_duration_payload(max_duration="24h", elapsed="90m"))
    assert (m.max_duration_seconds, m.elapsed_seconds) == (86400, 5400)


def test_duration_string_reaches_max_duration() -> None:
    out = analyze(_duration_payload(max_duration="6h", elapsed="6h0m1s"))
    assert (out["decision"], out["reason_code"]) == ("Inconclusive", "MaxDurationReached")
    assert "21600 s" in out["reason"]


def test_duration_and_seconds_may_agree_but_not_differ() -> None:
    m = parse_input(_duration_payload(max_duration="1h", max_duration_seconds=3600))
    assert m.max_duration_seconds == 3600
    with pytest.raises(InputError) as err:
        parse_input(_duration_payload(max_duration="1h", max_duration_seconds=60))
    assert err.value.field == "max_duration"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"max_duration": "1d"}, "max_duration"),
        ({"max_duration": "-1h"}, "max_duration"),
        ({"elapsed": "soon"}, "elapsed"),
        ({"elapsed": 3600}, "elapsed"),
        ({"max_duration": "24h", "elapsed": "90"}, "elapsed"),
    ],
)
def test_bad_duration_names_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as err:
        parse_input(_duration_payload(**extra))
    assert err.value.field == field


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"max_duration": "1 day"}, "max_duration: "),
        ({"elapsed": "5x"}, "elapsed: "),
        (
            {"guardrails": [{"metric": "ctr", "nonInferiorityMargin": -0.1}]},
            "guardrails[0].nonInferiorityMargin: ",
        ),
    ],
)
def test_cli_exits_2_naming_the_field(
    extra: dict[str, Any], field: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(_duration_payload(**extra)))
    code = main(["analyze", str(path)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith("rankexp analyze: " + field) and "Traceback" not in err


def test_cli_accepts_duration_strings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(_duration_payload(max_duration="1h", elapsed="2h")))
    assert main(["analyze", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "Inconclusive"
