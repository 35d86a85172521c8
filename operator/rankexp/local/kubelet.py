"""A stand-in for the kubelet and the Deployment controller, for the local control plane.

``rankexp.local.cluster`` runs a real kube-apiserver but nothing that runs pods. This
runs each rankexp Deployment of one namespace as local processes, so the operator's
children do real work on 127.0.0.1:

* every replica of a variant Deployment is a ``ranker serve`` process with the container's
  arguments (host and port rewritten to 127.0.0.1 and a free port);
* the router Deployment is a ``ranker route`` process whose config file is **copied from
  the routing ConfigMap, as the kubelet does for a ConfigMap volume**, with each
  endpoint's Service address (``http://<svc>.<ns>.svc:8080``) replaced by the addresses of
  that Service's running processes, as cluster DNS and kube-proxy would resolve it;
* the Deployment's status (``observedGeneration``, ``replicas``, ``updatedReplicas``,
  ``readyReplicas``, ``availableReplicas``) is written from the processes' ``/ready``, as
  the Deployment controller would;
* a process is replaced when its pod spec changes (not for annotations alone: the router
  reloads its copied file itself), started when replicas grow, stopped when they shrink;
* Prometheus (``rankexp.local.prom``) scrapes every process with the target labels
  ``namespace`` and ``experiment`` (from the pod's ``rankexp.io/experiment`` label), as
  the chart's relabelling does in a cluster.

Faults for tests: ``extra_args`` adds arguments per Deployment name or, failing that, per
variant name (e.g. the TEST-ONLY fault
injection flags of ``ranker serve``); ``router_weights`` makes the router run other
weights than its ConfigMap says, as a stale or hand-edited router would. Not part of the
product; used by the integration tests and demos.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from rankexp.local.probe import is_ready
from rankexp.local.process import Process, free_ports
from rankexp.local.prom import LocalPrometheus

log = logging.getLogger("rankexp.local.kubelet")

MANAGED = "app.kubernetes.io/managed-by=rankexp-operator"
LABEL_EXPERIMENT = "rankexp.io/experiment"
LABEL_VARIANT = "rankexp.io/variant"
LABEL_COMPONENT = "app.kubernetes.io/component"
_SERVICE_URL = re.compile(r"^http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:\d+/?$")


@dataclass
class _Pod:
    process: Process
    url: str
    spec_hash: str


@dataclass
class _Deployment:
    name: str
    pods: list[_Pod] = field(default_factory=list)
    config_path: Path | None = None
    last_config: str | None = None


class LocalKubelet:
    """Runs the rankexp Deployments of ``namespace`` as local processes (see module doc)."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        workdir: Path,
        *,
        prometheus: LocalPrometheus | None = None,
        extra_args: Mapping[str, Sequence[str]] | None = None,
        router_weights: Mapping[str, int] | None = None,
        poll_interval: float = 0.5,
        python: str = sys.executable,
    ) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.workdir = workdir
        self.prometheus = prometheus
        self.extra_args = {k: list(v) for k, v in (extra_args or {}).items()}
        self.router_weights = dict(router_weights) if router_weights else None
        self.poll_interval = poll_interval
        self.python = python
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._deployments: dict[str, _Deployment] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._crashed: set[str] = set()
        self.errors: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalKubelet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="local-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for deployment in self._deployments.values():
                for pod in deployment.pods:
                    pod.process.stop()
                deployment.pods.clear()
            self._deployments.clear()
            if self.prometheus is not None:
                self.prometheus.remove_owner(self._owner)

    def __enter__(self) -> LocalKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def _owner(self) -> str:
        return f"kubelet/{self.namespace}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self.sync()
            except Exception as exc:  # keep running: the API server may be restarting
                log.warning("local kubelet sync failed: %s", exc)
                self.errors.append(repr(exc))
                del self.errors[:-20]
            self._stop.wait(self.poll_interval)

    # -------------------------------------------------------------------- faults
    def crash(self, deployment: str) -> None:
        """SIGKILL every process of ``deployment`` and keep it down (a pod in
        CrashLoopBackOff): no restart, no ready replica, no scrape target, and the
        router's copy of the routing no longer resolves to it, until :meth:`recover`."""
        with self._lock:
            self._crashed.add(deployment)
            found = self._deployments.get(deployment)
            for pod in found.pods if found else []:
                pod.process.kill()

    def recover(self, deployment: str) -> None:
        """Let ``deployment``'s pods start again (the next sync starts them)."""
        with self._lock:
            self._crashed.discard(deployment)

    # ---------------------------------------------------------------- inspection
    def urls(self, deployment: str) -> list[str]:
        """Base URLs of the running processes of ``deployment``."""
        with self._lock:
            found = self._deployments.get(deployment)
            return [p.url for p in found.pods if p.process.is_running()] if found else []

    def processes(self, deployment: str) -> list[Process]:
        with self._lock:
            found = self._deployments.get(deployment)
            return [p.process for p in found.pods] if found else []

    # ---------------------------------------------------------------------- sync
    def sync(self) -> None:
        """One pass: processes to match every Deployment, then their status."""
        listed: Any = self._apps.list_namespaced_deployment(self.namespace, label_selector=MANAGED)
        deployments: dict[str, Any] = {d.metadata.name: d for d in listed.items}
        for name in list(self._deployments):
            if name not in deployments:
                for pod in self._deployments.pop(name).pods:
                    pod.process.stop()
        routers = []
        for d in deployments.values():
            if (d.metadata.labels or {}).get(LABEL_COMPONENT) == "router":
                routers.append(d)
            else:
                self._sync_pods(d)
        for d in routers:  # after the variants, so their addresses are known
            self._sync_router_config(d)
            state = self._deployments.get(d.metadata.name)
            if state is not None and state.config_path is not None and state.config_path.exists():
                self._sync_pods(d)
        for d in deployments.values():
            self._write_status(d)
        self._register_targets(deployments)

    def _spec_hash(self, deployment: Any) -> str:
        spec = deployment.spec.template.spec
        data = self._apps.api_client.sanitize_for_serialization(spec)
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _argv(self, deployment: Any, port: int) -> list[str]:
        container = deployment.spec.template.spec.containers[0]
        args = list(container.args or [])
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("--host", "--port", "--config") and i + 1 < len(args):
                i += 2
                continue
            out.append(arg)
            i += 1
        out += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        state = self._deployments[deployment.metadata.name]
        if state.config_path is not None:
            out += ["--config", str(state.config_path), "--poll-interval", "0.2"]
        variant = (deployment.metadata.labels or {}).get(LABEL_VARIANT)
        if variant is not None:
            name = deployment.metadata.name
            out += self.extra_args.get(name, self.extra_args.get(variant, []))
        return [self.python, "-m", "ranker.cli", *out]

    def _sync_pods(self, deployment: Any) -> None:
        name = deployment.metadata.name
        state = self._deployments.setdefault(name, _Deployment(name))
        want = 0 if name in self._crashed else int(deployment.spec.replicas or 0)
        spec_hash = self._spec_hash(deployment)
        for pod in list(state.pods):
            if pod.spec_hash != spec_hash or not pod.process.is_running():
                pod.process.stop()
                state.pods.remove(pod)
        while len(state.pods) > want:
            state.pods.pop().process.stop()
        while len(state.pods) < want:
            (port,) = free_ports(1)
            process = Process(
                f"{name}-{port}",
                self._argv(deployment, port),
                log_path=self.workdir / f"{name}-{port}.log",
            )
            process.start()
            state.pods.append(_Pod(process, f"http://127.0.0.1:{port}", spec_hash))

    def _resolve(self, url: str) -> list[str]:
        """A Service address as the URLs of that Service's running processes."""
        match = _SERVICE_URL.match(url)
        if match is None:
            return [url]
        service, namespace = match.groups()
        if namespace != self.namespace:
            return []
        state = self._deployments.get(service)
        return [p.url for p in state.pods if p.process.is_running()] if state else []

    def _sync_router_config(self, deployment: Any) -> None:
        name = deployment.metadata.name
        state = self._deployments.setdefault(name, _Deployment(name))
        volumes = deployment.spec.template.spec.volumes or []
        configmap = next((v.config_map.name for v in volumes if v.config_map is not None), None)
        if configmap is None:
            return
        state.config_path = self.workdir / name / "routing.json"
        state.config_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = self._core.read_namespaced_config_map(configmap, self.namespace).data or {}
        except ApiException as exc:
            if exc.status == 404:
                return  # no ConfigMap yet: the pod cannot start (as with a real volume)
            raise
        raw = data.get("routing.json", "")
        try:
            config = json.loads(raw)
            for variant in config["variants"]:
                urls: list[str] = []
                for url in variant.get("endpoints", []):
                    urls.extend(self._resolve(url))
                variant["endpoints"] = urls
                if self.router_weights is not None:
                    variant["weight"] = self.router_weights[variant["name"]]
                    variant.pop("buckets", None)
            text = json.dumps(config, indent=2)
        except (ValueError, TypeError, KeyError, AttributeError):
            # A broken ConfigMap is projected as it is: the router keeps its last good
            # config and counts the error.
            text = raw
        if text != state.last_config:
            tmp = state.config_path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(state.config_path)
            state.last_config = text

    def _write_status(self, deployment: Any) -> None:
        state = self._deployments.get(deployment.metadata.name)
        pods = state.pods if state else []
        ready = sum(1 for p in pods if p.process.is_running() and is_ready(p.url))
        status = {
            "observedGeneration": deployment.metadata.generation,
            "replicas": len(pods),
            "updatedReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        current = deployment.status
        now = {
            "observedGeneration": current.observed_generation,
            "replicas": current.replicas or 0,
            "updatedReplicas": current.updated_replicas or 0,
            "readyReplicas": current.ready_replicas or 0,
            "availableReplicas": current.available_replicas or 0,
        }
        if now != status:
            self._apps.patch_namespaced_deployment_status(
                deployment.metadata.name,
                self.namespace,
                {"status": status},
                _content_type="application/merge-patch+json",
            )

    def _register_targets(self, deployments: Mapping[str, Any]) -> None:
        if self.prometheus is None:
            return
        groups: dict[str, list[tuple[list[str], dict[str, str]]]] = {"ranker": [], "router": []}
        for name, d in deployments.items():
            labels = d.spec.template.metadata.labels or {}
            state = self._deployments.get(name)
            targets = [p.url.removeprefix("http://") for p in (state.pods if state else [])]
            if not targets:
                continue
            job = "router" if labels.get(LABEL_COMPONENT) == "router" else "ranker"
            target_labels = {
                "namespace": self.namespace,
                "experiment": labels.get(LABEL_EXPERIMENT, ""),
            }
            groups[job].append((targets, target_labels))
        for job, job_groups in groups.items():
            self.prometheus.set_owned_targets(job, self._owner, job_groups)
