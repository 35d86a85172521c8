"""Helpers for the operator's integration tests: CRDs installed once, one namespace per
test, and the operator run for real as ``python -m rankexp --standalone --namespace NS``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from rankexp.runtime.main import _loopback_port

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


class Kube:
    """kubectl (the real client) against the session's cluster, in one namespace."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.cluster.kubectl(
            "-n", self.namespace, *args, input=input, check=check
        )
        return result

    def apply(
        self, manifest: dict[str, Any] | str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.kubectl("get", kind, name, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def list_objects(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.kubectl(*args).stdout)["items"]
        return items

    def names(self, kind: str, selector: str) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.list_objects(kind, selector))

    def patch(self, kind: str, name: str, patch: Any, type_: str = "merge") -> None:
        self.kubectl("patch", kind, name, "--type", type_, "-p", json.dumps(patch))

    def wait_for(self, check: Callable[[], T | None], what: str, **kwargs: Any) -> T:
        return wait_for(check, what, **kwargs)

    def mark_ready(self, name: str, observed: int | None = None) -> None:
        """Play the Deployment controller for Deployment ``name``: every replica of its
        template is ready, as of generation ``observed`` (default: its current one)."""
        deployment = self.get("deployment", name)
        assert deployment is not None, name
        replicas = deployment["spec"]["replicas"]
        generation = deployment["metadata"]["generation"] if observed is None else observed
        status = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        self.kubectl(
            "patch", "deployment", name, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}),
        )  # fmt: skip

    def events(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.list_objects("events")
            if e["involvedObject"].get("name") == name
            and (reason is None or e.get("reason") == reason)
        ]


class OperatorProcess:
    """The operator as a subprocess with its own log file; stopped by the fixture."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.liveness_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        #: more `python -m rankexp` flags and environment, e.g. --prometheus-url
        self.extra_args: list[str] = []
        self.env: dict[str, str] = {}

    def start(self) -> OperatorProcess:
        assert self.proc is None, "already running"
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "RANKEXP_READINESS_INTERVAL": "2",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rankexp",
                    "--standalone",
                    "--namespace",
                    self.namespace,
                    "--liveness",
                    f"http://127.0.0.1:{self.liveness_port}/healthz",
                    "--verbose",
                    *self.extra_args,
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when a node dies."""
        self.stop(signal.SIGKILL)

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


_handed_out: set[int] = set()


def _free_port() -> int:
    """A port for an operator's kopf liveness endpoint, which a replica binds only once it
    leads, maybe a minute later: as the operator picks its own (below the ephemeral range,
    so no ranker the kubelet stand-in starts meanwhile can take it; seen once with a
    bind(0) port: kopf's health reporter failed and the new leader gave the Lease up)."""
    while (port := _loopback_port()) in _handed_out:
        pass
    _handed_out.add(port)
    return port


def wait_for(
    check: Callable[[], T | None],
    what: str,
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    operator: OperatorProcess | None = None,
) -> T:
    """Poll until ``check`` returns something truthy and return it."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if operator is not None and operator.proc is not None and not operator.alive():
            raise AssertionError(
                f"operator exited while waiting for {what}:\n{operator.log_tail()}"
            )
        if time.monotonic() > deadline:
            log = f"\n--- operator log:\n{operator.log_tail()}" if operator else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{log}")
        time.sleep(interval)


@pytest.fixture
def kube(crds: Any, request: pytest.FixtureRequest) -> Iterator[Kube]:
    """A fresh namespace for one test (deleted afterwards; without a namespace controller
    it only goes Terminating, which is harmless)."""
    base = request.node.name.lower().replace("_", "-")
    base = "".join(c for c in base if c.isalnum() or c == "-")[:40].strip("-")
    namespace = f"{base}-{uuid.uuid4().hex[:6]}"
    crds.kubectl("create", "namespace", namespace)
    yield Kube(crds, namespace)
    crds.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture
def operator(kube: Kube, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator for this test's namespace (not started: call .start())."""
    process = OperatorProcess(kube.cluster.kubeconfig, kube.namespace, tmp_path / "operator.log")
    yield process
    process.stop()


@pytest.fixture
def operators(kube: Kube, tmp_path: Path) -> Iterator[Callable[[str], OperatorProcess]]:
    """Operator processes for this test's namespace, one per name (not started); every
    one is stopped after the test, a stopped (SIGSTOP) one is continued first."""
    made: list[OperatorProcess] = []

    def make(name: str) -> OperatorProcess:
        log = tmp_path / f"operator-{name}.log"
        process = OperatorProcess(kube.cluster.kubeconfig, kube.namespace, log)
        made.append(process)
        return process

    yield make
    for process in made:
        if process.proc is not None and process.alive():
            process.proc.send_signal(signal.SIGCONT)
        process.stop()


@contextlib.contextmanager
def unreachable_webhook(
    kube: Kube, group: str, resource: str, probe: Callable[[], bool] | None = None
) -> Iterator[None]:
    """A validating webhook (failurePolicy: Fail) on ``group``/``resource`` (e.g.
    ``experiments/status``) in the test's namespace whose endpoint refuses connections:
    the API server answers those writes with a real 500, as in a webhook outage.

    ``probe`` tells whether the webhook is in effect (default: a server-side dry-run
    create of a Deployment fails calling it)."""
    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))  # bound, never listening: connection refused, port kept
    port = hold.getsockname()[1]
    name = f"unreachable-{kube.namespace}"[:63]
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "unreachable.rankexp.io",
                "clientConfig": {"url": f"https://127.0.0.1:{port}/validate"},
                "rules": [
                    {
                        "apiGroups": [group],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [resource],
                    }
                ],
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": kube.namespace}
                },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }

    def deployment_probe() -> bool:
        result = kube.kubectl(
            "create", "deployment", "probe", "--image=x", "--dry-run=server", check=False
        )
        return result.returncode != 0 and "failed calling webhook" in result.stderr

    active = probe or deployment_probe
    cluster = kube.cluster
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))
        kube.wait_for(active, "the webhook to be in effect", timeout=30)
        yield
        cluster.kubectl("delete", "validatingwebhookconfiguration", name)
        kube.wait_for(lambda: not active(), "the webhook to be gone", timeout=30)
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
        hold.close()


@pytest.fixture
def failing_webhook() -> Callable[..., Any]:
    """:func:`unreachable_webhook` for tests (test modules do not import conftest)."""
    return unreachable_webhook
