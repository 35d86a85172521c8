"""The product on a real cluster: kind, the images, the Helm chart, two experiments.

Everything as a user runs it: `helm install` of charts/rankexp (with the bundled
Prometheus), `kubectl apply` of Experiments whose pods run the rankexp-ranker-demo
image, and the simulator as an in-cluster Job calling the router's Service by its DNS
name. Skipped, with the reason, only where no Docker engine can be had at all.
"""

from __future__ import annotations

import calendar
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankexp.local.kind import DockerUnavailable, KindCluster, Prepared, ensure_docker, prepare

#: `RANKEXP_CAPTURE_TESTDATA=1 make e2e` writes the captured objects into gitops/'s
#: testdata (the Argo CD and Flux health tests' inputs); by default they go to a temp dir.
CAPTURE_ENV = "RANKEXP_CAPTURE_TESTDATA"
#: What Argo CD's health and Flux's healthCheckExprs must say of each captured object.
EXPECTED = {
    ("Experiment", "new"): ("Progressing", "Unknown"),
    ("Experiment", "pending"): ("Progressing", "InProgress"),
    ("Experiment", "running"): ("Progressing", "InProgress"),
    ("Experiment", "paused"): ("Suspended", "InProgress"),
    ("Experiment", "awaiting-approval"): ("Suspended", "InProgress"),
    ("Experiment", "promoted"): ("Healthy", "Current"),
    ("Experiment", "inconclusive"): ("Healthy", "Current"),
    ("Experiment", "rolledback"): ("Degraded", "Failed"),
    ("Experiment", "failed"): ("Degraded", "Failed"),
    # setting deletionTimestamp bumps metadata.generation: Flux sees an unobserved one
    ("Experiment", "deleting"): ("Progressing", "InProgress"),
    ("AlertPolicy", "new"): ("Progressing", "Unknown"),
    ("AlertPolicy", "evaluated"): ("Healthy", "Current"),
    ("AlertPolicy", "pending-alert"): ("Healthy", "Current"),
    ("AlertPolicy", "degraded"): ("Degraded", "Failed"),
}

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
    name: str,
    prepared: Prepared,
    treatment_env: list[dict[str, str]],
    *,
    auto_promote: bool = True,
    treatment_model: str = "file:///models/v2",
    max_duration: str = "30m",
    **spec: Any,
) -> dict[str, Any]:
    image = prepared.image("rankexp-ranker-demo")
    body = {
        "apiVersion": "rankexp.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "template": {"image": image, "imagePullPolicy": "IfNotPresent"},
            "variants": [
                {"name": "control", "model": {"uri": "file:///models/v1"}, "weight": 50},
                {
                    "name": "treatment",
                    "model": {"uri": treatment_model},
                    "weight": 50,
                    "env": treatment_env,
                },
            ],  # fmt: skip
            "control": "control",
            "analysis": {
                "interval": "1m",
                "minSamplesPerVariant": 300,
                "maxDuration": max_duration,
                "secondaryMetrics": ["engagement_rate"],
                "guardrails": [
                    {"metric": "latency_p95_ms", "max": 100},
                    {"metric": "error_rate", "max": 0.01},
                ],
            },
            "promotion": {"auto": auto_promote},
            "rollback": {"auto": True},
        },
    }
    body["spec"].update(spec)
    return body


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


def condition(found: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in found.get("conditions") or [] if c["type"] == type_), {})


class Captures:
    """Objects as the cluster has them at a moment worth a GitOps health check; each is
    checked with Argo CD's and Flux's engines at once and written for gitops/'s tests."""

    def __init__(self, cluster: KindCluster, gitops: Any, workdir: Path) -> None:
        self.cluster = cluster
        self.gitops = gitops
        self.workdir = workdir
        self.write_testdata = os.environ.get(CAPTURE_ENV) == "1"
        self.taken: dict[tuple[str, str], dict[str, Any]] = {}

    def take(self, kind: str, name: str, namespace: str, as_: str) -> dict[str, Any]:
        obj = self.cluster.get(kind.lower(), name, namespace)
        assert obj is not None, (kind, name)
        obj["metadata"].pop("managedFields", None)
        argocd, flux = EXPECTED[(kind, as_)]
        health = self.gitops.argocd_health(obj)
        assert health["status"] == argocd, (as_, health, obj.get("status"))
        assert self.gitops.flux_status(obj) == flux, (as_, obj.get("status"))
        self.taken[(kind, as_)] = obj
        folder = (self.gitops.kind_dir(obj) / "testdata") if self.write_testdata else (
            self.workdir / kind)  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{as_}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
        log(f"captured {kind} {as_}: Argo CD {health['status']} ({health['message'][:80]}), "
            f"Flux {flux}")  # fmt: skip
        return obj


