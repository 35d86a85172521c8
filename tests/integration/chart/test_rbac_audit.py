"""Least privilege, measured, and secrets kept out of everything the operator writes.

A kube-apiserver of its own, with an audit log (level Metadata). The chart's RBAC and
ServiceAccount are applied as `helm template` renders them, and the operator runs as that
ServiceAccount (a token from the TokenRequest API) with the chart's own arguments. It
then does everything it does for a user:
  * an Experiment of three variants runs (children created by server-side apply, the
    routing ConfigMap, Events, status), one variant is removed (its children deleted),
    and the Experiment is deleted (kopf's finalizer removed);
  * an AlertPolicy fires and notifies a signed webhook whose URL and HMAC key come from a
    Secret, then is deleted.
Every request of the ServiceAccount in the audit log is a (group, resource, verb); the
test asserts none was refused (403) and that every verb the ClusterRole and the leader
Role grant was used (nothing unused is granted). A server-side apply that creates its
object answers 201 and needs `create` as well as `patch`, so a 201 to a patch counts as
both.

The secret values (URL, its path, HMAC key) must appear nowhere: the objects' status,
the Events of the namespace, the operator's log, `rankexp status` output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankexp.local.cluster import LocalCluster
from rankexp.local.kubelet import LocalKubelet
from rankexp.local.process import free_ports
from rankexp.local.prom import LocalPrometheus

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "rankexp"
SYSTEM = "rankexp-system"
TEAM = "team"
SA_USER = f"system:serviceaccount:{SYSTEM}:rankexp-operator"
HOOK_PATH = "/hook/S3CRET-audit-path"
HMAC_KEY = "HMAC-audit-key-0123456789"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class Receiver:
    """A webhook receiver on 127.0.0.1 that records the paths it was sent to."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.paths.append(self.path)
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def audited(audited_cluster: Any) -> tuple[LocalCluster, Path]:
    cluster: tuple[LocalCluster, Path] = audited_cluster(AUDIT_POLICY)
    return cluster


def render(helm: Path, *templates: str) -> list[dict[str, Any]]:
    argv = [str(helm), "template", "rankexp", str(CHART), "--namespace", SYSTEM,
            "--kube-version", "1.36.3", *[a for t in templates for a in ("-s", t)]]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def service_account_kubeconfig(cluster: LocalCluster, path: Path) -> Path:
    token = cluster.kubectl(
        "create", "token", "rankexp-operator", "-n", SYSTEM, "--duration=2h"
    ).stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "rankexp-operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "rankexp-operator"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def operator_args(helm: Path, prometheus_url: str, liveness_port: int) -> list[str]:
    """The chart's Deployment arguments, with this host's Prometheus and liveness."""
    (deployment,) = [d for d in render(helm, "templates/deployment.yaml")
                     if d["kind"] == "Deployment"]  # fmt: skip
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    kept = [a for a in args if not a.startswith(("--prometheus-url", "--liveness",
                                                 "--interval-scale", "--serve"))]  # fmt: skip
    (serve,) = free_ports(1)
    return [*kept, f"--prometheus-url={prometheus_url}", "--interval-scale=0.05",
            f"--serve=127.0.0.1:{serve}",
            f"--liveness=http://127.0.0.1:{liveness_port}/healthz"]  # fmt: skip


def wait(check: Callable[[], Any], what: str, operator: subprocess.Popen[bytes], log: Path,
         timeout: float = 120) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if operator.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise AssertionError(f"waiting for {what} (operator rc {operator.poll()}):\n{tail}")
        time.sleep(0.5)


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def used(audit_log: Path) -> tuple[set[tuple[str, str, str]], list[str]]:
    """(group, resource[/subresource], verb) of the ServiceAccount's requests; refusals."""
    out: set[tuple[str, str, str]] = set()
    refused: list[str] = []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username") != SA_USER or "objectRef" not in event:
            continue
        ref = event["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        group = ref.get("apiGroup", "")
        code = event.get("responseStatus", {}).get("code", 0)
        if code == 403:
            refused.append(f"{event['verb']} {group}/{resource} {ref.get('namespace', '')}")
            continue
        out.add((group, resource, event["verb"]))
        if event["verb"] == "patch" and code == 201:  # server-side apply that created
            out.add((group, resource, "create"))
    return out, refused


def experiment(name: str, models: dict[str, Path]) -> dict[str, Any]:
    variants = [("control", "v1", 34), ("t1", "v2", 33), ("t2", "v2", 33)]
    return {
        "apiVersion": "rankexp.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": TEAM},
        "spec": {
            "template": {"image": "rankexp/ranker:dev"},
            "variants": [
                {"name": n, "model": {"uri": f"file://{models[m]}"}, "weight": w}
                for n, m, w in variants
            ],  # fmt: skip
            "control": "control",
            "analysis": {"interval": "1m", "minSamplesPerVariant": 100000},
        },
    }


