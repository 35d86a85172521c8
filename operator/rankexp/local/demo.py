"""`make demo`: the whole product on a kind cluster, one progress line per step.

1. a Docker engine, kind and helm, the kind node image and rankexp's images (each a
   cached build step that says so);
2. a kind cluster (reused when it exists) with the images loaded, and
   `helm upgrade --install` of charts/rankexp with the bundled Prometheus;
3. an Experiment v1 against v2 applied with kubectl, the simulator as an in-cluster Job
   calling the router by its Service name, and a live line every few seconds
   (traffic, samples, lift, p-value, decision) until the operator decides;
4. the evidence, as `rankexp status` prints it.

The cluster stays up for exploring (the kubeconfig path is printed);
`make demo-down` deletes it. Intervals are scaled (1m -> 6 s) so it ends in minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from rankexp.cli.status import render
from rankexp.local.binaries import cache_root
from rankexp.local.kind import REPO, DockerUnavailable, KindCluster, Prepared, prepare

CLUSTER = "rankexp-demo"
RELEASE = "rankexp"
SYSTEM = "rankexp-system"
NS = "demo"
NAME = "feed-ranking"
FINAL = ("Promoted", "RolledBack", "Inconclusive", "Failed")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def manifests(prepared: Prepared) -> list[dict[str, Any]]:
    image = prepared.image("rankexp-ranker-demo")
    experiment = yaml.safe_load((REPO / "crds" / "samples" / "experiment.yaml").read_text())
    experiment["metadata"] = {"name": NAME, "namespace": NS}
    spec = experiment["spec"]
    spec["template"] = {"image": image, "imagePullPolicy": "IfNotPresent"}
    spec["analysis"]["minSamplesPerVariant"] = 300
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{NAME}-traffic", "namespace": NS},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "simulate",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": [
                                "simulate",
                                "--target",
                                f"http://{NAME}-router.{NS}.svc:8080",
                                "--duration",
                                "1800",
                                "--rate",
                                "50",
                            ],  # fmt: skip
                        }
                    ],
                }
            },
        },
    }
    return [experiment, job]


def tag_of(image: str) -> str:
    return image.rsplit(":", 1)[1]


def live_line(status: dict[str, Any], elapsed: float) -> str:
    traffic = "/".join(str(t.get("weight")) for t in status.get("traffic") or [])
    analysis = status.get("analysis") or {}
    samples = ", ".join(
        f"{v['name']} {v.get('exposures') or 0:.0f}" for v in analysis.get("variants") or []
    )
    lift = analysis.get("lift")
    p = analysis.get("pValue")
    lift_text = f"{100 * lift:+.1f}%" if isinstance(lift, int | float) else "-"
    p_text = f"{p:.2g}" if isinstance(p, int | float) else "-"
    decision = analysis.get("decision") or "-"
    code = analysis.get("reasonCode") or ""
    return (
        f"  {elapsed:5.0f}s  phase {status.get('phase') or '-':<9} traffic {traffic or '-':<7} "
        f"exposures [{samples or '-'}]  lift {lift_text}  p {p_text}  {decision} {code}"
    )


def run(models: Path) -> int:
    start = time.monotonic()
    say("rankexp demo: the operator, the chart and an experiment v1 vs v2 on kind")
    try:
        prepared = prepare(models, say)
    except DockerUnavailable as exc:
        say(f"no Docker engine can be had here: {exc}")
        return 1
    kind = KindCluster(prepared, CLUSTER, cache_root() / "demo", say)
    kind.workdir.mkdir(parents=True, exist_ok=True)
    kind.create(reuse=True)
    step = time.monotonic()
    # helm installs crds/ once and never upgrades them: apply them first, as an upgrade must
    kind.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(REPO / "charts" / "rankexp" / "crds"),
    )
    kind.helm(
        "upgrade", "--install", RELEASE, str(REPO / "charts" / "rankexp"),
        "--namespace", SYSTEM, "--create-namespace", "--wait", "--timeout", "5m",
        "--set", "prometheus.enabled=true", "--set", "prometheus.scrapeInterval=2s",
        "--set-json", "operator.intervalScale=0.1", "--set", "operator.tickSeconds=2",
        "--set", f"operator.image.tag={tag_of(prepared.image('rankexp-operator'))}",
        "--set", f"prometheus.image.tag={tag_of(prepared.image('rankexp-prometheus'))}",
    )  # fmt: skip
    say(f"helm upgrade --install {RELEASE}: ready in {time.monotonic() - step:.0f} s")
    kind.kubectl("create", "namespace", NS, check=False)
    # the previous run's traffic must be gone before the new run starts (same Service name)
    kind.kubectl(
        "delete", "job", f"{NAME}-traffic", "-n", NS, "--ignore-not-found",
        "--cascade=foreground", "--wait",
    )  # fmt: skip
    kind.kubectl("delete", "experiment", NAME, "-n", NS, "--ignore-not-found", "--wait")
    experiment, job = manifests(prepared)
    kind.kubectl("apply", "-f", "-", input=yaml.safe_dump(experiment))
    say(f"kubectl apply: Experiment {NS}/{NAME} (v1 vs v2, ramp 10/25/50, auto promotion)")
    run_start = time.monotonic()
    traffic_started = False
    status: dict[str, Any] = {}
    last = 0.0
    while time.monotonic() - run_start < 1500:
        obj = kind.get("experiment", NAME, NS) or {}
        status = obj.get("status") or {}
        if status.get("phase") == "Running" and not traffic_started:
            kind.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
            say("  all variants ready: simulator Job started (50 feeds/s through the router)")
            traffic_started = True
        if time.monotonic() - last >= 6:
            say(live_line(status, time.monotonic() - run_start))
            last = time.monotonic()
        if status.get("phase") in FINAL:
            break
        time.sleep(2)
    kind.kubectl("delete", "job", f"{NAME}-traffic", "-n", NS, "--wait=false", check=False)
    obj = kind.get("experiment", NAME, NS) or {}
    say("")
    say(render(obj).rstrip())
    say("")
    say(f"demo done in {time.monotonic() - start:.0f} s; the cluster stays up:")
    say(f"  export KUBECONFIG={kind.kubeconfig}")
    say(f"  kubectl get exp -n {NS}     # make demo-down deletes the cluster")
    return 0 if (obj.get("status") or {}).get("phase") == "Promoted" else 1


def down() -> int:
    kind_bin = cache_root() / "tools" / "bin" / "kind"
    if not kind_bin.exists():
        say("no kind binary: nothing to delete")
        return 0
    import subprocess

    result = subprocess.run(
        [str(kind_bin), "delete", "cluster", "--name", CLUSTER], capture_output=True, text=True
    )
    say(result.stderr.strip() or f"deleted {CLUSTER}")
    return result.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rankexp.local.demo", description=__doc__)
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument("--down", action="store_true", help="delete the demo cluster")
    args = parser.parse_args(argv)
    if args.down:
        return down()
    return run(args.models.resolve())


if __name__ == "__main__":
    raise SystemExit(main())