def start_traffic(cluster: KindCluster, prepared: Prepared, name: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(simulator_job(name, prepared)))


def stop_traffic(cluster: KindCluster, name: str) -> None:
    time.sleep(15)  # traffic across the switch to the final routing
    progress = cluster.kubectl("logs", "-n", NS, f"job/{name}-traffic", "--tail=1").stdout
    cluster.kubectl("delete", "job", f"{name}-traffic", "-n", NS, "--wait=false", check=False)
    log(f"{name}: simulator: {progress.strip()}")
    requests = int(progress.split("requests=")[1].split()[0])
    failed = int(progress.split("failed=")[1].split()[0])
    # the router rolls and variants scale down during the run; clients see no errors
    assert requests > 0 and failed <= requests // 200, progress


def wait_phase(cluster: KindCluster, name: str, phase: str, timeout: float) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(
        lambda: (s := status(cluster, name)).get("phase") == phase and s, f"{name} {phase}",
        timeout, cluster,
    )  # fmt: skip
    return found


def lease_holder(cluster: KindCluster) -> str:
    lease = cluster.get("lease", "rankexp-operator", SYSTEM) or {}
    holder: str = (lease.get("spec") or {}).get("holderIdentity") or ""
    return holder


def action_reasons(cluster: KindCluster, name: str) -> list[str]:
    events = json.loads(cluster.kubectl("get", "events", "-n", NS, "-o", "json").stdout)["items"]
    mine = [e for e in events if e["involvedObject"]["name"] == name
            and ".action-" in e["metadata"]["name"]]  # fmt: skip
    assert all(e.get("count", 1) == 1 for e in mine)
    mine.sort(key=lambda e: int(e["metadata"]["name"].rsplit("-", 1)[1]))
    return [e["reason"] for e in mine]


def proxied(cluster: KindCluster, service: str, path: str) -> str:
    """GET ``path`` of a Service in the release namespace, through the API server's proxy."""
    result = cluster.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{SYSTEM}/services/{service}/proxy{path}"
    )
    return str(result.stdout)


def evidence_in_cluster(cluster: KindCluster, promoted: dict[str, Any]) -> None:
    """The bundled Prometheus scrapes the operator's evidence (one sample per analysis,
    stamped with its time), and the chart's experiment page draws it."""
    selector = f'{{namespace="{NS}",experiment="ab",metric="ctr"}}'
    query = urllib.parse.urlencode({"query": f"rankexp_analysis_relative_lift{selector}[2h]"})
    last = calendar.timegm(time.strptime(promoted["analysis"]["time"], "%Y-%m-%dT%H:%M:%SZ"))

    def samples() -> list[list[Any]] | None:
        answer = json.loads(proxied(cluster, "rankexp-prometheus:9090", f"/api/v1/query?{query}"))
        result = answer["data"]["result"]
        values = [v for series in result for v in series["values"]]
        return values if any(float(t) == last for t, _ in values) else None

    values = wait_until(samples, "the last analysis in the bundled Prometheus", 60, cluster)
    (series,) = json.loads(proxied(cluster, "rankexp-prometheus:9090", f"/api/v1/query?{query}"))[
        "data"
    ]["result"]
    assert "instance" not in series["metric"], series["metric"]  # one series across replicas
    ctr = next(c for c in promoted["analysis"]["comparisons"]
               if (c["variant"], c["metric"]) == ("treatment", "ctr"))  # fmt: skip
    assert {float(t): float(v) for t, v in values}[last] == ctr["relativeLift"]
    page = proxied(cluster, "rankexp-page:80", f"/experiments/{NS}/ab")
    assert page.count('class="ci-point"') == len(values), page[:2000]
    assert 'id="decision"' in page and "Promoted" in page
    listing = proxied(cluster, "rankexp-page:80", "/")
    assert f"/experiments/{NS}/ab" in listing
    log(f"evidence: {len(values)} analyses of ab in the bundled Prometheus and on the page")


