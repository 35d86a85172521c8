"""The closed loop with real parts: the operator as a process against the real
kube-apiserver, a real Prometheus, real ranker and router processes and the ground-truth
simulator sending traffic through the router.

The one stand-in is ``rankexp.local.kubelet``: it runs the operator's Deployments as local
processes, copies the routing ConfigMap into the router's config file (as the kubelet does
for a ConfigMap volume, with Service addresses resolved to the local processes) and writes
the Deployments' status. Intervals are scaled with ``--interval-scale`` (1m -> 3 s).
"""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopkit import (
    RATE,
    Loop,
    action_events,
    concluded,
    hold_for,
    manifest,
    phase,
    seq,
)

from rankexp.local.prom import LocalPrometheus

pytestmark = pytest.mark.integration


@pytest.fixture
def loop(kube: Any, operator: Any, prometheus: LocalPrometheus, tmp_path: Path) -> Iterator[Loop]:
    harness = Loop(kube, operator, prometheus, tmp_path)
    yield harness
    harness.stop()


# ------------------------------------------------------------------------------- (a)


def test_v2_beats_v1_and_is_promoted_with_the_evidence(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path]
) -> None:
    kubelet = loop.start_kubelet(api_client)
    loop.start_operator(export=True)
    loop.kube.apply(manifest("ab", model_dirs))
    started = loop.running("ab", kubelet)["status"]["startedAt"]
    obj, seen = loop.record_analyses("ab", lambda o: phase(o) == "Promoted", "Promoted")
    status = obj["status"]

    assert status["winner"] == "treatment"
    assert status["traffic"] == [
        {"variant": "control", "weight": 0},
        {"variant": "treatment", "weight": 100},
    ]
    action = status["lastAction"]
    assert (action["seq"], action["type"], action["outcome"]) == (2, "Promote", "Promoted")
    assert action["scaledDown"] == ["control"]
    c = concluded(obj)
    assert (c["status"], c["reason"]) == ("True", "Promoted")
    # GitOps: kstatus Current (neither Reconciling nor Stalled), generation observed; a CI
    # job waits for the end of a run with `kubectl wait --for=condition=Concluded`
    kinds = {x["type"]: x for x in status["conditions"]}
    assert kinds["Reconciling"]["status"] == kinds["Stalled"]["status"] == "False"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    loop.kube.kubectl("wait", "--for=condition=Concluded", "experiment/ab", "--timeout=10s")
    loop.kube.kubectl("wait", "--for=jsonpath={.status.phase}=Promoted", "experiment/ab",
                      "--timeout=10s")  # fmt: skip

    analysis = status["analysis"]
    assert analysis["decision"] == "Promote" and analysis["winner"] == "treatment"
    assert analysis["window"]["start"] == started
    assert analysis["lift"] > 0.2 and analysis["pValue"] < 0.05
    ctr = next(
        x for x in analysis["comparisons"] if (x["metric"], x["variant"]) == ("ctr", "treatment")
    )
    assert ctr["significant"] and ctr["test"] == "msprt" and ctr["ciLow"] > 0
    assert analysis["srmPValue"] > 0.001
    assert {g["metric"] for g in analysis["guardrails"]} == {"latency_p95_ms", "error_rate"}
    assert all(g["ok"] for g in analysis["guardrails"])
    histograms = {(d["histogram"], d["gating"]) for d in analysis["drift"]}
    assert ("score", False) in histograms and ("like_rate", True) in histograms
    power = analysis["requiredSamples"]
    assert power["requiredPerVariant"] > 0 and power["unit"] == "impressions"
    assert all(0 < v["progressPercent"] <= 100 for v in power["variants"])
    exposures = {v["name"]: v["exposures"] for v in analysis["variants"]}
    assert min(exposures.values()) >= 300
    by_name = {v["name"]: v for v in status["variants"]}
    assert by_name["treatment"]["ctr"] > by_name["control"]["ctr"] > 0

    # The loser is scaled to 0 (once the router runs the final routing) and stopped.
    loop.kube.wait_for(
        lambda: loop.kube.get("deployment", "ab-control")["spec"]["replicas"] == 0,
        "control scaled to 0", timeout=30,
    )  # fmt: skip
    loop.kube.wait_for(lambda: not kubelet.urls("ab-control"), "control stopped", timeout=30)
    routing = json.loads(loop.kube.get("configmap", "ab-routing")["data"]["routing.json"])
    assert [(v["name"], v["weight"]) for v in routing["variants"]] == [
        ("control", 0),
        ("treatment", 100),
    ]

    # One Event per action, under fixed names; and the printer columns.
    assert [r for r, _ in action_events(loop.kube, "ab")] == ["RunStarted", "Promoted"]
    lines = loop.kube.kubectl("get", "exp", "ab").stdout.splitlines()
    header, row = lines[0].split(), lines[1].split()
    assert header == ["NAME", "PHASE", "CONTROL", "WINNER", "LIFT", "P-VALUE", "AGE"]
    assert row[:4] == ["ab", "Promoted", "control", "treatment"]
    assert float(row[4]) > 0.2 and float(row[5]) < 0.05
    decided = time.mktime(time.strptime(action["time"], "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(
        time.strptime(started, "%Y-%m-%dT%H:%M:%SZ")
    )
    print(f"\n(a) decided {decided:.0f} s after startedAt at {RATE:g} feeds/s, interval 3 s")
    evidence_over_time(loop, "ab", seen)


def evidence_over_time(loop: Loop, name: str, seen: dict[str, dict[str, Any]]) -> None:
    """The operator's rankexp_analysis_* series hold one sample per analysis, equal to what
    status said at each; `rankexp status --history` prints the same series."""
    ns = loop.kube.namespace
    analysed = {t: a for t, a in seen.items() if a.get("comparisons")}
    assert len(analysed) >= 2, seen.keys()
    epoch = {t: calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ")) for t in analysed}

    def series(series_name: str, **labels: str) -> dict[float, float]:
        matchers = ",".join(f'{k}="{v}"' for k, v in {"namespace": ns, "experiment": name,
                                                       **labels}.items())  # fmt: skip
        (found,) = loop.prometheus.query(f"{series_name}{{{matchers}}}[10m]")
        return {float(t): float(v) for t, v in found["values"]}

    # scraped every second, the last analysis is in Prometheus within a few seconds
    ctr = {"variant": "treatment", "metric": "ctr"}
    loop.kube.wait_for(
        lambda: len(series("rankexp_analysis_relative_lift", **ctr)) >= len(analysed),
        "every analysis in Prometheus", timeout=20,
    )  # fmt: skip
    for field, metric in (
        ("relativeLift", "rankexp_analysis_relative_lift"),
        ("relativeCiLow", "rankexp_analysis_relative_ci_low"),
        ("relativeCiHigh", "rankexp_analysis_relative_ci_high"),
        ("pValue", "rankexp_analysis_p_value"),
    ):
        points = series(metric, **ctr)
        assert sorted(points) == sorted(epoch.values()), (metric, points, epoch)
        for t, a in analysed.items():
            c = next(
                x for x in a["comparisons"] if (x["variant"], x["metric"]) == ("treatment", "ctr")
            )
            assert points[epoch[t]] == c[field], (metric, t)
    srm = series("rankexp_analysis_srm_p_value")
    exposures = series("rankexp_analysis_exposures", variant="control")
    for t, a in analysed.items():
        assert srm.get(epoch[t]) == a.get("srmPValue")  # none when the check could not run
        assert (
            exposures[epoch[t]]
            == next(v for v in a["variants"] if v["name"] == "control")["exposures"]
        )
    last = max(analysed)
    promote = series("rankexp_analysis_decision", decision="Promote")
    assert promote[epoch[last]] == 1.0 and analysed[last]["decision"] == "Promote"
    assert sum(promote.values()) == sum(a["decision"] == "Promote" for a in analysed.values())
    weights = loop.prometheus.query(
        f'rankexp_experiment_traffic_weight{{namespace="{ns}",experiment="{name}"}}'
    )
    assert {w["metric"]["variant"]: float(w["value"][1]) for w in weights} == {
        "control": 0.0, "treatment": 100.0,
    }  # fmt: skip

    # the CLI prints the same series: one row per analysis for the ctr comparison
    out = subprocess.run(
        [sys.executable, "-m", "rankexp.cli.commands", "status", name, "-n", ns, "--history",
         "--metric", "ctr", "--prometheus-url", loop.prometheus.url],
        env={**os.environ, "KUBECONFIG": str(loop.operator.kubeconfig)},
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[0] for r in rows] == sorted(analysed), out
    for when, decision, variant, metric, lift, *_ in rows:
        a = analysed[when]
        c = next(x for x in a["comparisons"] if (x["variant"], x["metric"]) == ("treatment", "ctr"))
        assert (decision, variant, metric) == (a["decision"], "treatment", "ctr"), out
        assert lift == f"{100.0 * c['relativeLift']:+.2f}%", out
    print(f"(a) {len(analysed)} analyses, each one sample per rankexp_analysis_* series")
    print(out)


# ------------------------------------------------------------------------------- (b)


def test_slow_treatment_is_rolled_back_naming_the_latency_guardrail(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path]
) -> None:
    kubelet = loop.start_kubelet(
        api_client, extra_args={"treatment": ["--inject-latency-ms", "150"]}
    )
    loop.start_operator()
    loop.kube.apply(manifest("slow", model_dirs))
    loop.running("slow", kubelet)
    obj = loop.wait("slow", lambda o: phase(o) == "RolledBack", "RolledBack")
    status = obj["status"]
    assert status["traffic"] == [
        {"variant": "control", "weight": 100},
        {"variant": "treatment", "weight": 0},
    ]
    c = concluded(obj)
    assert (c["status"], c["reason"]) == ("True", "RolledBack")
    assert "latency_p95_ms" in c["message"] and "> 100" in c["message"]
    stalled = next(x for x in status["conditions"] if x["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "RolledBack")  # kstatus: Failed
    breach = next(g for g in status["analysis"]["guardrails"] if g["metric"] == "latency_p95_ms")
    assert breach["ok"] is False and breach["value"] > 100 and breach["variant"] == "treatment"
    assert status["lastAction"]["scaledDown"] == ["treatment"]
    loop.kube.wait_for(
        lambda: loop.kube.get("deployment", "slow-treatment")["spec"]["replicas"] == 0,
        "treatment scaled to 0", timeout=30,
    )  # fmt: skip
    events = action_events(loop.kube, "slow")
    assert [r for r, _ in events] == ["RunStarted", "RolledBack"]
    rolled = loop.kube.events("slow", "RolledBack")
    assert rolled[0]["type"] == "Warning" and "latency_p95_ms" in rolled[0]["message"]


#: latency non-inferiority: treatment p95 at most 20 ms above control's (absolute max
#: high enough that only the comparison can fire)
LATENCY_NI = [
    {"metric": "error_rate", "max": 0.01},
    {"metric": "latency_p95_ms", "max": 1000},
    {"metric": "latency_p95_ms", "maxIncreaseMs": 20},
]


def test_treatment_50ms_slower_is_rolled_back_by_the_latency_non_inferiority_guardrail(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path]
) -> None:
    kubelet = loop.start_kubelet(
        api_client, extra_args={"treatment": ["--inject-latency-ms", "50"]}
    )
    loop.start_operator()
    loop.kube.apply(manifest("slow50", model_dirs, analysis={"guardrails": LATENCY_NI}))
    loop.running("slow50", kubelet)
    obj = loop.wait("slow50", lambda o: phase(o) == "RolledBack", "RolledBack")
    status = obj["status"]
    c = concluded(obj)
    assert (c["status"], c["reason"]) == ("True", "RolledBack")
    assert "latency non-inferiority" in c["message"] and "> +20 ms" in c["message"], c
    (g,) = [g for g in status["analysis"]["guardrails"] if g["kind"] == "latency_non_inferiority"]
    assert g["ok"] is False and g["variant"] == "treatment" and g["limit"] == 20
    assert 20 < g["ciLow"] <= g["value"] <= g["ciHigh"], g
    absolute = next(x for x in status["analysis"]["guardrails"] if x["kind"] == "absolute"
                    and x["metric"] == "latency_p95_ms")  # fmt: skip
    assert absolute["ok"] is True  # the +50 ms is far below the 1000 ms limit
    assert [r for r, _ in action_events(loop.kube, "slow50")] == ["RunStarted", "RolledBack"]
    print(f"\n(latency) p95 +{g['value']:.1f} ms, interval [{g['ciLow']:.1f}, {g['ciHigh']:.1f}]")


# ------------------------------------------------------------------------------- (c)


def test_a_a_never_acts_and_ends_inconclusive(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path]
) -> None:
    kubelet = loop.start_kubelet(api_client)
    loop.start_operator()
    # with the latency non-inferiority guardrail too: an A/A run never breaches it
    spec = manifest(
        "aa", model_dirs, treatment="v1",
        analysis={"maxDuration": "40s", "alpha": 0.01, "guardrails": LATENCY_NI},
    )  # fmt: skip
    loop.kube.apply(spec)
    loop.running("aa", kubelet)
    latency: list[dict[str, Any]] = []

    def done(o: dict[str, Any]) -> bool:
        for g in ((o.get("status") or {}).get("analysis") or {}).get("guardrails") or []:
            if g["kind"] == "latency_non_inferiority" and g not in latency[-1:]:
                latency.append(g)
        return phase(o) == "Inconclusive"

    obj = loop.wait("aa", done, "Inconclusive", timeout=120)
    assert latency and all(g["ok"] is not False for g in latency), latency
    assert any(g["ok"] is True for g in latency), latency  # evaluated, not only held
    print(f"\n(aa) latency p95 differences seen: {[round(g['value'], 1) for g in latency]}")
    status = obj["status"]
    assert status["lastAction"]["seq"] == 2, "nothing but the start and the end"
    assert status.get("winner") is None
    assert status["traffic"][0] == {"variant": "control", "weight": 100}
    c = concluded(obj)
    assert (c["status"], c["reason"]) == ("True", "MaxDurationReached")
    assert "max duration 40s reached" in c["message"]
    assert [r for r, _ in action_events(loop.kube, "aa")] == ["RunStarted", "Inconclusive"]
    assert not loop.kube.events("aa", "Promoted") and not loop.kube.events("aa", "RolledBack")


def test_cuped_uses_the_previous_run_as_its_pre_period(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path]
) -> None:
    """CUPED on: the first run has no pre-period (its series start at 0 at startedAt) and
    runs unadjusted saying why; a new run of the same Experiment (a design change) reads
    the first run's users as its covariate and applies it."""
    kubelet = loop.start_kubelet(api_client)
    loop.start_operator()
    cuped = {"enabled": True, "preWindow": "10m"}
    spec = manifest("cu", model_dirs, treatment="v1",
                    analysis={"maxDuration": "10m", "alpha": 0.01, "cuped": cuped})  # fmt: skip
    loop.kube.apply(spec)
    first = loop.running("cu", kubelet)["status"]["startedAt"]

    def with_cuped(o: dict[str, Any]) -> bool:
        return bool(((o.get("status") or {}).get("analysis") or {}).get("cuped"))

    obj = loop.wait("cu", with_cuped, "an analysis with CUPED", timeout=60)
    block = obj["status"]["analysis"]["cuped"]
    assert block["applied"] is False and block["metric"] == "ctr", block
    assert "pre-period" in block["reason"], block
    assert block["preWindow"]["end"] == first
    # let the first run collect a few analyses' worth of users, then change the design
    hold_for(loop, "cu", 3, lambda o: None)
    spec["spec"]["analysis"]["alpha"] = 0.02
    loop.kube.apply(spec)

    def second_run_adjusted(o: dict[str, Any]) -> bool:
        status = o.get("status") or {}
        block = (status.get("analysis") or {}).get("cuped") or {}
        started = status.get("startedAt")
        return bool(started and started != first and block.get("applied"))

    obj = loop.wait("cu", second_run_adjusted, "a second run with CUPED applied", timeout=90)
    status = obj["status"]
    block = status["analysis"]["cuped"]
    assert block["preWindow"]["end"] == status["startedAt"] > first
    assert block["theta"] is not None and -1.0 <= block["rho"] <= 1.0
    assert {v["variant"] for v in block["varianceReduction"]} == {"control", "treatment"}
    assert (seq(obj), status["lastAction"]["type"]) == (2, "Start")  # the second run's
    print(
        f"\n(cuped) second run: theta {block['theta']:.3f}, rho {block['rho']:.3f}, "
        f"variance reduction {[round(v['value'], 3) for v in block['varianceReduction']]}"
    )


