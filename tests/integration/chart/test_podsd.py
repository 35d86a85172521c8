"""rankexp.runtime.podsd against the real API server: the HTTP service discovery the bundled
Prometheus uses in place of kubernetes_sd_configs (Debian's build lacks it)."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from rankexp.local.process import free_ports
from rankexp.runtime.podsd import Discovery, make_handler, target_groups

pytestmark = pytest.mark.integration


def pod(name: str, labels: dict[str, str], ip: str | None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"},
        },
        "spec": {
            "containers": [
                {"name": "ranker", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}
            ]
        },
        **({"status": {"podIP": ip, "phase": "Running"}} if ip else {}),
    }


def test_pods_are_served_with_kubernetes_sd_labels(crds: Any, api_client: Any) -> None:
    from kubernetes import client

    ns = "podsd-test"
    crds.kubectl("create", "namespace", ns, check=False)
    core = client.CoreV1Api(api_client)
    managed = {
        "app.kubernetes.io/managed-by": "rankexp-operator",
        "app.kubernetes.io/part-of": "rankexp",
        "rankexp.io/experiment": "feed-ranking",
        "rankexp.io/variant": "treatment",
    }
    for name, labels in (("ranker-a", managed), ("unrelated", {"app": "other"})):
        body = pod(name, labels, None)
        core.create_namespaced_pod(ns, body)
        # no kubelet here: give the pods an address as the kubelet would
        status = {"status": {"podIP": "10.244.0.9" if name == "ranker-a" else "10.244.0.8",
                             "phase": "Running",
                             "conditions": [{"type": "Ready", "status": "True"}]}}  # fmt: skip
        core.patch_namespaced_pod_status(name, ns, status)

    discovery = Discovery(api_client, interval=60)
    discovery.refresh()
    assert discovery.error is None
    (group,) = [g for g in discovery.groups if g["labels"]["__meta_kubernetes_namespace"] == ns]
    assert group["targets"] == ["10.244.0.9:8080"]
    labels = group["labels"]
    assert labels["__meta_kubernetes_pod_label_rankexp_io_experiment"] == "feed-ranking"
    assert labels["__meta_kubernetes_pod_annotation_prometheus_io_port"] == "8080"
    assert labels["__meta_kubernetes_pod_ready"] == "true"
    assert labels["__meta_kubernetes_pod_phase"] == "Running"

    (port,) = free_ports(1)
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(discovery))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/targets", timeout=5) as resp:
            served = json.loads(resp.read())
        assert group in served
    finally:
        server.shutdown()
        server.server_close()


def test_pods_without_an_address_are_left_out() -> None:
    assert target_groups([pod("p", {}, None)]) == []
    (group,) = target_groups([pod("p", {"a.b/c": "d"}, "10.0.0.1")])
    assert group["labels"]["__meta_kubernetes_pod_label_a_b_c"] == "d"
    assert group["labels"]["__meta_kubernetes_pod_labelpresent_a_b_c"] == "true"
