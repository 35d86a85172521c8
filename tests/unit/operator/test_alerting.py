"""Alert state (rankexp.alerting.state), receivers' payloads (rankexp.alerting.receivers), the named
metrics' PromQL and `rankexp render-rules`: pure parts. The whole path with a real API
server, Prometheus and HTTP receivers is tests/integration/alerts."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankexp.alerting import state as alertrules
from rankexp.alerting.evaluate import scope_matchers, selector_string
from rankexp.alerting.receivers import (
    SIGNATURE_HEADER,
    Message,
    Sender,
    Target,
    pagerduty_payload,
    redact,
    sign,
    slack_payload,
    webhook_payload,
)
from rankexp.alerting.state import Active
from rankexp.analysis import parse_duration
from rankexp.api import AlertPolicySpec, AlertRule, LabelSelector, Receiver
from rankexp.cli.commands import main
from rankexp.prom.alerts import alert_query, drift_values

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LABELS = {"namespace": "ns", "experiment": "feed", "variant": "treatment"}


def rule(name: str = "slow", for_: str = "10s", severity: str = "warning") -> AlertRule:
    return AlertRule.model_validate(
        {"name": name, "metric": "latency_p95_ms", "op": ">", "threshold": 100, "for": for_,
         "severity": severity}
    )  # fmt: skip


def run(
    alerts: list[dict[str, Any]], active: list[Active] | None, at: float, r: AlertRule | None = None
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    r = r or rule()
    return alertrules.step(
        alerts, {r.name: active}, [r], now=T0 + timedelta(seconds=at), policy_uid="uid",
        for_of={r.name: timedelta(seconds=parse_duration(r.for_))},
    )  # fmt: skip


def test_pending_then_firing_after_for_then_resolved() -> None:
    alerts, moves = run([], [Active(LABELS, 150.0)], 0)
    assert [a["state"] for a in alerts] == ["pending"] and moves == []
    alerts, moves = run(alerts, [Active(LABELS, 160.0)], 5)
    assert alerts[0]["state"] == "pending" and alerts[0]["value"] == 160.0
    alerts, moves = run(alerts, [Active(LABELS, 170.0)], 10)
    assert alerts[0]["state"] == "firing" and [m for _, m in moves] == ["firing"]
    key = alerts[0]["dedupKey"]
    alerts, moves = run(alerts, [], 20)
    assert alerts[0]["state"] == "resolved" and [m for _, m in moves] == ["resolved"]
    assert alerts[0]["dedupKey"] == key
    # it starts again as a new pending alert with the same dedup key
    alerts, _ = run(alerts, [Active(LABELS, 150.0)], 30)
    assert alerts[0]["state"] == "pending" and alerts[0]["dedupKey"] == key


def test_a_pending_alert_that_stops_holding_is_dropped() -> None:
    alerts, _ = run([], [Active(LABELS, 150.0)], 0)
    alerts, moves = run(alerts, [], 5)
    assert alerts == [] and moves == []


def test_a_rule_not_evaluated_keeps_its_alerts() -> None:
    alerts, _ = run([], [Active(LABELS, 150.0)], 0)
    alerts, _ = run(alerts, [Active(LABELS, 150.0)], 10)
    kept, moves = run(alerts, None, 20)
    assert kept == alerts and moves == []


def test_a_removed_rule_resolves_its_firing_alerts() -> None:
    alerts, _ = run([], [Active(LABELS, 150.0)], 0)
    alerts, _ = run(alerts, [Active(LABELS, 150.0)], 10)
    other = rule("other")
    kept, moves = alertrules.step(alerts, {"other": []}, [other], now=T0 + timedelta(seconds=20),
                                  policy_uid="uid", for_of={"other": timedelta(0)})  # fmt: skip
    assert [m for _, m in moves] == ["resolved"] and kept[0]["state"] == "resolved"


def test_plan_cooldown_per_receiver_and_retry_of_failures() -> None:
    slack = Receiver.model_validate({"type": "slack", "secretRef": {"name": "s", "key": "k"}})
    pd = Receiver.model_validate({"type": "pagerduty", "secretRef": {"name": "s", "key": "p"},
                                  "severities": ["critical"]})  # fmt: skip
    receivers = [("slack-0", slack), ("pagerduty-1", pd)]
    alerts, _ = run([], [Active(LABELS, 150.0)], 0, rule(for_="0s"))
    cooldown = timedelta(seconds=60)
    plan = alertrules.plan(alerts, receivers, now=T0, cooldown=cooldown)
    assert plan == [(0, "slack-0", "trigger")]  # a warning: PagerDuty takes critical only
    alertrules.record(alerts[0], "slack-0", "trigger", now=T0, ok=True, attempts=1, error=None)
    later = T0 + timedelta(seconds=30)
    assert alertrules.plan(alerts, receivers, now=later, cooldown=cooldown) == []
    again = T0 + timedelta(seconds=61)
    assert alertrules.plan(alerts, receivers, now=again, cooldown=cooldown) == [
        (0, "slack-0", "trigger")
    ]
    alertrules.record(alerts[0], "slack-0", "trigger", now=again, ok=False, attempts=3,
                      error="HTTP 500")  # fmt: skip
    # a failed delivery is tried again at the next evaluation, not after the cooldown
    assert alertrules.plan(alerts, receivers, now=again + timedelta(seconds=5),
                           cooldown=cooldown) == [(0, "slack-0", "trigger")]  # fmt: skip
    assert len(alerts[0]["deliveries"]) == 1  # the latest per receiver and action
    alerts[0].update(state="resolved", resolvedAt="2026-01-01T00:02:00Z")
    assert alertrules.plan(alerts, receivers, now=again, cooldown=cooldown) == [
        (0, "slack-0", "resolve")
    ]


def message(action: str = "trigger") -> Message:
    return Message(
        action=action, policy="ns/default", rule="slow", severity="critical", labels=LABELS,
        value=154.2, summary="p95 above 100 ms", dedup_key="k" * 32,
        active_since="2026-01-01T00:00:00Z", firing_since="2026-01-01T00:00:10Z",
        resolved_at=None, time="2026-01-01T00:00:10Z",
    )  # fmt: skip


def test_slack_payload_has_text_and_blocks() -> None:
    body = slack_payload(message())
    assert body["text"].startswith("[FIRING] slow (critical)")
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "context"]
    assert "experiment=feed" in json.dumps(body["blocks"][3])


def test_pagerduty_payload_follows_events_api_v2() -> None:
    trigger = pagerduty_payload(message(), "ROUTING-KEY")
    assert trigger["routing_key"] == "ROUTING-KEY" and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "k" * 32
    payload = trigger["payload"]
    assert {"summary", "source", "severity"} <= set(payload)
    assert payload["severity"] in ("critical", "error", "warning", "info")
    resolve = pagerduty_payload(message("resolve"), "ROUTING-KEY")
    assert resolve["event_action"] == "resolve" and "payload" not in resolve
    assert resolve["dedup_key"] == trigger["dedup_key"]


def test_webhook_signature_verifies_with_the_key() -> None:
    body = json.dumps(webhook_payload(message())).encode()
    signature = sign(body, "s3cret")
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}" and SIGNATURE_HEADER.startswith("X-")


def test_delivery_errors_never_carry_secrets() -> None:
    url = "http://127.0.0.1:9/hooks/T0KEN-very-secret"
    sender = Sender(attempts=2, backoff=0.0, timeout=1.0, sleep=lambda _: None)
    try:
        result = sender.send(Target("slack", url), message())
    finally:
        sender.close()
    assert not result.ok and result.attempts == 2 and result.error is not None
    assert "T0KEN-very-secret" not in result.error and "127.0.0.1:9" not in result.error
    assert redact("x T0KEN y", ["T0KEN"]) == "x <redacted> y"


def test_urllib3_request_lines_are_redacted_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """urllib3 logs each request line at DEBUG; for Slack the URL path is the secret."""
    url = "http://127.0.0.1:9/services/T0KEN-in-a-path"
    sender = Sender(attempts=1, backoff=0.0, timeout=1.0, sleep=lambda _: None)
    try:
        with caplog.at_level(logging.DEBUG, logger="urllib3"):
            sender.send(Target("slack", url), message())
            logging.getLogger("urllib3.connectionpool").debug(
                '%s "%s %s %s" %s', "http://127.0.0.1:9", "POST", "/services/T0KEN-in-a-path",
                "HTTP/1.1", 200,
            )  # fmt: skip
    finally:
        sender.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "<redacted>" in text and "T0KEN-in-a-path" not in text


def test_named_metrics_are_scoped_and_grouped() -> None:
    scope = scope_matchers("team-a", ["feed", "ads.v2"])
    assert scope == r'namespace="team-a",experiment=~"^(?:feed|ads\.v2)$"'
    q = alert_query("latency_p95_ms", "5m", scope)
    assert q.startswith("(histogram_quantile(0.95, sum by (namespace, experiment, variant, le)")
    assert 'namespace="team-a"' in q
    # only live processes: and on (...) count by (...) (ranking_requests_total{...})
    assert q.endswith(
        '(ranking_requests_total{namespace="team-a",experiment=~"^(?:feed|ads\\.v2)$"})'
    )
    assert scope_matchers("team-a", []).endswith('experiment=~"^(?:$^)$"')
    for metric in ("error_rate", "cache_hit_rate", "ctr", "engagement_rate", "request_rate",
                   "fallback_rate"):  # fmt: skip
        assert "sum by (namespace, experiment, variant)" in alert_query(metric, "5m")
    with pytest.raises(ValueError, match="drift_psi"):
        alert_query("drift_psi", "5m")
    selector = LabelSelector.model_validate(
        {"matchLabels": {"team": "feed"},
         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}
    )  # fmt: skip
    assert selector_string(selector) == "team=feed,tier in (a,b)"


def test_drift_psi_compares_recent_scores_with_the_trailing_hour() -> None:
    def hist(counts: list[float]) -> list[tuple[dict[str, str], float]]:
        out, total = [], 0.0
        for le, c in zip(["0.5", "1.0", "+Inf"], counts, strict=True):
            total += c
            out.append(({**LABELS, "le": le}, total))
        return out

    same = drift_values(hist([500, 500, 0]), hist([5000, 5000, 0]))
    assert same[0][1] == pytest.approx(0.0, abs=1e-9)
    shifted = drift_values(hist([900, 100, 0]), hist([5000, 5000, 0]))
    assert shifted[0][0] == LABELS and shifted[0][1] > 0.2
    assert drift_values(hist([5, 5, 0]), hist([5000, 5000, 0])) == []  # too few scores


def test_render_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = Path(__file__).resolve().parents[3] / "crds/samples/alertpolicy.yaml"
    assert main(["render-rules", str(sample)]) == 0
    text = capsys.readouterr().out
    doc = yaml.safe_load(text.split("\n", 2)[2])
    assert doc["kind"] == "PrometheusRule"
    names = [r["alert"] for r in doc["spec"]["groups"][0]["rules"]]
    assert names == ["high_latency", "high_error_rate", "low_cache_hit"]
    assert "Left out" in text and "model_drift" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: AlertPolicy\nspec: {rules: []}\n")
    assert main(["render-rules", str(bad)]) == 2
    assert "render-rules" in capsys.readouterr().err


def test_receiver_fields_fit_their_types() -> None:
    spec = AlertPolicySpec.model_validate(
        {"rules": [{"name": "r", "expr": "up == 0"}],
         "receivers": [{"type": "webhook", "secretRef": {"name": "s", "key": "url"},
                        "hmacSecretRef": {"name": "s", "key": "hmac"}},
                       {"name": "oncall", "type": "pagerduty",
                        "secretRef": {"name": "s", "key": "rk"}}]}
    )  # fmt: skip
    assert spec.receiver_names() == ["webhook-0", "oncall"]
    with pytest.raises(ValueError, match="either expr or all of metric"):
        AlertRule.model_validate({"name": "r", "metric": "ctr"})


def test_timeouts_and_5xx_are_retried_with_backoff_but_4xx_is_not() -> None:
    """A real local HTTP server: slow answers time out, 503 and 400 are what they say."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", "0")))
            hits.append(self.path)
            if self.path == "/slow":
                threading.Event().wait(0.6)
            code = {"/slow": 200, "/503": 503, "/400": 400}.get(self.path, 200)
            self.send_response(code)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    pauses: list[float] = []
    sender = Sender(attempts=3, backoff=0.5, timeout=0.2, sleep=pauses.append)
    try:
        slow = sender.send(Target("webhook", base + "/slow"), message())
        assert (slow.ok, slow.attempts, slow.error) == (False, 3, "timed out after 0.2 s")
        assert pauses == [0.5, 1.0], "exponential backoff between attempts"
        unavailable = sender.send(Target("webhook", base + "/503"), message())
        assert (unavailable.ok, unavailable.attempts, unavailable.error) == (False, 3, "HTTP 503")
        bad = sender.send(Target("webhook", base + "/400"), message())
        assert (bad.ok, bad.attempts, bad.error) == (False, 1, "HTTP 400")
        good = sender.send(Target("webhook", base + "/ok"), message())
        assert (good.ok, good.attempts) == (True, 1)
        assert hits.count("/slow") == 3 and hits.count("/503") == 3 and hits.count("/400") == 1
    finally:
        sender.close()
        server.shutdown()
        server.server_close()