# ------------------------------------------------------------------------------- (d)


def test_prometheus_outage_holds_without_acting_then_resumes(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    own = LocalPrometheus(workdir=tmp_path / "prometheus").start()
    try:
        loop.prometheus = own
        kubelet = loop.start_kubelet(api_client)
        loop.start_operator()
        loop.kube.apply(manifest("outage", model_dirs, analysis={"minSamplesPerVariant": 600}))
        loop.running("outage", kubelet)
        # Prometheus goes away as the run starts (before enough samples for a decision).
        port = own.port
        own.stop()
        obj = loop.wait(
            "outage", lambda o: concluded(o).get("reason") == "PrometheusUnavailable", "a hold"
        )
        assert obj["status"]["analysis"]["decision"] == "Hold"

        def no_action(o: dict[str, Any]) -> None:
            assert seq(o) == 1 and phase(o) == "Running"
            assert concluded(o)["reason"] == "PrometheusUnavailable"

        hold_for(loop, "outage", 3, no_action)
        assert [e["reason"] for e in loop.kube.events("outage", "PrometheusUnavailable")] == [
            "PrometheusUnavailable"
        ], "announced once, not at every look"

        own.start(port=port)  # back, with its data
        obj = loop.wait("outage", lambda o: phase(o) == "Promoted", "Promoted after the outage")
        assert obj["status"]["winner"] == "treatment"
        assert [r for r, _ in action_events(loop.kube, "outage")] == ["RunStarted", "Promoted"]
    finally:
        loop.stop()
        own.stop()


# ------------------------------------------------------------------------------- (e)


def test_router_on_other_weights_holds_on_sample_ratio_mismatch(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path]
) -> None:
    kubelet = loop.start_kubelet(api_client, router_weights={"control": 20, "treatment": 80})
    loop.start_operator()
    loop.kube.apply(manifest("srm", model_dirs))
    loop.running("srm", kubelet)
    obj = loop.wait(
        "srm", lambda o: concluded(o).get("reason") == "SampleRatioMismatch", "an SRM hold"
    )
    assert obj["status"]["analysis"]["srmPValue"] < 0.001
    assert "sample ratio mismatch" in concluded(obj)["message"]

    def held(o: dict[str, Any]) -> None:
        # v2 is far better, yet nothing is promoted while the split is wrong
        assert seq(o) == 1 and phase(o) == "Running"
        assert concluded(o)["reason"] == "SampleRatioMismatch"

    hold_for(loop, "srm", 3, held)
    evidence = loop.get("srm")["status"]["analysis"]
    shares = {v["name"]: v["expectedShare"] for v in evidence["variants"]}
    assert shares == {"control": 0.5, "treatment": 0.5}


