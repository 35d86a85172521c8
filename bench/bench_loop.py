"""How long the closed loop takes to decide v1 against v2, at real (unscaled) intervals.

Everything real on 127.0.0.1: etcd + kube-apiserver (``make envtest``), Debian's
Prometheus scraping every second, the operator as ``python -m rankexp``, ranker and
router processes run by the kubelet stand-in (``rankexp.local.kubelet``), and the
ground-truth simulator sending traffic through the router at its default rate.

Two configurations:

* ``defaults``: the CRD's defaults (interval 1m, sequential, alpha 0.05,
  minSamplesPerVariant 1000, no traffic steps), 50/50, promotion.auto;
* ``sample-ramp``: the same plus the sample's ``traffic.steps: [10, 25, 50]``.

Prints, per configuration: time from ``startedAt`` to the decision, the number of
analyses it took, the exposures per variant at the decision, and the verdict.
Run with ``make bench-loop`` (several minutes: the intervals are real).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ranker.world.ground_truth import make_world
from ranker.world.simulate import DEFAULT_RATE, Simulator
from rankexp.api import GROUP, VERSION
from rankexp.local.binaries import ensure_binaries
from rankexp.local.cluster import LocalCluster
from rankexp.local.kubelet import LocalKubelet
from rankexp.local.process import Process
from rankexp.local.prom import LocalPrometheus

REPO = Path(__file__).resolve().parents[1]


def manifest(name: str, models: Path, steps: list[int] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "template": {"image": "rankexp/ranker:dev"},
        "variants": [
            {"name": "control", "model": {"uri": f"file://{models / 'v1'}"}, "weight": 50},
            {"name": "treatment", "model": {"uri": f"file://{models / 'v2'}"}, "weight": 50},
        ],
        "control": "control",
        "promotion": {"auto": True},
        "rollback": {"auto": True},
    }
    if steps:
        spec["traffic"] = {"steps": steps}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": spec,
    }


def seconds(a: str, b: str) -> float:
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return (parse(b) - parse(a)).total_seconds()


def run_one(
    cluster: LocalCluster,
    prom: LocalPrometheus,
    api: Any,
    models: Path,
    name: str,
    steps: list[int] | None,
    rate: float,
    workdir: Path,
    timeout: float,
) -> dict[str, Any]:
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    namespace = name
    cluster.kubectl("create", "namespace", namespace)
    kubelet = LocalKubelet(api, namespace, workdir / name, prometheus=prom).start()
    env = {**cluster.env(), "RANKEXP_READINESS_INTERVAL": "2", "PYTHONUNBUFFERED": "1"}
    operator = Process(
        f"operator-{name}",
        [sys.executable, "-m", "rankexp", "--prometheus-url", prom.url,
         "--standalone", "--namespace", namespace],
        log_path=workdir / f"operator-{name}.log",
        env=env,
        cwd=REPO,
    )  # fmt: skip
    operator.start()
    sim: Simulator | None = None
    thread: threading.Thread | None = None
    looks: set[str] = set()
    try:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "experiments", manifest(name, models, steps)
        )
        deadline = time.monotonic() + timeout
        while True:
            obj = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "experiments", name
            )
            status = obj.get("status") or {}
            if status.get("phase") == "Running" and sim is None:
                (router,) = kubelet.urls(f"{name}-router")
                sim = Simulator(router, make_world(), num_items=20, rate=rate, seed=1)
                thread = threading.Thread(
                    target=lambda s=sim: asyncio.run(
                        s.run(duration=timeout, progress_every=3600, out=io.StringIO())
                    ),
                    daemon=True,
                )
                thread.start()
            analysis = status.get("analysis") or {}
            if analysis.get("time"):
                looks.add(analysis["time"])
            if status.get("phase") in ("Promoted", "RolledBack", "Inconclusive"):
                break
            if status.get("phase") == "Failed":
                raise RuntimeError(f"{name} failed: {status.get('conditions')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: no decision after {timeout:.0f} s")
            operator.ensure_running()
            time.sleep(1.0)
        action = status["lastAction"]
        exposures = {v["name"]: v.get("exposures") for v in analysis.get("variants") or []}
        return {
            "config": name,
            "decided_s": seconds(status["startedAt"], action["time"]),
            "looks": len(looks),
            "phase": status["phase"],
            "winner": status.get("winner"),
            "stages": len(status.get("trafficHistory") or []) - 1,
            "exposures": exposures,
            "lift": analysis.get("lift"),
            "p": analysis.get("pValue"),
        }
    finally:
        if sim is not None:
            sim.stop.set()
        if thread is not None:
            thread.join(timeout=30)
        operator.stop()
        kubelet.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE)
    parser.add_argument("--only", choices=["defaults", "sample-ramp"], default=None)
    parser.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args()
    args.models = args.models.resolve()
    configs = [("defaults", None), ("sample-ramp", [10, 25, 50])]
    if args.only:
        configs = [c for c in configs if c[0] == args.only]
    workdir = Path(tempfile.mkdtemp(prefix="rankexp-bench-loop-"))
    rows = []
    try:
        with LocalCluster(ensure_binaries()) as cluster, LocalPrometheus() as prom:
            from kubernetes import config

            cluster.kubectl("apply", "-f", str(REPO / "crds"))
            for crd in ("experiments.rankexp.io", "alertpolicies.rankexp.io"):
                cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}")
            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
            for name, steps in configs:
                print(f"running {name} (steps {steps or 'none'}) at {args.rate:g} feeds/s ...")
                row = run_one(
                    cluster, prom, api, args.models, name, steps, args.rate, workdir, args.timeout
                )
                rows.append(row)
                print(f"  {row}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(
        "| config | traffic steps | decided after startedAt | analyses | outcome | "
        "exposures per variant at the decision | lift | p |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        exp = ", ".join(f"{k} {v:.0f}" for k, v in r["exposures"].items() if v is not None)
        steps = "10, 25, 50" if r["config"] == "sample-ramp" else "none"
        print(
            f"| {r['config']} | {steps} | {r['decided_s']:.0f} s | {r['looks']} | "
            f"{r['phase']} {r['winner'] or ''} | {exp} | {r['lift']:+.1%} | {r['p']:.2g} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
