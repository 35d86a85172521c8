"""The closed-loop harness of the operator's integration tests (test_loop, test_ha).

The operator as a process against the real kube-apiserver, a real Prometheus, real ranker
and router processes (run by ``rankexp.local.kubelet``, the one stand-in) and the
ground-truth simulator sending traffic through the router. Intervals are scaled with
``--interval-scale`` (1m -> 3 s).
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ranker.world.ground_truth import make_world
from ranker.world.simulate import Simulator
from rankexp.local.kubelet import LocalKubelet
from rankexp.local.prom import LocalPrometheus

OPERATOR_JOB = "rankexp-operator"
WORLD = make_world()
SCALE = "0.05"  # 1m analysis intervals run every 3 s
RATE = 60.0  # feeds per second through the router


def manifest(
    name: str,
    models: dict[str, Path],
    *,
    control: str = "v1",
    treatment: str = "v2",
    **spec: Any,
) -> dict[str, Any]:
    analysis = {
        "interval": "1m",
        "minSamplesPerVariant": 300,
        "maxDuration": "10m",
        "secondaryMetrics": ["engagement_rate"],
        "guardrails": [
            {"metric": "latency_p95_ms", "max": 100},
            {"metric": "error_rate", "max": 0.01},
        ],
    }
    analysis.update(spec.pop("analysis", {}))
    body: dict[str, Any] = {
        "apiVersion": "rankexp.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "template": {"image": "rankexp/ranker:dev"},
            "variants": [
                {"name": name, "model": {"uri": f"file://{models[model]}"}, "weight": 50}
                for name, model in (("control", control), ("treatment", treatment))
            ],
            "control": "control",
            "analysis": analysis,
            "promotion": {"auto": True},
            "rollback": {"auto": True},
        },
    }
    body["spec"].update(spec)
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Traffic:
    """The simulator in a thread, through the router, until stopped."""

    def __init__(self, url: str, rate: float = RATE, seed: int = 0) -> None:
        self.sim = Simulator(url, WORLD, num_items=20, concurrency=8, seed=seed, rate=rate)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.run(self.sim.run(duration=900, progress_every=3600, out=io.StringIO()))

    def stop(self) -> None:
        self.sim.stop.set()
        self._thread.join(timeout=30)


class Loop:
    """One test's closed loop: operator, kubelet stand-in, Prometheus, traffic."""

    def __init__(self, kube: Any, operator: Any, prometheus: LocalPrometheus, workdir: Path):
        self.kube = kube
        self.operator = operator
        self.prometheus = prometheus
        self.workdir = workdir
        self.kubelets: list[LocalKubelet] = []
        self.traffic: list[Traffic] = []
        self.exporting = False

    def start_operator(self, export: bool = False) -> None:
        """The operator reading the test's Prometheus; with ``export``, serving /metrics on
        a free loopback port that Prometheus scrapes (job ``rankexp-operator``)."""
        self.operator.extra_args = ["--prometheus-url", self.prometheus.url]
        if export:
            port = free_port()
            self.operator.extra_args += ["--serve", f"127.0.0.1:{port}"]
            self.prometheus.set_targets(OPERATOR_JOB, [f"127.0.0.1:{port}"])
            self.exporting = True
        self.operator.env = {"RANKEXP_INTERVAL_SCALE": SCALE, "RANKEXP_READINESS_INTERVAL": "1"}
        self.operator.start()

    def record_analyses(
        self, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 180
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Like :meth:`wait`, polling every 0.2 s and keeping every ``status.analysis`` seen
        by its time: (the object that passed, {analysis time: analysis})."""
        seen: dict[str, dict[str, Any]] = {}

        def probe() -> dict[str, Any] | None:
            obj = self.get(name)
            analysis = (obj.get("status") or {}).get("analysis")
            if analysis and analysis.get("time"):
                seen[analysis["time"]] = analysis
            return obj if check(obj) else None

        found: dict[str, Any] = self.kube.wait_for(
            probe, f"{name}: {what}", timeout=timeout, interval=0.2, operator=self.operator
        )
        return found, seen

    def start_kubelet(self, api_client: Any, **faults: Any) -> LocalKubelet:
        kubelet = LocalKubelet(
            api_client,
            self.kube.namespace,
            self.workdir / f"kubelet-{len(self.kubelets)}",
            prometheus=self.prometheus,
            **faults,
        ).start()
        self.kubelets.append(kubelet)
        return kubelet

    def get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] | None = self.kube.get("experiment", name)
        assert obj is not None
        return obj

    def wait(
        self, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 180
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.get(name)
            return obj if check(obj) else None

        found: dict[str, Any] = self.kube.wait_for(
            probe, f"{name}: {what}", timeout=timeout, interval=0.5, operator=self.operator
        )
        return found

    def running(self, name: str, kubelet: LocalKubelet, rate: float = RATE) -> dict[str, Any]:
        """Wait for phase Running, then start traffic through the router."""
        obj = self.wait(name, lambda o: phase(o) == "Running", "phase Running", timeout=120)
        (router,) = kubelet.urls(f"{name}-router")
        self.traffic.append(Traffic(router, rate=rate, seed=len(self.traffic)))
        return obj

    def stop(self) -> None:
        for traffic in self.traffic:
            traffic.stop()
        self.operator.stop()
        if self.exporting:
            self.prometheus.set_targets(OPERATOR_JOB, [])
        for kubelet in self.kubelets:
            kubelet.stop()


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def concluded(obj: dict[str, Any]) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "Concluded":
            return dict(c)
    return {}


def seq(obj: dict[str, Any]) -> int:
    return int(((obj.get("status") or {}).get("lastAction") or {}).get("seq", 0))


def action_events(kube: Any, name: str) -> list[tuple[str, str]]:
    """(reason, event name) of the operator's action Events, in sequence order."""
    events = [e for e in kube.events(name) if ".action-" in e["metadata"]["name"]]
    events.sort(key=lambda e: int(e["metadata"]["name"].rsplit("-", 1)[1]))
    return [(e["reason"], e["metadata"]["name"]) for e in events]


def analyses(obj: dict[str, Any]) -> str | None:
    return ((obj.get("status") or {}).get("analysis") or {}).get("time")


def hold_for(loop: Loop, name: str, checks: int, check: Callable[[dict[str, Any]], None]) -> None:
    """``check`` holds across ``checks`` further analyses."""
    seen: set[str | None] = {analyses(loop.get(name))}
    while len(seen) <= checks:
        obj = loop.wait(name, lambda o: analyses(o) not in seen, "another analysis", timeout=60)
        check(obj)
        seen.add(analyses(obj))
