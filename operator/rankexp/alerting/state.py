"""Alert state, as Prometheus keeps it, and what to notify (pure, no I/O).

Each evaluation gives, per rule, the label sets for which the rule's condition holds
now (or None when the rule could not be evaluated). :func:`step` moves every alert of
``status.alerts`` through the states:

* a label set that starts to hold is **pending** (``activeSince``);
* pending for the rule's ``for`` (0: at once), it is **firing** (``firingSince``);
* a pending one that stops holding is dropped; a firing one is **resolved**
  (``resolvedAt``) and kept for a while so its resolve can be delivered;
* a rule that could not be evaluated (bad PromQL) keeps its alerts as they are; when
  Prometheus cannot be read the caller does not step at all (no fires, no resolves).

:func:`plan` says which receivers get what: a firing alert triggers each receiver whose
severities match, again once ``cooldown`` has passed since that receiver's last trigger
(at once if that delivery failed); a resolved one sends a resolve to each receiver that
was triggered and has not had a successful resolve. Everything needed to resume lives in
the alert entries, so an operator restart neither loses a firing alert nor notifies it
twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from rankexp.api import AlertRule, Receiver

#: Resolved alerts are kept this long (their resolve deliveries, the status reader).
KEEP_RESOLVED = timedelta(hours=1)
MAX_ALERTS = 256

Action = Literal["trigger", "resolve"]


@dataclass(frozen=True)
class Active:
    """One label set for which a rule's condition holds now."""

    labels: dict[str, str]
    value: float


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def dedup_key(policy_uid: str, rule: str, labels: Mapping[str, str]) -> str:
    """Stable per policy, rule and label set: PagerDuty's incident key."""
    text = json.dumps([policy_uid, rule, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _key(rule: str, labels: Mapping[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return rule, tuple(sorted(labels.items()))


def step(
    previous: Sequence[Mapping[str, Any]],
    results: Mapping[str, Sequence[Active] | None],
    rules: Sequence[AlertRule],
    *,
    now: datetime,
    policy_uid: str,
    for_of: Mapping[str, timedelta],
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """The alerts after one evaluation, and the transitions as (alert, "firing" |
    "resolved") pairs. ``results[rule]`` is None when the rule could not be evaluated;
    ``for_of[rule]`` is its ``for``."""
    stamp = _fmt(now)
    by_rule = {r.name: r for r in rules}
    current = {_key(a["rule"], a.get("labels") or {}): dict(a) for a in previous}
    out: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    transitions: list[tuple[dict[str, Any], str]] = []

    for key, alert in current.items():
        rule = by_rule.get(alert["rule"])
        if rule is None:  # the rule left the policy: its firing alerts resolve
            if alert["state"] == "firing":
                alert.update(state="resolved", resolvedAt=stamp)
                transitions.append((alert, "resolved"))
            if alert["state"] == "resolved":
                out[key] = alert
            continue
        if results.get(rule.name) is None:
            out[key] = alert  # not evaluated: unchanged
            continue
        active = {_key(rule.name, a.labels): a for a in results[rule.name] or ()}
        if key in active:
            continue  # handled below with the active series
        if alert["state"] == "firing":
            alert.update(state="resolved", resolvedAt=stamp)
            transitions.append((alert, "resolved"))
            out[key] = alert
        elif alert["state"] == "resolved":
            out[key] = alert
        # a pending alert that stopped holding is dropped

    for rule in rules:
        series = results.get(rule.name)
        if series is None:
            continue
        wait = for_of[rule.name]
        for a in series:
            key = _key(rule.name, a.labels)
            found = current.get(key)
            if found is None or found["state"] == "resolved":
                alert = {
                    "rule": rule.name,
                    "severity": rule.severity,
                    "labels": dict(a.labels),
                    "state": "pending",
                    "activeSince": stamp,
                    "dedupKey": dedup_key(policy_uid, rule.name, a.labels),
                    "deliveries": [],
                }
            else:
                alert = found
            alert["value"] = a.value
            alert["severity"] = rule.severity
            if alert["state"] == "pending" and now - _parse(alert["activeSince"]) >= wait:
                alert.update(state="firing", firingSince=stamp)
                alert.pop("resolvedAt", None)
                transitions.append((alert, "firing"))
            out[key] = alert

    kept = [
        a
        for a in out.values()
        if a["state"] != "resolved" or now - _parse(a["resolvedAt"]) < KEEP_RESOLVED
    ]
    kept.sort(key=lambda a: (a["rule"], sorted((a.get("labels") or {}).items())))
    return kept[:MAX_ALERTS], transitions


def receiver_wants(receiver: Receiver, severity: str) -> bool:
    return not receiver.severities or severity in receiver.severities


def _last(alert: Mapping[str, Any], receiver: str, action: str) -> Mapping[str, Any] | None:
    for d in alert.get("deliveries") or []:
        if d.get("receiver") == receiver and d.get("action") == action:
            found: Mapping[str, Any] = d
            return found
    return None


def plan(
    alerts: Iterable[Mapping[str, Any]],
    receivers: Sequence[tuple[str, Receiver]],
    *,
    now: datetime,
    cooldown: timedelta,
) -> list[tuple[int, str, Action]]:
    """(alert index, receiver name, action) for every delivery due now."""
    due: list[tuple[int, str, Action]] = []
    for i, alert in enumerate(alerts):
        for name, receiver in receivers:
            if not receiver_wants(receiver, str(alert.get("severity"))):
                continue
            trigger = _last(alert, name, "trigger")
            if alert["state"] == "firing":
                if (
                    trigger is None
                    or not trigger.get("ok")
                    or now - _parse(trigger["time"]) >= cooldown
                ):
                    due.append((i, name, "trigger"))
            elif alert["state"] == "resolved" and trigger is not None:
                resolve = _last(alert, name, "resolve")
                if resolve is None or not resolve.get("ok"):
                    due.append((i, name, "resolve"))
    return due


def record(
    alert: dict[str, Any],
    receiver: str,
    action: Action,
    *,
    now: datetime,
    ok: bool,
    attempts: int,
    error: str | None,
) -> None:
    """Keep the latest delivery per (receiver, action) on the alert."""
    deliveries = [
        d
        for d in alert.get("deliveries") or []
        if not (d.get("receiver") == receiver and d.get("action") == action)
    ]
    entry: dict[str, Any] = {
        "receiver": receiver,
        "action": action,
        "time": _fmt(now),
        "ok": ok,
        "attempts": attempts,
    }
    if error:
        entry["error"] = error[:1024]
    deliveries.append(entry)
    alert["deliveries"] = deliveries[-16:]
    if ok and action == "trigger":
        alert["lastNotified"] = _fmt(now)


def compare(value: float, op: str, threshold: float) -> bool:
    return {
        ">": value > threshold,
        ">=": value >= threshold,
        "<": value < threshold,
        "<=": value <= threshold,
    }[op]