# ------------------------------------------------------------------------------- (f)


def test_ramp_advances_in_order_and_not_through_a_breach(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path]
) -> None:
    # Two experiments side by side: a healthy ramp, and one whose treatment is slow and
    # whose rollback waits for a person.
    kubelet = loop.start_kubelet(
        api_client, extra_args={"breach-treatment": ["--inject-latency-ms", "150"]}
    )
    loop.start_operator()
    steps = {"traffic": {"steps": [10, 25, 50]}, "analysis": {"minSamplesPerVariant": 100}}
    loop.kube.apply(manifest("ramp", model_dirs, **steps))
    loop.kube.apply(manifest("breach", model_dirs, rollback={"auto": False}, **steps))
    loop.running("ramp", kubelet, rate=60)
    loop.running("breach", kubelet, rate=40)

    obj = loop.wait("ramp", lambda o: phase(o) == "Promoted", "ramped and Promoted", timeout=240)
    history = [
        [w["weight"] for w in period["weights"]] for period in obj["status"]["trafficHistory"]
    ]
    assert history == [[90, 10], [75, 25], [50, 50], [0, 100]]
    assert [r for r, _ in action_events(loop.kube, "ramp")] == [
        "RunStarted",
        "TrafficRamped",
        "TrafficRamped",
        "Promoted",
    ]
    # Every stage ran a full interval before the next one.
    times = [period["since"] for period in obj["status"]["trafficHistory"]]
    assert times == sorted(times) and len(set(times)) == len(times)

    def stuck(o: dict[str, Any]) -> None:
        assert o["status"]["lastAction"]["step"] == 0 and seq(o) == 1
        assert o["status"]["traffic"] == [
            {"variant": "control", "weight": 90},
            {"variant": "treatment", "weight": 10},
        ]

    obj = loop.wait(
        "breach", lambda o: concluded(o).get("reason") == "RollbackRecommended", "a breach"
    )
    stuck(obj)
    assert "latency_p95_ms" in concluded(obj)["message"]
    hold_for(loop, "breach", 3, stuck)
    assert loop.kube.events("breach", "RollbackRecommended")


