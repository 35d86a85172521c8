"""Prometheus HTTP service discovery of rankexp's ranker and router pods.

Debian's prometheus package is built without ``kubernetes_sd_configs`` (it has file,
DNS and HTTP discovery only). This small server gives such a Prometheus the same
targets and the same ``__meta_kubernetes_*`` labels that ``kubernetes_sd_configs``
with ``role: pod`` would, so one set of relabelling rules serves both: the chart's
bundled Prometheus runs it as a sidecar and points ``http_sd_configs`` at it.

``python -m rankexp.runtime.podsd [--port 8081] [--interval 5]`` lists, every interval, the
pods labelled ``app.kubernetes.io/managed-by=rankexp-operator`` in every namespace and
serves them at ``GET /targets`` (HTTP SD format: a JSON list of ``{targets, labels}``).
It listens on 127.0.0.1 only: Prometheus reaches it inside the pod.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("rankexp.runtime.podsd")
SELECTOR = "app.kubernetes.io/managed-by=rankexp-operator"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _name(prefix: str, key: str) -> str:
    return prefix + _INVALID.sub("_", key)


def target_groups(pods: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """HTTP SD groups for pods (dicts as the API returns them): one per container port,
    labelled as kubernetes_sd_configs' pod role labels them."""
    groups: list[dict[str, Any]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if not ip:
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        base = {
            "__meta_kubernetes_namespace": meta.get("namespace", ""),
            "__meta_kubernetes_pod_name": meta.get("name", ""),
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_ready": "true" if ready else "false",
            "__meta_kubernetes_pod_node_name": (pod.get("spec") or {}).get("nodeName") or "",
        }
        for key, value in (meta.get("labels") or {}).items():
            base[_name("__meta_kubernetes_pod_label_", key)] = str(value)
            base[_name("__meta_kubernetes_pod_labelpresent_", key)] = "true"
        for key, value in (meta.get("annotations") or {}).items():
            base[_name("__meta_kubernetes_pod_annotation_", key)] = str(value)
            base[_name("__meta_kubernetes_pod_annotationpresent_", key)] = "true"
        for container in (pod.get("spec") or {}).get("containers") or []:
            for port in container.get("ports") or []:
                number = port.get("containerPort")
                if number is None:
                    continue
                labels = {
                    **base,
                    "__meta_kubernetes_pod_container_name": container.get("name", ""),
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(number),
                    "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
                }
                groups.append({"targets": [f"{ip}:{number}"], "labels": labels})
    return groups


class Discovery:
    """Lists the pods every ``interval`` seconds; ``groups`` is the last good answer."""

    def __init__(self, api_client: Any, interval: float = 5.0) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._sanitize = api_client.sanitize_for_serialization
        self.interval = interval
        self.groups: list[dict[str, Any]] = []
        self.error: str | None = None
        self._stop = threading.Event()

    def refresh(self) -> None:
        try:
            pods = self._core.list_pod_for_all_namespaces(label_selector=SELECTOR).items
            self.groups = target_groups([self._sanitize(p) for p in pods])
            self.error = None
        except Exception as exc:  # the API server may be away: keep the last targets
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("listing pods failed, serving the last targets: %s", self.error)

    def run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


def make_handler(discovery: Discovery) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] == "/targets":
                body = json.dumps(discovery.groups).encode()
                self.send_response(200)
            elif self.path == "/healthz":
                body = json.dumps(
                    {"ok": discovery.error is None, "error": discovery.error}
                ).encode()
                self.send_response(200)
            else:
                body = b'{"detail": "not found"}'
                self.send_response(404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet access log
            pass

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rankexp.runtime.podsd", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from rankexp.runtime.handlers import new_api_client

    discovery = Discovery(new_api_client(), args.interval)
    discovery.refresh()
    threading.Thread(target=discovery.run, daemon=True).start()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(discovery))
    log.info("serving rankexp pod targets on http://%s:%d/targets", args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        discovery.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
