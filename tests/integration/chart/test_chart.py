"""The Helm chart: helm lint, helm template validated by the real API server, and
helm install / upgrade / uninstall into the local control plane.

There are no pods here (no kubelet): the objects are what is checked; the kind e2e
runs them. The prometheus-operator CRDs (PodMonitor, PrometheusRule) come from the
prometheus-operator Go module, so those templates are validated against their real
schemas too.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "rankexp"
KUBE_VERSION = "1.36.3"
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
ALL_ON = [
    "--set", "prometheus.enabled=true", "--set", "serviceMonitor.enabled=true",
    "--set", "prometheusRule.enabled=true", "--set", "page.enabled=true",
]  # fmt: skip


def run(
    helm: Path, *args: str, cluster: Any = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if cluster is not None:
        env["KUBECONFIG"] = str(cluster.kubeconfig)
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, env=env, check=check, timeout=300
    )


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    out = run(helm, "template", "rankexp", str(CHART), "--namespace", "rankexp-system",
              "--kube-version", KUBE_VERSION, *args).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def monitoring_crds(kube_cluster: Any) -> Any:
    """PodMonitor and PrometheusRule CRDs from the prometheus-operator module."""
    got = subprocess.run(
        ["go", "mod", "download", "-json", PROMETHEUS_OPERATOR],
        capture_output=True, text=True, check=True, cwd=REPO / "tools" / "kind", timeout=600,
    )  # fmt: skip
    crd_dir = Path(json.loads(got.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    for kind in ("podmonitors", "prometheusrules"):
        kube_cluster.kubectl(
            "apply", "--server-side", "-f", str(crd_dir / f"monitoring.coreos.com_{kind}.yaml")
        )
        kube_cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{kind}.monitoring.coreos.com"
        )
    return kube_cluster


def test_helm_lint(helm: Path) -> None:
    result = run(helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *ALL_ON)
    assert "0 chart(s) failed" in result.stdout


def test_every_rendered_object_is_valid_for_the_api_server(
    helm: Path, crds: Any, monitoring_crds: Any
) -> None:
    """Server-side dry runs: the API server's own schema checks (and the CRDs' for the
    AlertPolicy, PodMonitor and PrometheusRule)."""
    for namespace in ("rankexp-system", "team-a"):
        crds.kubectl("create", "namespace", namespace, check=False)
    for values in ([], ALL_ON, ["--set", "operator.watchNamespace=team-a"]):
        docs = render(helm, *values)
        text = yaml.safe_dump_all(docs)
        result = crds.kubectl("apply", "--dry-run=server", "-f", "-", input=text, check=False)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == len(docs)


def test_defaults_and_options(helm: Path) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in render(helm))
    assert kinds == [
        ("AlertPolicy", "rankexp-default"),
        ("ClusterRole", "rankexp-operator"),
        ("ClusterRoleBinding", "rankexp-operator"),
        ("ConfigMap", "rankexp-dashboard"),
        ("Deployment", "rankexp-operator"),
        ("Role", "rankexp-operator-leader"),
        ("RoleBinding", "rankexp-operator-leader"),
        ("Service", "rankexp-operator-metrics"),
        ("ServiceAccount", "rankexp-operator"),
    ]
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(helm, *ALL_ON)}
    operator = docs[("Deployment", "rankexp-operator")]["spec"]
    # two replicas, one Lease: a rolling update hands the Lease over
    assert operator["replicas"] == 2 and operator["strategy"]["type"] == "RollingUpdate"
    (container,) = operator["template"]["spec"]["containers"]
    assert "--prometheus-url=http://rankexp-prometheus.rankexp-system.svc:9090" in container["args"]
    assert {"--leader-elect", "--serve=0.0.0.0:8080"} <= set(container["args"])
    assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    anti = operator["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"][
        "topologyKey"] == "kubernetes.io/hostname"  # fmt: skip
    single = {
        (d["kind"], d["metadata"]["name"]): d
        for d in render(
            helm, "--set", "operator.replicas=1", "--set", "operator.leaderElection.enabled=false"
        )
    }
    operator = single[("Deployment", "rankexp-operator")]["spec"]
    assert operator["replicas"] == 1 and operator["strategy"]["type"] == "Recreate"
    assert "--leader-elect" not in operator["template"]["spec"]["containers"][0]["args"]
    assert ("Role", "rankexp-operator-leader") not in single
    refused = run(helm, "template", "rankexp", str(CHART), "--kube-version", KUBE_VERSION,
                  "--set", "operator.leaderElection.enabled=false", check=False)  # fmt: skip
    assert refused.returncode != 0 and "needs operator.leaderElection.enabled" in refused.stderr
    refused = run(helm, "template", "rankexp", str(CHART), "--kube-version", KUBE_VERSION,
                  "--set", "operator.leaderElection.renewDeadline=20", check=False)  # fmt: skip
    assert refused.returncode != 0 and "leaseDuration > renewDeadline" in refused.stderr
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert operator["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    dashboard = docs[("ConfigMap", "rankexp-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["rankexp-ranking.json"])["panels"]
    config = yaml.safe_load(docs[("ConfigMap", "rankexp-prometheus")]["data"]["prometheus.yml"])
    relabel = config["scrape_configs"][0]["relabel_configs"]
    targets = {r.get("target_label"): r.get("source_labels") for r in relabel}
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]
    assert targets["experiment"] == ["__meta_kubernetes_pod_label_rankexp_io_experiment"]
    # the operator is scraped too (its evidence series), through the headless Service's
    # DNS, keeping one series per Experiment across replicas (no instance label)
    operator_job = next(j for j in config["scrape_configs"] if j["job_name"] == "rankexp-operator")
    (sd,) = operator_job["dns_sd_configs"]
    assert sd["names"] == ["rankexp-operator-metrics.rankexp-system.svc"] and sd["port"] == 8080
    (drop,) = operator_job["metric_relabel_configs"]
    assert (drop["target_label"], drop["replacement"]) == ("instance", "")
    service = docs[("Service", "rankexp-operator-metrics")]["spec"]
    assert service["clusterIP"] == "None" and service["selector"][
        "app.kubernetes.io/component"] == "operator"  # fmt: skip
    monitor = docs[("PodMonitor", "rankexp-operator")]["spec"]
    assert monitor["podMetricsEndpoints"][0]["port"] == "http"
    rules = docs[("PrometheusRule", "rankexp-ranking")]["spec"]["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == ["high_latency", "high_error_rate", "low_cache_hit",
                                           "model_drift"]  # fmt: skip
    role = render(helm, "--set", "operator.watchNamespace=team-a")
    scoped = {(d["kind"], d["metadata"].get("namespace")) for d in role if "Role" in d["kind"]}
    assert scoped == {("Role", "team-a"), ("RoleBinding", "team-a"), ("Role", "rankexp-system"),
                      ("RoleBinding", "rankexp-system")}  # fmt: skip


def test_the_rbac_grants_only_what_the_operator_uses(helm: Path) -> None:
    role = next(d for d in render(helm) if d["kind"] == "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any(verb in ("*", "update", "deletecollection") for _, _, verb in granted)
    assert not any(resource in ("pods", "*") for _, resource, _ in granted)
    leader = next(d for d in render(helm) if d["kind"] == "Role")
    assert leader["metadata"]["namespace"] == "rankexp-system"
    assert leader["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                "verbs": ["get", "create", "update"]}]  # fmt: skip
    # receivers' Secrets are read by name only
    assert {verb for _, resource, verb in granted if resource == "secrets"} == {"get"}
    assert ("rankexp.io", "experiments/status", "patch") in granted
    assert ("rankexp.io", "experiments", "update") not in granted  # never writes spec


def test_the_page_is_optional_and_only_reads(helm: Path) -> None:
    """page.enabled: the experiment page's Deployment, Service, ServiceAccount and a role
    that may only read Experiments and Events; nothing of it by default."""
    assert not [d for d in render(helm) if "-page" in d["metadata"]["name"]]
    for values, kind, namespace in (
        (ALL_ON, "ClusterRole", None),
        (["--set", "page.enabled=true", "--set", "operator.watchNamespace=team-a",
          "--set", "operator.prometheusUrl=http://prom.monitoring:9090"], "Role", "team-a"),
    ):  # fmt: skip
        docs = {(d["kind"], d["metadata"]["name"]): d for d in render(helm, *values)}
        page = {k: d for k, d in docs.items() if k[1] == "rankexp-page"}
        assert sorted(page) == sorted([("ServiceAccount", "rankexp-page"), (kind, "rankexp-page"),
            (f"{kind}Binding", "rankexp-page"), ("Deployment", "rankexp-page"),
            ("Service", "rankexp-page")])  # fmt: skip
        role = page[(kind, "rankexp-page")]
        assert role["metadata"].get("namespace") == namespace
        granted = {
            (group, resource, verb)
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
        assert {verb for _, _, verb in granted} <= {"get", "list", "watch"}
        assert {(g, r) for g, r, _ in granted} == {("rankexp.io", "experiments"), ("", "events")}
        binding = page[(f"{kind}Binding", "rankexp-page")]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rankexp-page",
                                        "namespace": "rankexp-system"}]  # fmt: skip
        assert binding["roleRef"]["name"] == "rankexp-page"
        spec = page[("Deployment", "rankexp-page")]["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "rankexp-page"
        (container,) = spec["containers"]
        command = container["command"]
        assert command[:3] == ["python3", "-m", "rankexp.page"]
        assert {"--in-cluster", "--listen=0.0.0.0:8080"} <= set(command)
        assert container["image"] == docs[("Deployment", "rankexp-operator")]["spec"][
            "template"]["spec"]["containers"][0]["image"]  # fmt: skip
        assert container["securityContext"]["readOnlyRootFilesystem"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        service = page[("Service", "rankexp-page")]["spec"]
        assert service["ports"][0]["targetPort"] == "http"
        if namespace is None:
            assert "--all-namespaces" in command
            assert "--prometheus-url=http://rankexp-prometheus.rankexp-system.svc:9090" in command
        else:
            assert "--namespace=team-a" in command
            assert "--prometheus-url=http://prom.monitoring:9090" in command


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("operator.intervalScale=0", "intervalScale"),
        ("operator.logLevel=loud", "logLevel"),
        ("prometheus.scrapeInterval=often", "scrapeInterval"),
        ("nonsense=1", "nonsense"),
        ("page.refreshSeconds=-1", "refreshSeconds"),
    ],
)
def test_values_schema_rejects_bad_values(helm: Path, value: str, message: str) -> None:
    result = run(helm, "template", "rankexp", str(CHART), "--kube-version", KUBE_VERSION,
                 "--set", value, check=False)  # fmt: skip
    assert result.returncode != 0 and message in result.stderr


@pytest.fixture
def release(helm: Path, crds: Any) -> Iterator[str]:
    namespace = "chart-install"
    crds.kubectl("create", "namespace", namespace, check=False)
    yield namespace
    run(helm, "uninstall", "rankexp", "--namespace", namespace, cluster=crds, check=False)


def test_install_upgrade_uninstall_keeps_the_crds(helm: Path, crds: Any, release: str) -> None:
    install = run(helm, "install", "rankexp", str(CHART), "--namespace", release, cluster=crds,
                  check=False)  # fmt: skip
    assert install.returncode == 0, install.stderr
    assert "rankexp 0.1.0 is installed" in install.stdout  # NOTES.txt
    deployment = crds.kubectl_json("get", "deployment", "rankexp-operator", "-n", release)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "rankexp-operator"
    policy = crds.kubectl_json("get", "alertpolicy", "rankexp-default", "-n", release)
    assert len(policy["spec"]["rules"]) == 4

    upgrade = run(
        helm, "upgrade", "rankexp", str(CHART), "--namespace", release,
        "--set-json", "operator.intervalScale=0.5", cluster=crds, check=False,
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    deployment = crds.kubectl_json("get", "deployment", "rankexp-operator", "-n", release)
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--interval-scale=0.5" in args
    assert deployment["metadata"]["generation"] == 2

    run(helm, "uninstall", "rankexp", "--namespace", release, cluster=crds)
    names = crds.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/experiments.rankexp.io" in names
    assert "customresourcedefinition.apiextensions.k8s.io/alertpolicies.rankexp.io" in names
    gone = crds.kubectl("get", "deployment", "rankexp-operator", "-n", release, check=False)
    assert gone.returncode != 0
    # the default AlertPolicy is kept (the operator's finalizer needs the operator) and a
    # new install adopts it
    crds.kubectl_json("get", "alertpolicy", "rankexp-default", "-n", release)
    again = run(helm, "install", "rankexp", str(CHART), "--namespace", release, cluster=crds,
                check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    run(helm, "uninstall", "rankexp", "--namespace", release, cluster=crds)
