"""Alert receivers: Slack incoming webhooks, PagerDuty Events API v2, signed webhooks.

Each receiver turns one alert transition into one HTTP POST:

* **slack**: ``{text, blocks}`` to the incoming-webhook URL (the Secret's value);
* **pagerduty**: an Events API v2 event (``routing_key`` from the Secret,
  ``event_action`` trigger or resolve, a stable ``dedup_key`` per alert, severity
  critical/warning/info) to ``receiver.url`` (default PagerDuty's endpoint);
* **webhook**: the alert as JSON to the URL (the Secret's value), signed with
  ``X-Rankexp-Signature: sha256=<hex HMAC-SHA256 of the body>`` when an HMAC key is set.

Delivery retries with exponential backoff on connection errors, timeouts, 429 and 5xx
(not on other 4xx: the request is wrong); the outcome is a :class:`Delivery`. URLs,
routing keys and HMAC keys are secrets: they never appear in a Delivery's error (every
known secret value is redacted from it), so they cannot reach status, Events or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
SIGNATURE_HEADER = "X-Rankexp-Signature"
#: rankexp severity -> PagerDuty severity
PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}
REDACTED = "<redacted>"


@dataclass(frozen=True)
class Message:
    """One alert transition, as every receiver describes it."""

    action: str  # trigger | resolve
    policy: str  # namespace/name
    rule: str
    severity: str
    labels: Mapping[str, str]
    value: float | None
    summary: str
    dedup_key: str
    active_since: str
    firing_since: str | None
    resolved_at: str | None
    time: str

    @property
    def title(self) -> str:
        state = "RESOLVED" if self.action == "resolve" else "FIRING"
        return f"[{state}] {self.rule} ({self.severity})"


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class Target:
    """Where a receiver sends, with its secrets."""

    type: str
    url: str
    routing_key: str | None = None
    hmac_key: str | None = None

    def secrets(self) -> list[str]:
        """Every secret value, and the parts of a secret URL (host, path) an error could
        quote on their own."""
        from urllib.parse import urlsplit

        out = [s for s in (self.url, self.routing_key, self.hmac_key) if s]
        if self.type != "pagerduty":  # the PagerDuty endpoint is not a secret
            parts = urlsplit(self.url)
            out += [p for p in (parts.netloc, parts.path, parts.query) if len(p) > 1]
        return out


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def slack_payload(m: Message) -> dict[str, Any]:
    value = "-" if m.value is None else f"{m.value:.4g}"
    fields = [
        {"type": "mrkdwn", "text": f"*Rule*\n{m.rule}"},
        {"type": "mrkdwn", "text": f"*Severity*\n{m.severity}"},
        {"type": "mrkdwn", "text": f"*Value*\n{value}"},
        {"type": "mrkdwn", "text": f"*Policy*\n{m.policy}"},
    ]
    return {
        "text": f"{m.title}: {m.summary}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": m.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": m.summary[:3000]}},
            {"type": "section", "fields": fields},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"{_labels_text(m.labels)} | since {m.active_since}"}
                ],
            },
        ],
    }


def pagerduty_payload(m: Message, routing_key: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": m.action,
        "dedup_key": m.dedup_key,
    }
    if m.action == "trigger":
        event["payload"] = {
            "summary": f"{m.rule}: {m.summary}"[:1024],
            "source": m.labels.get("experiment") or m.policy,
            "severity": PD_SEVERITY.get(m.severity, "warning"),
            "timestamp": m.firing_since or m.time,
            "component": m.labels.get("variant", ""),
            "group": m.labels.get("namespace", ""),
            "class": m.rule,
            "custom_details": {
                "policy": m.policy,
                "labels": dict(m.labels),
                "value": m.value,
                "active_since": m.active_since,
            },
        }
    return event


def webhook_payload(m: Message) -> dict[str, Any]:
    return {
        "version": "1",
        "status": "resolved" if m.action == "resolve" else "firing",
        "policy": m.policy,
        "rule": m.rule,
        "severity": m.severity,
        "labels": dict(m.labels),
        "value": m.value,
        "summary": m.summary,
        "dedupKey": m.dedup_key,
        "activeSince": m.active_since,
        "firingSince": m.firing_since,
        "resolvedAt": m.resolved_at,
        "time": m.time,
    }


def sign(body: bytes, key: str) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class SecretFilter(logging.Filter):
    """Redacts known secret values from log records. urllib3 logs every request line at
    DEBUG (``"POST /services/T000/B000/XXXX HTTP/1.1" 200``), and a Slack or webhook URL
    path *is* the secret, so the filter sits on urllib3's loggers."""

    LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.connection")

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secrets: Sequence[str]) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = list(self._secrets)
        if secrets:
            message = record.getMessage()
            clean = redact(message, secrets)
            if clean != message:
                record.msg, record.args = clean, ()
        return True


#: one filter for the process, installed on urllib3's loggers at import
_FILTER = SecretFilter()
for _name in SecretFilter.LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)


class Sender:
    """POSTs with retries; ``sleep`` and ``session`` are injectable."""

    def __init__(
        self,
        *,
        attempts: int = 3,
        backoff: float = 0.25,
        timeout: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
        may_send: Callable[[], bool] = lambda: True,
    ) -> None:
        self.may_send = may_send
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.sleep = sleep
        self.session = session or requests.Session()

    def close(self) -> None:
        self.session.close()

    def send(self, target: Target, message: Message) -> Delivery:
        if target.type == "slack":
            body = json.dumps(slack_payload(message)).encode()
            url = target.url
        elif target.type == "pagerduty":
            body = json.dumps(pagerduty_payload(message, target.routing_key or "")).encode()
            url = target.url
        else:
            body = json.dumps(webhook_payload(message)).encode()
            url = target.url
        headers = {"Content-Type": "application/json", "User-Agent": "rankexp-operator"}
        if target.type == "webhook" and target.hmac_key:
            headers[SIGNATURE_HEADER] = sign(body, target.hmac_key)
        _FILTER.add(target.secrets())
        return self._post(url, body, headers, target.secrets())

    def _post(
        self, url: str, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]
    ) -> Delivery:
        error = "not attempted"
        for attempt in range(1, self.attempts + 1):
            if not self.may_send():
                return Delivery(False, attempt - 1, "not sent: this replica lost the leader Lease")
            try:
                resp = self.session.post(url, data=body, headers=dict(headers),
                                         timeout=self.timeout)  # fmt: skip
                status = resp.status_code
                resp.close()
                if 200 <= status < 300:
                    return Delivery(True, attempt)
                error = f"HTTP {status}"
                if status != 429 and status < 500:
                    return Delivery(False, attempt, error)  # the request is wrong: no retry
            except requests.Timeout:
                error = f"timed out after {self.timeout:g} s"
            except requests.ConnectionError:
                error = "connection failed"  # the message would quote the URL: a secret
            except requests.RequestException as exc:
                error = type(exc).__name__
            if attempt < self.attempts:
                self.sleep(self.backoff * 2 ** (attempt - 1))
        return Delivery(False, self.attempts, redact(error, secrets))
