"""The product on a real cluster: kind, the images, the Helm chart, two experiments.

Everything as a user runs it: `helm install` of charts/rankexp (with the bundled
Prometheus), `kubectl apply` of Experiments whose pods run the rankexp-ranker-demo
image, and the simulator as an in-cluster Job calling the router's Service by its DNS
name. Skipped, with the reason, only where no Docker engine can be had at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankexp.local.kind import DockerUnavailable, KindCluster, Prepared, ensure_docker, prepare

# a cold build of the node image and the images happens in `make e2e`'s prerequisites;
# this timeout covers a cluster, the chart and two experiments
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
RELEASE = "rankexp"
SYSTEM = "rankexp-system"
NS = "experiments"


def log(text: str) -> None:
    print(text, flush=True)


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    try:
        ensure_docker(log)
    except DockerUnavailable as exc:
        pytest.skip(f"no Docker engine can be had here: {exc}")
    return prepare(REPO / "models", log)


@pytest.fixture(scope="module")
def cluster(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindCluster]:
    kind = KindCluster(prepared, "rankexp-e2e", tmp_path_factory.mktemp("kind"), log)
    try:
        kind.create()
        yield kind
    finally:
        kind.delete()


def wait_until(check: Callable[[], Any], what: str, timeout: float, cluster: KindCluster) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pods = cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
            logs = cluster.kubectl(
                "logs", "-n", SYSTEM, "-l", "app.kubernetes.io/component=operator", "--tail=40",
                check=False,
            ).stdout  # fmt: skip
            raise AssertionError(f"timed out after {timeout:.0f} s: {what}\n{pods}\n{logs}")
        time.sleep(3)


def experiment(
    name: str, prepared: Prepared, treatment_env: list[dict[str, str]]
) -> dict[str, Any]:
    image = prepared.image("rankexp-ranker-demo")
    return {
        "apiVersion": "rankexp.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "template": {"image": image, "imagePullPolicy": "IfNotPresent"},
            "variants": [
                {"name": "control", "model": {"uri": "file:///models/v1"}, "weight": 50},
                {
                    "name": "treatment",
                    "model": {"uri": "file:///models/v2"},
                    "weight": 50,
                    "env": treatment_env,
                },
            ],  # fmt: skip
            "control": "control",
            "analysis": {
                "interval": "1m",
                "minSamplesPerVariant": 300,
                "maxDuration": "30m",
                "secondaryMetrics": ["engagement_rate"],
                "guardrails": [
                    {"metric": "latency_p95_ms", "max": 100},
                    {"metric": "error_rate", "max": 0.01},
                ],
            },
            "promotion": {"auto": True},
            "rollback": {"auto": True},
        },
    }


def simulator_job(name: str, prepared: Prepared) -> dict[str, Any]:
    """Ground-truth users from inside the cluster, through the router's Service DNS name."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-traffic", "namespace": NS},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True},
                    "containers": [
                        {
                            "name": "simulate",
                            "image": prepared.image("rankexp-ranker-demo"),
                            "imagePullPolicy": "IfNotPresent",
                            "args": [
                                "simulate",
                                "--target",
                                f"http://{name}-router.{NS}.svc:8080",
                                "--duration",
                                "900",
                                "--rate",
                                "40",
                            ],  # fmt: skip
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                }
            },
        },
    }


def status(cluster: KindCluster, name: str) -> dict[str, Any]:
    obj = cluster.get("experiment", name, NS) or {}
    found: dict[str, Any] = obj.get("status") or {}
    return found


def run_experiment(
    cluster: KindCluster, prepared: Prepared, name: str, env: list[dict[str, str]], end: str
) -> dict[str, Any]:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(experiment(name, prepared, env)))
    wait_until(lambda: status(cluster, name).get("phase") == "Running", f"{name} Running", 300,
               cluster)  # fmt: skip
    log(f"{name}: Running; starting the in-cluster simulator")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(simulator_job(name, prepared)))
    final = wait_until(
        lambda: (s := status(cluster, name)).get("phase") == end and s, f"{name} {end}", 600,
        cluster,
    )  # fmt: skip
    time.sleep(15)  # traffic across the switch to the final routing
    progress = cluster.kubectl("logs", "-n", NS, f"job/{name}-traffic", "--tail=1").stdout
    cluster.kubectl("delete", "job", f"{name}-traffic", "-n", NS, "--wait=false", check=False)
    log(f"{name}: {end}: {final.get('analysis', {}).get('reason', '')[:200]}")
    log(f"{name}: simulator: {progress.strip()}")
    requests = int(progress.split("requests=")[1].split()[0])
    failed = int(progress.split("failed=")[1].split()[0])
    # the router rolls and variants scale down during the run; clients see no errors
    assert requests > 0 and failed <= requests // 200, progress
    result: dict[str, Any] = final
    return result