# ------------------------------------------------------------------------------- (g)


def configmap_action(kube: Any, name: str) -> dict[str, Any]:
    configmap = kube.get("configmap", f"{name}-routing") or {}
    raw = (configmap.get("metadata", {}).get("annotations") or {}).get("rankexp.io/last-action")
    return json.loads(raw) if raw else {}


def test_sigkill_between_routing_and_status_converges_to_one_action(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path], failing_webhook: Any
) -> None:
    """The API server refuses every status write (a webhook outage), so the operator
    applies its decision to the routing and stops there; it is SIGKILLed in that state
    and restarted once status can be written again."""
    kubelet = loop.start_kubelet(api_client)
    loop.start_operator()
    loop.kube.apply(manifest("crash", model_dirs, analysis={"minSamplesPerVariant": 600}))
    loop.running("crash", kubelet)

    def status_refused() -> bool:
        result = loop.kube.kubectl(
            "patch", "experiment", "crash", "--subresource=status", "--type=merge",
            "-p", '{"status": {}}', "--dry-run=server", check=False,
        )  # fmt: skip
        return result.returncode != 0 and "failed calling webhook" in result.stderr

    with failing_webhook(loop.kube, "rankexp.io", "experiments/status", status_refused):
        loop.kube.wait_for(
            lambda: configmap_action(loop.kube, "crash").get("type") == "Promote",
            "the decision in the routing ConfigMap",
            timeout=180,
            operator=loop.operator,
        )
        assert seq(loop.get("crash")) == 1, "status must lag behind the routing"
        assert phase(loop.get("crash")) == "Running"
        loop.operator.kill()
    routing = json.loads(loop.kube.get("configmap", "crash-routing")["data"]["routing.json"])
    assert [v["weight"] for v in routing["variants"]] == [0, 100]

    loop.operator.start()
    obj = loop.wait("crash", lambda o: phase(o) == "Promoted", "Promoted after the restart")
    assert seq(obj) == 2 and obj["status"]["winner"] == "treatment"
    assert obj["status"]["lastAction"] == {
        k: v for k, v in configmap_action(loop.kube, "crash").items() if v is not None
    }
    history = [[w["weight"] for w in p["weights"]] for p in obj["status"]["trafficHistory"]]
    assert history == [[50, 50], [0, 100]]
    time.sleep(3)  # a few more ticks of the restarted operator: nothing else happens
    assert seq(loop.get("crash")) == 2
    assert [r for r, _ in action_events(loop.kube, "crash")] == ["RunStarted", "Promoted"]
    promoted = loop.kube.events("crash", "Promoted")
    assert len(promoted) == 1 and promoted[0].get("count", 1) == 1


