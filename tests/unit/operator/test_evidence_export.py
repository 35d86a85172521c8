"""The evidence series: what a status exports, the exposition's timestamps, reading back."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from rankexp.cli.status import render_history
from rankexp.prom import evidence as ev

T = "2026-12-04T19:00:00Z"
EPOCH = 1796410800.0


def body(decision: str = "Continue", time: str = T, **analysis: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "exp"},
        "spec": {"control": "control"},
        "status": {
            "traffic": [
                {"variant": "control", "weight": 90},
                {"variant": "treatment", "weight": 10},
            ],
            "analysis": {
                "time": time,
                "decision": decision,
                "srmPValue": 0.42,
                "variants": [
                    {"name": "control", "exposures": 900.0},
                    {"name": "treatment", "exposures": 100.0},
                ],
                "comparisons": [
                    {
                        "variant": "treatment",
                        "metric": "ctr",
                        "lift": 0.01,
                        "relativeLift": 0.1,
                        "ciLow": -0.002,
                        "ciHigh": 0.022,
                        "relativeCiLow": -0.02,
                        "relativeCiHigh": 0.22,
                        "pValue": 0.3,
                        "pValueAdjusted": 0.3,
                    }
                ],
                **analysis,
            },
        },
    }


def test_a_status_exports_its_analysis_stamped_with_the_analysis_time() -> None:
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s
        for s in ev.samples("ns", "exp", body()["status"])
    }
    lift = found[
        (
            "rankexp_analysis_relative_lift",
            (
                ("experiment", "exp"),
                ("metric", "ctr"),
                ("namespace", "ns"),
                ("variant", "treatment"),
            ),
        )
    ]
    assert (lift.value, lift.timestamp) == (0.1, EPOCH)
    decisions = {
        dict(s.labels)["decision"]: s.value for s in found.values() if s.name.endswith("_decision")
    }
    assert decisions == {"Hold": 0, "Continue": 1, "Promote": 0, "Rollback": 0, "Inconclusive": 0}
    weights = [s for s in found.values() if s.name == ev.TRAFFIC]
    assert {dict(s.labels)["variant"]: s.value for s in weights} == {"control": 90, "treatment": 10}
    assert all(s.timestamp is None for s in weights)  # stamped at scrape time


def test_a_hold_without_evidence_exports_only_the_decision_and_bad_times_nothing() -> None:
    hold = {"analysis": {"time": T, "decision": "Hold", "reasonCode": "MissingData"}}
    names = {s.name for s in ev.samples("ns", "exp", hold)}
    assert names == {"rankexp_analysis_decision"}
    assert ev.samples("ns", "exp", {"analysis": {"time": "yesterday", "decision": "Hold"}}) == []
    assert ev.samples("ns", "exp", None) == []


def test_interleaving_exports_the_preference_share_under_its_treatment() -> None:
    b = body(
        comparisons=[], interleaving={"delta": 0.2, "ciLow": 0.1, "ciHigh": 0.3, "pValue": 0.01}
    )
    pref = [
        s
        for s in ev.samples("ns", "exp", b["status"])
        if dict(s.labels).get("metric") == "preference"
    ]
    assert {s.name: s.value for s in pref} == {
        "rankexp_analysis_lift": 0.2,
        "rankexp_analysis_ci_low": 0.1,
        "rankexp_analysis_ci_high": 0.3,
        "rankexp_analysis_p_value": 0.01,
    }
    assert {dict(s.labels)["variant"] for s in pref} == {"treatment"}


def test_the_exposition_carries_the_timestamp_and_forget_ends_the_series() -> None:
    registry = CollectorRegistry()
    collector = ev.EvidenceCollector()
    registry.register(collector)
    collector.observe(body())
    text = generate_latest(registry).decode()
    line = next(x for x in text.splitlines() if x.startswith("rankexp_analysis_relative_lift{"))
    assert line.endswith(" 0.1 1796410800000"), line  # value, then milliseconds
    assert 'namespace="ns"' in line and 'experiment="exp"' in line
    collector.forget("ns", "exp")
    assert "rankexp_analysis_relative_lift{" not in generate_latest(registry).decode()


def test_history_reads_a_matrix_back_into_one_point_per_analysis() -> None:
    def series(
        name: str, labels: dict[str, str], values: list[tuple[float, str]]
    ) -> dict[str, Any]:
        return {"metric": {"__name__": name, **labels}, "values": [[t, v] for t, v in values]}

    ctr = {"variant": "treatment", "metric": "ctr"}
    matrix = [
        series("rankexp_analysis_relative_lift", ctr, [(EPOCH, "0.1"), (EPOCH + 60, "0.12")]),
        series("rankexp_analysis_relative_ci_low", ctr, [(EPOCH, "-0.02"), (EPOCH + 60, "0.01")]),
        series("rankexp_analysis_relative_ci_high", ctr, [(EPOCH, "0.22"), (EPOCH + 60, "0.23")]),
        series("rankexp_analysis_p_value", ctr, [(EPOCH, "0.3"), (EPOCH + 60, "0.01")]),
        series(
            "rankexp_analysis_decision", {"decision": "Continue"}, [(EPOCH, "1"), (EPOCH + 60, "0")]
        ),
        series(
            "rankexp_analysis_decision", {"decision": "Promote"}, [(EPOCH, "0"), (EPOCH + 60, "1")]
        ),
        series("rankexp_analysis_exposures", {"variant": "control"}, [(EPOCH, "900")]),
        series("rankexp_analysis_srm_p_value", {}, [(EPOCH + 60, "0.5")]),
    ]
    points = ev.history(matrix)
    assert [p.time for p in points] == [EPOCH, EPOCH + 60]
    assert [p.decision for p in points] == ["Continue", "Promote"]
    assert points[1].comparisons[("treatment", "ctr")]["relative_lift"] == 0.12
    assert points[0].exposures == {"control": 900.0} and points[0].srm_p_value is None
    text = render_history(points, "ctr").splitlines()
    assert text[0].split()[:5] == ["TIME", "DECISION", "VARIANT", "METRIC", "LIFT"]
    assert text[1].split()[:6] == [T, "Continue", "treatment", "ctr", "+10.00%", "[-2.00%,"]
    assert text[2].split()[1] == "Promote" and "+12.00%" in text[2]
    assert len(render_history(points, "dwell_time").splitlines()) == 3  # rows without it


def test_history_query_escapes_names() -> None:
    q = ev.history_query('n"s', "a\\b", 90)
    assert q == '{__name__=~"rankexp_analysis_.+",namespace="n\\"s",experiment="a\\\\b"}[90s]'
