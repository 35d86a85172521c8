"""AlertPolicy end to end: the operator as a process against the real API server, a real
Prometheus scraping real rankers (one made slow with the TEST-ONLY fault flag, so the
latency is real), and real HTTP receivers on 127.0.0.1 that record what they get."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankexp.local.process import free_ports
from rankexp.local.prom import LocalPrometheus

pytestmark = pytest.mark.integration

SLACK_PATH = "/services/T0KEN-slack-secret-path"
HOOK_PATH = "/hook/hook-secret-path"
PD_KEY = "PDKEY-routing-secret-0123456789"
HMAC_KEY = "HMAC-secret-key-abcdef"
SECRETS = (SLACK_PATH, HOOK_PATH, PD_KEY, HMAC_KEY)


class Receivers:
    """One HTTP server for every receiver; /fail answers 500."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with outer.lock:
                    outer.got.append(
                        {"path": self.path, "headers": dict(self.headers), "raw": body,
                         "json": json.loads(body or b"null")}
                    )  # fmt: skip
                code = 500 if self.path == "/fail" else 202
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        (self.port,) = free_ports(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [g for g in self.got if g["path"] == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Traffic:
    """Feeds for random users against rankers until stopped (so latency has samples)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        user = 0
        while not self.stop_event.is_set():
            for url in list(self.urls):
                user = (user + 1) % 5000
                data = json.dumps({"user_id": user, "num_items": 10}).encode()
                headers = {"content-type": "application/json"}
                request = urllib.request.Request(url + "/rank", data=data, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=2) as resp:
                        resp.read()
                except OSError:
                    pass
            self.stop_event.wait(0.02)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    server = Receivers()
    yield server
    server.stop()


def policy(name: str, receivers: Receivers, rules: list[dict[str, Any]], **spec: Any) -> str:
    body = {
        "apiVersion": "rankexp.io/v1alpha1",
        "kind": "AlertPolicy",
        "metadata": {"name": name},
        "spec": {
            "interval": "2s",
            "cooldown": "1h",
            "rules": rules,
            "receivers": [
                {
                    "name": "slack",
                    "type": "slack",
                    "secretRef": {"name": "alert-secrets", "key": "slack-url"},
                },
                {
                    "name": "oncall",
                    "type": "pagerduty",
                    "url": receivers.url("/pd"),
                    "secretRef": {"name": "alert-secrets", "key": "pd-key"},
                },
                {
                    "name": "hook",
                    "type": "webhook",
                    "secretRef": {"name": "alert-secrets", "key": "hook-url"},
                    "hmacSecretRef": {"name": "alert-secrets", "key": "hmac"},
                },
                {
                    "name": "broken",
                    "type": "webhook",
                    "secretRef": {"name": "alert-secrets", "key": "broken-url"},
                },
            ],  # fmt: skip
            **spec,
        },
    }
    return yaml.safe_dump(body)


def create_secret(kube: Any, receivers: Receivers) -> None:
    kube.kubectl(
        "create", "secret", "generic", "alert-secrets",
        f"--from-literal=slack-url={receivers.url(SLACK_PATH)}",
        f"--from-literal=pd-key={PD_KEY}",
        f"--from-literal=hook-url={receivers.url(HOOK_PATH)}",
        f"--from-literal=hmac={HMAC_KEY}",
        f"--from-literal=broken-url={receivers.url('/fail')}",
    )  # fmt: skip


def alert_policy(kube: Any, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kube.get("alertpolicy", name)
    return obj


def wait(kube: Any, operator: Any, check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    return kube.wait_for(check, what, timeout=timeout, interval=0.5, operator=operator)


def start_operator(operator: Any, prometheus_url: str) -> None:
    operator.extra_args = ["--prometheus-url", prometheus_url]
    operator.env = {"RANKEXP_READINESS_INTERVAL": "1"}
    operator.start()


def test_firing_then_resolved_through_every_receiver(
    kube: Any, operator: Any, prometheus: LocalPrometheus, start_ranker: Any,
    model_dirs: dict[str, Path], receivers: Receivers, tmp_path: Path,
) -> None:  # fmt: skip
    experiment = f"alerts-{kube.namespace}"[:40]
    # 300 ms injected against a 200 ms limit: far from a healthy ranker even on a busy host
    slow, slow_url = start_ranker(model_dirs["v1"], "slow", "--inject-latency-ms", "300")
    _, fast_url = start_ranker(model_dirs["v1"], "fast")
    labels = {"experiment": experiment, "namespace": kube.namespace}
    owner = f"alerts-{kube.namespace}"
    targets = [u.removeprefix("http://") for u in (slow_url, fast_url)]
    prometheus.set_owned_targets("ranker", owner, [(targets, labels)])
    traffic = Traffic([slow_url, fast_url])
    try:
        create_secret(kube, receivers)
        start_operator(operator, prometheus.url)
        rules = [{"name": "slow_rank", "metric": "latency_p95_ms", "op": ">", "threshold": 200,
                  "window": "20s", "for": "4s", "severity": "critical",
                  "summary": "p95 of /rank above 200 ms"}]  # fmt: skip
        kube.apply(policy("latency", receivers, rules))

        def firing() -> dict[str, Any] | None:
            obj = alert_policy(kube, "latency")
            alerts = (obj.get("status") or {}).get("alerts") or []
            return obj if any(a["state"] == "firing" for a in alerts) else None

        obj = wait(kube, operator, firing, "the latency alert firing", timeout=120)
        (alert,) = [a for a in obj["status"]["alerts"] if a["state"] == "firing"]
        assert alert["labels"]["variant"] == "slow" and alert["value"] > 200
        assert alert["labels"]["experiment"] == experiment
        held = _seconds(alert["firingSince"]) - _seconds(alert["activeSince"])
        assert held >= 4, "for: 4s is honoured"
        assert obj["status"]["firingCount"] == 1

        wait(kube, operator, lambda: receivers.at("/pd") and receivers.at(SLACK_PATH)
             and receivers.at(HOOK_PATH) and receivers.at("/fail"), "every receiver")  # fmt: skip
        (pd,) = receivers.at("/pd")
        event = pd["json"]
        assert event["routing_key"] == PD_KEY and event["event_action"] == "trigger"
        assert event["dedup_key"] == alert["dedupKey"]
        assert event["payload"]["severity"] == "critical"
        assert {"summary", "source", "severity", "timestamp"} <= set(event["payload"])
        (slack,) = receivers.at(SLACK_PATH)
        assert slack["json"]["text"].startswith("[FIRING] slow_rank (critical)")
        assert slack["json"]["blocks"][0]["type"] == "header"
        (hook,) = receivers.at(HOOK_PATH)
        expected = "sha256=" + hmac.new(HMAC_KEY.encode(), hook["raw"], hashlib.sha256).hexdigest()
        assert hook["headers"]["X-Rankexp-Signature"] == expected
        assert hook["json"]["status"] == "firing" and hook["json"]["labels"]["variant"] == "slow"
        assert len(receivers.at("/fail")) == 3, "a 500 is retried (3 attempts)"

        def broken_recorded() -> dict[str, Any] | None:
            alerts = (alert_policy(kube, "latency").get("status") or {}).get("alerts") or []
            for a in alerts:
                for d in a.get("deliveries", []) if a["dedupKey"] == alert["dedupKey"] else []:
                    if d["receiver"] == "broken":
                        return dict(d)
            return None

        broken = wait(kube, operator, broken_recorded, "the failed delivery in status")
        assert broken["ok"] is False and broken["attempts"] == 3 and broken["error"] == "HTTP 500"

        # SIGKILL while firing: the restarted operator notifies nobody again (cooldown 1h)
        operator.kill()
        operator.start()
        evaluated = alert_policy(kube, "latency")["status"]["lastEvaluation"]
        wait(kube, operator,
             lambda: alert_policy(kube, "latency")["status"]["lastEvaluation"] > evaluated,
             "an evaluation after the restart")  # fmt: skip
        time.sleep(4)
        assert len(receivers.at("/pd")) == 1 and len(receivers.at(SLACK_PATH)) == 1

        # a short cooldown: the firing alert is repeated, once per cooldown
        kube.patch("alertpolicy", "latency", {"spec": {"cooldown": "5s"}})
        wait(kube, operator, lambda: len(receivers.at(SLACK_PATH)) >= 2, "a repeat", timeout=30)
        time.sleep(6)
        assert 2 <= len(receivers.at(SLACK_PATH)) <= 3

        # the slow ranker goes away: its alert resolves, with the same dedup key
        prometheus.set_owned_targets("ranker", owner, [([targets[1]], labels)])
        slow.stop()

        def resolved() -> bool:
            return any(e["json"]["event_action"] == "resolve" for e in receivers.at("/pd"))

        wait(kube, operator, resolved, "the resolve", 120)
        resolve = next(e for e in receivers.at("/pd") if e["json"]["event_action"] == "resolve")
        assert resolve["json"]["dedup_key"] == alert["dedupKey"]
        assert any(h["json"]["status"] == "resolved" for h in receivers.at(HOOK_PATH))

        def slow_alert() -> dict[str, Any]:
            alerts = alert_policy(kube, "latency")["status"]["alerts"]
            (found,) = [a for a in alerts if a["labels"]["variant"] == "slow"]
            return dict(found)

        # the status is written after the deliveries of an evaluation
        wait(kube, operator, lambda: slow_alert()["state"] == "resolved", "resolved in status")
        assert slow_alert()["dedupKey"] == alert["dedupKey"]
        final = alert_policy(kube, "latency")["status"]

        # no secret anywhere: status, Events, the operator's log
        events = json.dumps(kube.events("latency"))
        log = operator.log_path.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in json.dumps(final) and secret not in events and secret not in log
    finally:
        traffic.stop()
        prometheus.remove_owner(owner)


def test_bad_promql_and_a_missing_secret_are_degraded_by_name(
    kube: Any, operator: Any, prometheus: LocalPrometheus, receivers: Receivers
) -> None:
    start_operator(operator, prometheus.url)
    rules = [
        {"name": "broken_query", "expr": "sum(rate(ranking_requests_total[5m])", "for": "0s"},
        {"name": "always", "expr": "vector(1) > 0", "for": "0s", "severity": "info"},
    ]
    kube.apply(policy("degraded", receivers, rules))  # the Secret does not exist

    def degraded() -> dict[str, Any] | None:
        conditions = (alert_policy(kube, "degraded").get("status") or {}).get("conditions") or []
        found = [c for c in conditions if c["type"] == "Degraded" and c["status"] == "True"]
        return found[0] if found else None

    condition = wait(kube, operator, degraded, "a Degraded condition")
    assert condition["reason"] == "RuleFailed"
    assert "rule broken_query" in condition["message"] and "parse error" in condition["message"]
    assert "Secret" in condition["message"] and "alert-secrets not found" in condition["message"]
    alerts = alert_policy(kube, "degraded")["status"]["alerts"]
    assert [a["rule"] for a in alerts] == ["always"] and alerts[0]["state"] == "firing"
    deliveries = {d["receiver"]: d for d in alerts[0]["deliveries"]}
    assert deliveries["slack"]["ok"] is False and "not found" in deliveries["slack"]["error"]
    assert receivers.got == []


def test_prometheus_down_changes_nothing_until_it_is_back(
    kube: Any, operator: Any, start_ranker: Any, model_dirs: dict[str, Path],
    receivers: Receivers, tmp_path: Path,
) -> None:  # fmt: skip
    own = LocalPrometheus(workdir=tmp_path / "prometheus").start()
    try:
        _, url = start_ranker(model_dirs["v1"], "up")
        own.set_targets("ranker", [url.removeprefix("http://")],
                        {"experiment": "down", "namespace": kube.namespace})  # fmt: skip
        own.wait_scraped("ranker", 1)
        create_secret(kube, receivers)
        start_operator(operator, own.url)
        rules = [{"name": "ranker_up", "expr": 'up{job="ranker"} == 1', "for": "0s"}]
        kube.apply(policy("outage", receivers, rules))
        wait(kube, operator, lambda: receivers.at(SLACK_PATH), "the alert notified")
        port = own.port
        own.stop()

        def unavailable() -> dict[str, Any] | None:
            conditions = (alert_policy(kube, "outage").get("status") or {}).get("conditions")
            found = [c for c in conditions or [] if c["reason"] == "PrometheusUnavailable"]
            return found[0] if found else None

        wait(kube, operator, unavailable, "PrometheusUnavailable")
        time.sleep(5)
        status = alert_policy(kube, "outage")["status"]
        assert [a["state"] for a in status["alerts"]] == ["firing"], "no resolve while blind"
        assert all(e["json"]["event_action"] == "trigger" for e in receivers.at("/pd"))
        own.start(port=port)
        wait(kube, operator, lambda: not unavailable(), "evaluating again")
        time.sleep(4)
        assert [a["state"] for a in alert_policy(kube, "outage")["status"]["alerts"]] == ["firing"]
        assert len(receivers.at(SLACK_PATH)) == 1, "no storm when Prometheus is back"
    finally:
        own.stop()


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