# ------------------------------------------------------------------------------- (h)


def test_manual_promotion_waits_for_approval(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path], kube_cluster: Any
) -> None:
    kubelet = loop.start_kubelet(api_client)
    loop.start_operator()
    # The wait for approval is long, and the simulator's 10,000 users are a finite
    # population: a salt can split them 49/51, which a long enough hold tells from 50/50
    # at the default srmPValue (0.001). This test is about approval, not SRM.
    loop.kube.apply(manifest("manual", model_dirs, promotion={"auto": False},
                             analysis={"srmPValue": 1e-9}))  # fmt: skip
    loop.running("manual", kubelet)
    obj = loop.wait(
        "manual", lambda o: concluded(o).get("reason") == "AwaitingApproval", "AwaitingApproval"
    )
    assert obj["status"]["analysis"]["winner"] == "treatment"
    assert "rankexp promote manual treatment" in concluded(obj)["message"]

    def waiting(o: dict[str, Any]) -> None:
        assert seq(o) == 1 and phase(o) == "Running"
        assert concluded(o)["reason"] == "AwaitingApproval"

    hold_for(loop, "manual", 3, waiting)
    assert len(loop.kube.events("manual", "AwaitingApproval")) == 1

    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "KUBECONFIG": str(kube_cluster.kubeconfig),
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }
    ns = loop.kube.namespace
    kubectl = str(kube_cluster.bin_dir / "kubectl")
    # The kubectl plugin (kubectl-rankexp on PATH) shows the evidence.
    shown = subprocess.run(
        [kubectl, "rankexp", "status", "manual", "-n", ns],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "AwaitingApproval" in shown.stdout and "treatment" in shown.stdout
    assert "Sample-ratio check p-value" in shown.stdout

    bad = subprocess.run(
        [f"{bin_dir}/rankexp", "promote", "manual", "nobody", "-n", ns],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "variant: 'nobody' is not a variant" in bad.stderr
    ok = subprocess.run(
        [f"{bin_dir}/rankexp", "promote", "manual", "treatment", "-n", ns],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    obj = loop.wait("manual", lambda o: phase(o) == "Promoted", "Promoted after approval")
    assert obj["status"]["winner"] == "treatment"
    assert "approvedVariant" in obj["status"]["lastAction"]["reason"]
    assert obj["spec"]["promotion"]["approvedVariant"] == "treatment"
    managed = loop.kube.kubectl(
        "get", "experiment", "manual", "-o", "json", "--show-managed-fields"
    )
    writers = {
        entry["manager"]
        for entry in json.loads(managed.stdout)["metadata"]["managedFields"]
        if "f:spec" in (entry.get("fieldsV1") or {})
    }
    assert "rankexp-operator" not in writers and len(writers) == 2  # kubectl and the CLI
    assert [r for r, _ in action_events(loop.kube, "manual")] == ["RunStarted", "Promoted"]


# ------------------------------------------------------------------------------ faults
# The fault matrix of the README ("Faults and what survives them"); (d) and (g) above
# are two of its rows.


def test_sigkill_between_decision_and_routing_converges_to_one_action(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path], failing_webhook: Any
) -> None:
    """The API server refuses every ConfigMap write (a webhook outage), so the operator
    decides but cannot change the routing; it is SIGKILLed in that state. Nothing of the
    decision was kept, so the restarted operator decides again: one action, one Event."""
    kubelet = loop.start_kubelet(api_client)
    loop.start_operator()
    loop.kube.apply(manifest("undecided", model_dirs, analysis={"minSamplesPerVariant": 600}))
    loop.running("undecided", kubelet)
    failed = f"tick of {loop.kube.namespace}/undecided failed"

    def configmaps_refused() -> bool:
        result = loop.kube.kubectl(
            "annotate", "configmap", "undecided-routing", "probe=1", "--dry-run=server",
            check=False,
        )  # fmt: skip
        return result.returncode != 0 and "failed calling webhook" in result.stderr

    with failing_webhook(loop.kube, "", "configmaps", configmaps_refused):
        loop.kube.wait_for(
            lambda: failed in loop.operator.log_path.read_text(errors="replace"),
            "a decision whose routing write is refused",
            timeout=180,
            operator=loop.operator,
        )
        obj = loop.get("undecided")
        assert seq(obj) == 1 and phase(obj) == "Running", "nothing applied"
        assert configmap_action(loop.kube, "undecided").get("type") == "Start"
        loop.operator.kill()

    loop.operator.start()
    obj = loop.wait("undecided", lambda o: phase(o) == "Promoted", "Promoted after the restart")
    assert seq(obj) == 2 and obj["status"]["winner"] == "treatment"
    time.sleep(3)
    assert seq(loop.get("undecided")) == 2
    assert [r for r, _ in action_events(loop.kube, "undecided")] == ["RunStarted", "Promoted"]


def test_kube_apiserver_restart_under_a_running_experiment(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path]
) -> None:
    """kube-apiserver stops for a few seconds mid-run: the operator's watches and timer
    reconnect, the analysis carries on to one promotion, and a spec change made after
    the restart is still served (the watch is back)."""
    kubelet = loop.start_kubelet(api_client)
    loop.start_operator()
    loop.kube.apply(manifest("restart", model_dirs, analysis={"minSamplesPerVariant": 600}))
    loop.running("restart", kubelet)
    down = loop.kube.cluster.restart_apiserver(downtime=4.0)
    assert down >= 4.0
    obj = loop.wait("restart", lambda o: phase(o) == "Promoted", "Promoted after the restart")
    assert loop.operator.alive(), "the operator survived the outage"
    assert seq(obj) == 2
    assert [r for r, _ in action_events(loop.kube, "restart")] == ["RunStarted", "Promoted"]
    replicas = '[{"op": "replace", "path": "/spec/variants/1/replicas", "value": 2}]'
    loop.kube.kubectl("patch", "experiment", "restart", "--type=json", "-p", replicas)
    loop.kube.wait_for(
        lambda: (loop.kube.get("deployment", "restart-treatment") or {})
        .get("spec", {}).get("replicas") == 2,
        "the spec change served after the restart", timeout=60, operator=loop.operator,
    )  # fmt: skip


def router_fallbacks(url: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return sum(
        float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith("router_fallbacks_total{")
    )


def test_a_killed_variant_holds_on_missing_data_and_is_never_promoted(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path]
) -> None:
    """The winning treatment's process is SIGKILLed and stays down (CrashLoopBackOff):
    the router sends its users to control and counts it, and the analysis holds with
    MissingData instead of promoting a variant that does not run. It resumes, and does
    not promote on the outage's data once the variant is back either."""
    kubelet = loop.start_kubelet(api_client)
    loop.start_operator()
    loop.kube.apply(manifest("broken", model_dirs, analysis={"minSamplesPerVariant": 600}))
    loop.running("broken", kubelet)
    (router,) = kubelet.urls("broken-router")
    kubelet.crash("broken-treatment")

    def held(o: dict[str, Any]) -> None:
        assert phase(o) == "Running" and seq(o) == 1, "no action on a broken variant"
        assert concluded(o)["reason"] == "MissingData", concluded(o)

    loop.wait("broken", lambda o: concluded(o).get("reason") == "MissingData", "MissingData")
    hold_for(loop, "broken", 3, held)
    assert "treatment" in concluded(loop.get("broken"))["message"]
    assert router_fallbacks(router) > 0, "the router counted its fallbacks to control"
    assert loop.get("broken")["status"]["conditions"], "the condition says why"

    kubelet.recover("broken-treatment")
    # Back, the analysis reads fresh data again; the window still holds the outage, when
    # the treatment's users were served by control, so its split is off: it holds on
    # SampleRatioMismatch rather than promoting on contaminated data (a new run, e.g. a
    # changed design, starts clean).
    obj = loop.wait("broken", lambda o: concluded(o).get("reason") != "MissingData",
                    "the analysis resumed", 120)  # fmt: skip
    assert phase(obj) == "Running" and seq(obj) == 1, concluded(obj)
    assert concluded(obj)["reason"] == "SampleRatioMismatch", concluded(obj)


def test_a_missing_or_corrupt_model_is_never_ready_and_the_experiment_says_so(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """A treatment whose model is missing, then corrupt: its ranker process keeps running
    but is never ready, the Experiment stays Pending with Ready=False naming the variant
    and takes no action; fixing the model URI starts the run."""
    import urllib.error
    import urllib.request

    corrupt = tmp_path / "corrupt-model"
    corrupt.mkdir()
    for name in ("metadata.json", "snapshot.npz", "user_tower.onnx", "item_tower.onnx"):
        (corrupt / name).write_bytes(b"\x00not a model\xff")
    kubelet = loop.start_kubelet(api_client)
    loop.start_operator()
    body = manifest("nomodel", model_dirs)
    body["spec"]["variants"][1]["model"]["uri"] = f"file://{tmp_path / 'missing-model'}"
    loop.kube.apply(body)

    def not_ready(o: dict[str, Any]) -> bool:
        ready = next((c for c in o.get("status", {}).get("conditions") or []
                      if c["type"] == "Ready"), {})  # fmt: skip
        return ready.get("status") == "False" and "treatment" in ready.get("message", "")

    for uri in (None, f"file://{corrupt}"):
        if uri is not None:
            patch = [{"op": "replace", "path": "/spec/variants/1/model/uri", "value": uri}]
            loop.kube.kubectl("patch", "experiment", "nomodel", "--type=json", "-p",
                              json.dumps(patch))  # fmt: skip
        obj = loop.wait("nomodel", not_ready, "Ready=False naming the treatment")
        time.sleep(5)  # long enough for a model load to fail, and for ticks to act
        obj = loop.get("nomodel")
        assert not_ready(obj) and phase(obj) == "Pending", obj.get("status")
        assert "startedAt" not in obj["status"], "no run starts without the model"
        acted = {r for r, _ in action_events(loop.kube, "nomodel")}
        assert acted <= {"RunStarted"}, "no traffic action on a variant that is not ready"
        (process,) = kubelet.processes("nomodel-treatment")
        assert process.is_running(), "the ranker keeps serving (health) without a model"
        (url,) = kubelet.urls("nomodel-treatment")

        def ready_answer(url: str = url) -> tuple[int, bytes] | None:
            try:
                with urllib.request.urlopen(url + "/ready", timeout=2) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()
            except OSError:
                return None  # still starting

        code, answer = loop.kube.wait_for(ready_answer, "/ready answers", timeout=30)
        assert code == 503 and b"model" in answer, (code, answer)
        assert process.is_running(), "a bad model never crashes the ranker"

    fix = [{"op": "replace", "path": "/spec/variants/1/model/uri",
            "value": f"file://{model_dirs['v2']}"}]  # fmt: skip
    loop.kube.kubectl("patch", "experiment", "nomodel", "--type=json", "-p", json.dumps(fix))
    loop.wait("nomodel", lambda o: phase(o) == "Running", "Running once the model loads")


# ----------------------------------------------------------------------- interleaving


def test_interleaving_promotes_v2_on_the_preference_share(
    loop: Loop, api_client: Any, model_dirs: dict[str, Path]
) -> None:
    """mode: interleaving end to end: the router merges v1's and v2's feeds, the simulated
    users' clicks are attributed to teams, Prometheus scrapes the outcomes, and the
    operator promotes v2 on the preference share; then the winner serves alone."""
    kubelet = loop.start_kubelet(
        api_client, extra_args={"il-router": ["--attribution-window", "2"]}
    )
    loop.start_operator()
    loop.kube.apply(manifest("il", model_dirs, mode="interleaving",
                             analysis={"minUsersWithClick": 100}))  # fmt: skip
    loop.running("il", kubelet)
    obj = loop.wait("il", lambda o: phase(o) == "Promoted", "Promoted")
    status = obj["status"]
    assert status["winner"] == "treatment"
    analysis = status["analysis"]
    assert analysis["decision"] == "Promote" and analysis["primaryMetric"] == "preference"
    inter = analysis["interleaving"]
    assert inter["delta"] > 0 and inter["ciLow"] > 0 and inter["pValue"] < 0.05
    assert inter["winsTreatment"] > inter["winsControl"]
    assert inter["clickingUsers"] >= 100
    assert {g["metric"] for g in analysis["guardrails"]} == {"latency_p95_ms", "error_rate"}
    assert [r for r, _ in action_events(loop.kube, "il")] == ["RunStarted", "Promoted"]
    # concluded: the routing leaves interleaving mode, so the winner serves alone
    routing = json.loads(loop.kube.get("configmap", "il-routing")["data"]["routing.json"])
    assert routing["mode"] == "ab"
    assert [(v["name"], v["weight"]) for v in routing["variants"]] == [
        ("control", 0),
        ("treatment", 100),
    ]
