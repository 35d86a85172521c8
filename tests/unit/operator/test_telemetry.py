"""The operator's HTTP endpoint on 127.0.0.1: /metrics, /healthz, /leader."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import pytest

from rankexp.runtime import telemetry

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[int, str]:
    try:
        with OPENER.open(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return int(exc.code), body


class KopfLiveness:
    """Stands in for kopf's liveness endpoint: answers the status it is told to."""

    def __init__(self) -> None:
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"
        Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def served() -> Iterator[tuple[telemetry.Server, dict[str, Any], KopfLiveness]]:
    state: dict[str, Any] = {"identity": "op-0", "leading": False, "holder": "op-1"}
    kopf = KopfLiveness()
    metrics = telemetry.Metrics()
    server = telemetry.Server(
        "127.0.0.1", 0, metrics=metrics, leader=lambda: state, kopf_liveness=lambda: kopf.url
    ).start()
    yield server, state, kopf
    server.stop()
    kopf.server.shutdown()
    kopf.server.server_close()


def test_metrics_have_the_operator_names(served: Any) -> None:
    server, _, _ = served
    server.metrics.tick.labels(analyzed="true").observe(0.3)
    server.metrics.counter_for("kopf")("PATCH", 429)
    code, text = get(f"http://127.0.0.1:{server.port}/metrics")
    assert code == 200
    assert 'rankexp_operator_tick_duration_seconds_count{analyzed="true"} 1.0' in text
    assert (
        'rankexp_operator_api_requests_total{client="kopf",code="429",method="PATCH"} 1.0' in text
    )
    for name in ("reconcile_duration_seconds", "analysis_lag_seconds", "leader"):
        assert f"rankexp_operator_{name}" in text
    assert "process_resident_memory_bytes" in text


def test_health_is_kopfs_only_while_leading(served: Any) -> None:
    server, state, kopf = served
    base = f"http://127.0.0.1:{server.port}"
    kopf.status = 500
    assert get(base + "/healthz")[0] == 200  # a candidate waits: alive
    state["leading"] = True
    assert get(base + "/healthz")[0] == 500  # the leader's kopf says no
    kopf.status = 200
    assert get(base + "/healthz")[0] == 200
    assert json.loads(get(base + "/leader")[1]) == state
    assert get(base + "/nothing")[0] == 404