def test_helm_install_then_promote_then_roll_back_then_uninstall(
    cluster: KindCluster, prepared: Prepared, gitops_health: Any, tmp_path: Path
) -> None:
    captures = Captures(cluster, gitops_health, tmp_path)
    cluster.helm(
        "install", RELEASE, str(REPO / "charts" / "rankexp"), "--namespace", SYSTEM,
        "--create-namespace", "--wait", "--timeout", "5m",
        "--set", "prometheus.enabled=true", "--set", "prometheus.scrapeInterval=2s",
        "--set-json", "operator.intervalScale=0.1", "--set", "operator.tickSeconds=2",
        "--set", f"operator.image.tag={prepared.image('rankexp-operator').rsplit(':', 1)[1]}",
        "--set", f"prometheus.image.tag={prepared.image('rankexp-prometheus').rsplit(':', 1)[1]}",
        "--set", "page.enabled=true",
    )  # fmt: skip
    deployments = json.loads(cluster.kubectl("get", "deploy", "-n", SYSTEM, "-o", "json").stdout)
    assert {
        d["metadata"]["name"]: d["status"].get("readyReplicas") for d in deployments["items"]
    } == {
        "rankexp-operator": 2,
        "rankexp-page": 1,
        "rankexp-prometheus": 1,
    }
    pods = cluster.kubectl("get", "pods", "-n", SYSTEM, "-l",
                           "app.kubernetes.io/component=operator", "-o", "name").stdout  # fmt: skip
    operators = {p.split("/", 1)[1] for p in pods.split()}
    leader = wait_until(lambda: lease_holder(cluster), "a leader", 60, cluster)
    assert leader in operators, (leader, operators)
    assert cluster.get("alertpolicy", "rankexp-default", SYSTEM) is not None
    cluster.kubectl("create", "namespace", NS)

    # Experiments that need no traffic: a paused one, one the operator cannot serve,
    # and an A/A whose maxDuration ends it Inconclusive without data
    apply = lambda body: cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))  # noqa: E731
    apply(experiment("paused", prepared, [], paused=True))
    apply(experiment("failed", prepared, [], treatment_model="s3://models/v2"))
    apply(experiment("aa", prepared, [], treatment_model="file:///models/v1", max_duration="1m"))

    # A run that waits for approval, approved through Argo CD's promote action, while
    # the leading operator replica is deleted mid-run (the other one takes over)
    apply(experiment("ab", prepared, [], auto_promote=False))
    wait_until(lambda: status(cluster, "ab").get("phase") == "Pending", "ab Pending", 60, cluster)
    captures.take("Experiment", "ab", NS, "pending")
    wait_phase(cluster, "ab", "Running", 300)
    captures.take("Experiment", "ab", NS, "running")
    start_traffic(cluster, prepared, "ab")
    cluster.kubectl("delete", "pod", leader, "-n", SYSTEM, "--wait=false")
    successor = wait_until(lambda: (h := lease_holder(cluster)) not in ("", leader) and h,
                           "another operator replica holding the Lease", 90, cluster)  # fmt: skip
    log(f"leader {leader} deleted; {successor} took the Lease over")
    wait_until(lambda: condition(status(cluster, "ab"), "Concluded").get("reason")
               == "AwaitingApproval", "ab AwaitingApproval", 600, cluster)  # fmt: skip
    awaiting = captures.take("Experiment", "ab", NS, "awaiting-approval")
    promoted_by_argocd = gitops_health.argocd_action(awaiting, "promote")
    winner = awaiting["status"]["analysis"]["winner"]
    assert promoted_by_argocd["spec"]["promotion"]["approvedVariant"] == winner == "treatment"
    # what Argo CD does with an action's result: a merge patch of the difference
    approval = {"spec": {"promotion": promoted_by_argocd["spec"]["promotion"]}}
    cluster.kubectl("patch", "experiment", "ab", "-n", NS, "--type=merge", "-p",
                    json.dumps(approval))  # fmt: skip
    promoted = wait_phase(cluster, "ab", "Promoted", 120)
    stop_traffic(cluster, "ab")
    captures.take("Experiment", "ab", NS, "promoted")
    assert promoted["winner"] == "treatment"
    assert "approved in spec.promotion.approvedVariant" in promoted["lastAction"]["reason"]
    assert action_reasons(cluster, "ab") == ["RunStarted", "Promoted"]
    analysis = promoted["analysis"]
    assert analysis["decision"] == "Promote" and analysis["pValue"] < 0.05 and analysis["lift"] > 0
    assert all(g["ok"] for g in analysis["guardrails"])
    assert analysis["srmPValue"] > 0.001
    evidence_in_cluster(cluster, promoted)
    # the loser goes to 0 replicas once the router runs the final routing
    wait_until(
        lambda: (
            (cluster.get("deployment", "ab-control", NS) or {}).get("spec", {}).get("replicas") == 0
        ),
        "ab-control scaled to 0",
        120,
        cluster,
    )
    captures.take("Experiment", "paused", NS, "paused")
    captures.take("Experiment", "failed", NS, "failed")
    wait_phase(cluster, "aa", "Inconclusive", 300)
    captures.take("Experiment", "aa", NS, "inconclusive")

    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(experiment(
        "slow", prepared, [{"name": "RANKER_INJECT_LATENCY_MS", "value": "150"}])))  # fmt: skip
    wait_phase(cluster, "slow", "Running", 300)
    start_traffic(cluster, prepared, "slow")
    slow = wait_phase(cluster, "slow", "RolledBack", 600)
    stop_traffic(cluster, "slow")
    captures.take("Experiment", "slow", NS, "rolledback")
    breach = next(g for g in slow["analysis"]["guardrails"] if g["metric"] == "latency_p95_ms")
    assert breach["ok"] is False and breach["value"] > 100
    concluded = condition(slow, "Concluded")
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
    assert conditions["Stalled"]["status"] == "False", conditions
    captures.take("AlertPolicy", "rankexp-default", SYSTEM, "pending-alert")
    quiet = {
        "apiVersion": "rankexp.io/v1alpha1",
        "kind": "AlertPolicy",
        "metadata": {"name": "quiet", "namespace": NS},
        "spec": {"interval": "10s", "rules": [{"name": "never", "expr": "vector(0) > 1"}]},
    }
    broken = {**quiet, "metadata": {"name": "broken", "namespace": NS},
              "spec": {"interval": "10s", "rules": [{"name": "bad", "expr": "sum(("}]}}  # fmt: skip
    apply(quiet)
    apply(broken)

    def policy(name: str, type_: str) -> str:
        found = (cluster.get("alertpolicy", name, NS) or {}).get("status") or {}
        return str(condition(found, type_).get("status"))

    wait_until(lambda: policy("quiet", "Ready") == "True", "quiet evaluated", 60, cluster)
    captures.take("AlertPolicy", "quiet", NS, "evaluated")
    wait_until(lambda: policy("broken", "Degraded") == "True", "broken Degraded", 60, cluster)
    captures.take("AlertPolicy", "broken", NS, "degraded")

    cluster.helm("uninstall", RELEASE, "--namespace", SYSTEM, "--wait")
    crds = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/experiments.rankexp.io" in crds
    kept = cluster.kubectl("get", "experiments", "-n", NS, "-o", "name").stdout.split()
    assert sorted(kept) == [f"experiment.rankexp.io/{n}" for n in
                            ("aa", "ab", "failed", "paused", "slow")]  # fmt: skip
    assert cluster.get("alertpolicy", "rankexp-default", SYSTEM) is not None
    # without an operator: what GitOps tools see of objects nobody serves yet, and of
    # one being deleted (the operator's finalizer holds it)
    apply({**quiet, "metadata": {"name": "unserved", "namespace": NS}})
    captures.take("AlertPolicy", "unserved", NS, "new")
    apply(experiment("unserved", prepared, []))
    captures.take("Experiment", "unserved", NS, "new")
    cluster.kubectl("delete", "experiment", "aa", "-n", NS, "--wait=false")
    captures.take("Experiment", "aa", NS, "deleting")
    assert set(captures.taken) == set(EXPECTED)
