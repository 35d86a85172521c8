"""The operator's own metrics and its health endpoint: ``GET /metrics``, ``/healthz``, ``/leader``.

Served by ``python -m rankexp --serve HOST:PORT`` from the moment the process starts, so a
replica waiting for the leader Lease answers its liveness probe and shows that it waits.
While it leads, ``/healthz`` is kopf's own liveness endpoint (an internal loopback port),
so a stuck event loop still restarts the pod.

Metric names (every one prefixed ``rankexp_operator_``):

* ``reconcile_duration_seconds`` (histogram): one create/update/resume reconcile;
* ``tick_duration_seconds{analyzed}`` (histogram): one timer tick of an Experiment,
  ``analyzed="true"`` when it ran the analysis;
* ``analysis_lag_seconds`` (histogram): how late an analysis ran after it was due (one
  interval after the previous analysis, or after the start);
* ``api_requests_total{client, method, code}`` (counter): Kubernetes API requests by
  client (rankexp, kopf, lease); code 0 when no answer came;
* ``leader`` (gauge): 1 while this replica holds the Lease (or runs without election);

plus the evidence of each Experiment's latest analysis (``rankexp_analysis_*``,
``rankexp_experiment_traffic_weight``; see :mod:`rankexp.prom.evidence`), and
``process_*`` (resident memory, CPU seconds) and ``python_*`` of prometheus_client.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from rankexp.prom.evidence import EvidenceCollector

log = logging.getLogger("rankexp.runtime.telemetry")
PREFIX = "rankexp_operator_"
# A tick is milliseconds when nothing is due and up to seconds when the analysis runs
# (several Prometheus queries); lag is judged against intervals of seconds to minutes.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LAG_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600)


class Metrics:
    """The operator's metrics in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)
        r = self.registry
        self.reconcile = Histogram(
            PREFIX + "reconcile_duration_seconds",
            "Duration of one reconcile of an Experiment (create, update, resume).",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.tick = Histogram(
            PREFIX + "tick_duration_seconds",
            "Duration of one timer tick of an Experiment; analyzed=true when it analysed.",
            ["analyzed"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.lag = Histogram(
            PREFIX + "analysis_lag_seconds",
            "How long after it was due an analysis ran (one analysis interval after the "
            "previous one, or after the start).",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            PREFIX + "api_requests_total",
            "Kubernetes API requests by client (rankexp, kopf, lease), method and HTTP code "
            "(0: no answer).",
            ["client", "method", "code"],
            registry=r,
        )
        self.leader = Gauge(
            PREFIX + "leader",
            "1 while this replica holds the leader Lease (or runs without an election).",
            registry=r,
        )
        for analyzed in ("true", "false"):
            self.tick.labels(analyzed=analyzed)
        #: the evidence of every Experiment's latest analysis (rankexp.prom.evidence)
        self.evidence = EvidenceCollector()
        r.register(self.evidence)

    def counter_for(self, client: str) -> Callable[[str, int], None]:
        """A callback counting one client's requests (for the fenced clients)."""

        def count(method: str, code: int) -> None:
            self.requests.labels(client=client, method=method, code=str(code)).inc()

        return count

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_METRICS: Metrics | None = None
_GUARD = threading.Lock()


def process_metrics() -> Metrics:
    """The process's metrics (created on first use)."""
    global _METRICS
    with _GUARD:
        if _METRICS is None:
            _METRICS = Metrics()
        return _METRICS


class Server:
    """The HTTP endpoint, on its own thread: /metrics, /healthz, /leader."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Metrics,
        leader: Callable[[], dict[str, Any]],
        kopf_liveness: Callable[[], str | None],
    ) -> None:
        outer = self
        self.metrics = metrics
        self.leader = leader
        self.kopf_liveness = kopf_liveness

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    code, text = outer.health()
                    self._send(code, text.encode(), "text/plain; charset=utf-8")
                elif path == "/leader":
                    body = json.dumps(outer.leader()).encode()
                    self._send(200, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="telemetry", daemon=True
        )

    def start(self) -> Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def health(self) -> tuple[int, str]:
        """200 while waiting for the Lease; while leading, what kopf's liveness says."""
        url = self.kopf_liveness()
        state = self.leader()
        if not state.get("leading") or url is None:
            return 200, "ok\n"
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=3) as response:
                return int(response.status), "ok\n"
        except urllib.error.HTTPError as exc:  # kopf answered: pass its verdict on
            exc.close()
            return int(exc.code), f"kopf liveness: {exc.code}\n"
        except OSError as exc:
            return 503, f"kopf liveness: {exc}\n"