def alert_policy(receiver: Receiver) -> dict[str, Any]:
    return {
        "apiVersion": "rankexp.io/v1alpha1",
        "kind": "AlertPolicy",
        "metadata": {"name": "always", "namespace": TEAM},
        "spec": {
            "interval": "2s",
            "rules": [{"name": "always", "expr": "vector(1) > 0", "for": "0s"}],
            "receivers": [{
                "name": "hook", "type": "webhook",
                "secretRef": {"name": "alerts", "key": "url"},
                "hmacSecretRef": {"name": "alerts", "key": "hmac"},
            }],
        },
    }  # fmt: skip


def test_the_operator_uses_every_verb_it_is_granted_and_leaks_no_secret(
    audited: tuple[LocalCluster, Path],
    helm: Path,
    prometheus: LocalPrometheus,
    model_dirs: dict[str, Path],
    tmp_path: Path,
) -> None:
    from kubernetes import config as kube_config

    cluster, audit_log = audited
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    for crd in ("experiments.rankexp.io", "alertpolicies.rankexp.io"):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{crd}")
    cluster.kubectl("create", "namespace", SYSTEM)
    cluster.kubectl("create", "namespace", TEAM)
    rbac = render(helm, "templates/rbac.yaml", "templates/serviceaccount.yaml")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    rules = [r for d in rbac if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]

    receiver = Receiver()
    secret_url = receiver.url + HOOK_PATH
    secrets = (secret_url, HOOK_PATH, HMAC_KEY)
    literals = [f"--from-literal=url={secret_url}", f"--from-literal=hmac={HMAC_KEY}"]
    cluster.kubectl("create", "secret", "generic", "alerts", "-n", TEAM, *literals)
    api = kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    kubelet = LocalKubelet(api, TEAM, tmp_path / "kubelet", prometheus=prometheus).start()
    (liveness,) = free_ports(1)
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(service_account_kubeconfig(cluster, tmp_path / "sa")),
           "RANKEXP_READINESS_INTERVAL": "1", "PYTHONUNBUFFERED": "1",
           # the downward API's values in the chart: the Lease's holder and namespace
           "POD_NAME": "rankexp-operator-0", "POD_NAMESPACE": SYSTEM}  # fmt: skip
    with log.open("ab") as out:
        operator = subprocess.Popen(
            [sys.executable, "-m", "rankexp", *operator_args(helm, prometheus.url, liveness)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(experiment("audit", model_dirs)))
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(alert_policy(receiver)))

        def get(kind: str, name: str) -> dict[str, Any]:
            result = cluster.kubectl("get", kind, name, "-n", TEAM, "-o", "json", check=False)
            return json.loads(result.stdout) if result.returncode == 0 else {}

        wait(lambda: get("experiment", "audit").get("status", {}).get("phase") == "Running",
             "the Experiment Running", operator, log, 180)  # fmt: skip
        wait(lambda: HOOK_PATH in receiver.paths, "the webhook notified", operator, log)
        wait(lambda: get("alertpolicy", "always").get("status", {}).get("firingCount") == 1,
             "the alert firing in status", operator, log)  # fmt: skip

        remove = [{"op": "remove", "path": "/spec/variants/2"},
                  {"op": "replace", "path": "/spec/variants/0/weight", "value": 50},
                  {"op": "replace", "path": "/spec/variants/1/weight", "value": 50}]  # fmt: skip
        cluster.kubectl("patch", "experiment", "audit", "-n", TEAM, "--type=json",
                        "-p", json.dumps(remove))  # fmt: skip
        wait(lambda: not get("deployment", "audit-t2") and not get("service", "audit-t2"),
             "the removed variant's children deleted", operator, log)  # fmt: skip

        status_cli = subprocess.run(
            [sys.executable, "-m", "rankexp.cli.commands", "status", "audit", "-n", TEAM,
             "--kubeconfig", str(cluster.kubeconfig)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        written = json.dumps([get("experiment", "audit"), get("alertpolicy", "always")])
        events = cluster.kubectl("get", "events", "-n", TEAM, "-o", "json").stdout

        cluster.kubectl("delete", "experiment", "audit", "-n", TEAM, "--wait=false")
        cluster.kubectl("delete", "alertpolicy", "always", "-n", TEAM, "--wait=false")
        wait(lambda: not get("experiment", "audit") and not get("alertpolicy", "always"),
             "both deleted (the operator removed its finalizers)", operator, log)  # fmt: skip
    finally:
        operator.terminate()
        operator.wait(30)
        kubelet.stop()
        receiver.stop()

    operator_log = log.read_text(errors="replace")
    for secret in secrets:
        for where, text in (
            ("status", written),
            ("Events", events),
            ("the operator log", operator_log),
            ("rankexp status", status_cli),
        ):
            assert secret not in text, f"a secret in {where}"  # fmt: skip
    assert "audit" in status_cli and "control" in status_cli

    time.sleep(1)  # the audit backend flushes in batches
    seen, refused = used(audit_log)
    assert refused == [], f"the Role lacks: {refused}"
    unused = granted(rules) - seen
    assert unused == set(), f"granted but never used: {sorted(unused)}"