def test_helm_install_then_promote_then_roll_back_then_uninstall(
    cluster: KindCluster, prepared: Prepared
) -> None:
    cluster.helm(
        "install", RELEASE, str(REPO / "charts" / "rankexp"), "--namespace", SYSTEM,
        "--create-namespace", "--wait", "--timeout", "5m",
        "--set", "prometheus.enabled=true", "--set", "prometheus.scrapeInterval=2s",
        "--set-json", "operator.intervalScale=0.1", "--set", "operator.tickSeconds=2",
        "--set", f"operator.image.tag={prepared.image('rankexp-operator').rsplit(':', 1)[1]}",
        "--set", f"prometheus.image.tag={prepared.image('rankexp-prometheus').rsplit(':', 1)[1]}",
    )  # fmt: skip
    deployments = json.loads(cluster.kubectl("get", "deploy", "-n", SYSTEM, "-o", "json").stdout)
    assert {
        d["metadata"]["name"]: d["status"].get("readyReplicas") for d in deployments["items"]
    } == {
        "rankexp-operator": 1,
        "rankexp-prometheus": 1,
    }
    assert cluster.get("alertpolicy", "rankexp-default", SYSTEM) is not None
    cluster.kubectl("create", "namespace", NS)

    promoted = run_experiment(cluster, prepared, "ab", [], "Promoted")
    assert promoted["winner"] == "treatment"
    analysis = promoted["analysis"]
    assert analysis["decision"] == "Promote" and analysis["pValue"] < 0.05 and analysis["lift"] > 0
    assert all(g["ok"] for g in analysis["guardrails"])
    assert analysis["srmPValue"] > 0.001
    # the loser goes to 0 replicas once the router runs the final routing
    wait_until(
        lambda: (
            (cluster.get("deployment", "ab-control", NS) or {}).get("spec", {}).get("replicas") == 0
        ),
        "ab-control scaled to 0",
        120,
        cluster,
    )

    slow = run_experiment(
        cluster, prepared, "slow", [{"name": "RANKER_INJECT_LATENCY_MS", "value": "150"}],
        "RolledBack",
    )  # fmt: skip
    breach = next(g for g in slow["analysis"]["guardrails"] if g["metric"] == "latency_p95_ms")
    assert breach["ok"] is False and breach["value"] > 100
    concluded = next(c for c in slow["conditions"] if c["type"] == "Concluded")
    assert concluded["reason"] == "RolledBack" and "latency_p95_ms" in concluded["message"]

    # the chart's default AlertPolicy is evaluated in the cluster (RBAC, Prometheus) and
    # has seen the slow treatment: high_latency pending (for: 5m) or firing for it
    def slow_alert() -> dict[str, Any] | None:
        policy = (cluster.get("alertpolicy", "rankexp-default", SYSTEM) or {}).get("status") or {}
        for alert in policy.get("alerts") or []:
            labels = alert["labels"]
            if alert["rule"] == "high_latency" and labels.get("experiment") == "slow":
                return {"policy": policy, "alert": alert}
        return None

    seen = wait_until(slow_alert, "high_latency for the slow treatment", 120, cluster)
    assert seen["alert"]["labels"]["variant"] == "treatment"
    assert seen["alert"]["labels"]["namespace"] == NS and seen["alert"]["value"] > 0.1
    assert seen["alert"]["state"] in ("pending", "firing")
    conditions = {c["type"]: c for c in seen["policy"]["conditions"]}
    assert conditions["Ready"]["status"] == "True", conditions
    assert conditions["Degraded"]["status"] == "False", conditions

    cluster.helm("uninstall", RELEASE, "--namespace", SYSTEM, "--wait")
    crds = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/experiments.rankexp.io" in crds
    kept = cluster.kubectl("get", "experiments", "-n", NS, "-o", "name").stdout.split()
    assert sorted(kept) == ["experiment.rankexp.io/ab", "experiment.rankexp.io/slow"]
    assert cluster.get("alertpolicy", "rankexp-default", SYSTEM) is not None
