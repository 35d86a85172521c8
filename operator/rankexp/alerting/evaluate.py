"""One evaluation of one AlertPolicy, as a plain function (the timer calls it).

:func:`evaluate` runs when ``spec.interval`` (x the interval scale) has passed since
``status.lastEvaluation``:

1. the scope: with ``experimentSelector``, the matching Experiments of the policy's
   namespace become label matchers for the named-metric rules;
2. each rule is evaluated against Prometheus: ``expr`` as given (every series it
   returns holds), a named metric through :mod:`rankexp.prom.metrics` compared with
   ``op``/``threshold``. Bad PromQL marks only that rule (Degraded, naming it and
   Prometheus's error); an unreachable Prometheus stops the evaluation with no change
   at all (no fires, no resolves: no alert storm when it comes back);
3. :mod:`rankexp.alerting.state` moves the alerts (pending, firing, resolved) and plans
   the deliveries; :mod:`rankexp.alerting.receivers` sends them, each receiver on its own, with
   retries. A receiver whose Secret or key is missing is Degraded by name and its
   deliveries fail; the others go on.

Secrets are read at each evaluation and never written anywhere: status, Events and
logs carry receiver names and redacted errors only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from rankexp.alerting import state as alertrules
from rankexp.alerting.receivers import PAGERDUTY_URL, Delivery, Message, Sender, Target
from rankexp.alerting.state import Active
from rankexp.analysis import parse_duration
from rankexp.api import AlertPolicySpec, AlertRule, LabelSelector, Receiver, kstatus
from rankexp.api import conditions as cond
from rankexp.prom.errors import MetricsError, PrometheusUnavailable, QueryError

#: deliveries of one evaluation in flight at once
SEND_THREADS = 8


class AlertStore(Protocol):
    def experiment_names(self, namespace: str, selector: str) -> Sequence[str]: ...

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None: ...


class AlertReader(Protocol):
    def query(self, promql: str, at: datetime) -> list[tuple[dict[str, str], float]]: ...

    def alert_values(
        self, metric: str, window: str, matchers: str = "", at: datetime | None = None
    ) -> list[tuple[dict[str, str], float]]: ...

    def close(self) -> None: ...


@dataclass
class Evaluated:
    status: dict[str, Any] = field(default_factory=dict)
    #: (type, reason, message) of the Events to post
    events: list[tuple[str, str, str]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def due(
    status: Mapping[str, Any],
    spec: AlertPolicySpec,
    now: datetime,
    scale: float,
    generation: int | None = None,
) -> bool:
    """Whether to evaluate now: never evaluated, a spec not yet evaluated (status's
    observedGeneration behind ``generation``), or the interval has passed."""
    last = status.get("lastEvaluation")
    if not last:
        return True
    if generation is not None and status.get("observedGeneration") != generation:
        return True
    since = datetime.fromisoformat(str(last).replace("Z", "+00:00"))
    return now - since >= timedelta(seconds=parse_duration(spec.interval) * scale)


def selector_string(selector: LabelSelector) -> str:
    """A label selector as the API's query string."""
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for e in selector.match_expressions:
        if e.operator == "In":
            parts.append(f"{e.key} in ({','.join(e.values)})")
        elif e.operator == "NotIn":
            parts.append(f"{e.key} notin ({','.join(e.values)})")
        elif e.operator == "Exists":
            parts.append(e.key)
        else:
            parts.append(f"!{e.key}")
    return ",".join(parts)


def scope_matchers(namespace: str, experiments: Sequence[str]) -> str:
    """PromQL matchers for a set of Experiments of one namespace (none: match nothing)."""
    names = "|".join(re.escape(n) for n in experiments) or "$^"
    return f'namespace="{namespace}",experiment=~"^(?:{names})$"'


def _evaluate_rule(
    rule: AlertRule, reader: AlertReader, matchers: str, now: datetime
) -> list[Active]:
    if rule.expr is not None:
        return [Active(labels, value) for labels, value in reader.query(rule.expr, now)]
    assert rule.metric is not None and rule.op is not None and rule.threshold is not None
    values = reader.alert_values(rule.metric, rule.window, matchers, now)
    return [
        Active(labels, value)
        for labels, value in values
        if alertrules.compare(value, rule.op, rule.threshold)
    ]


def _targets(
    store: AlertStore, namespace: str, receivers: Sequence[tuple[str, Receiver]]
) -> tuple[dict[str, Target], dict[str, str], list[str]]:
    """Receiver name -> Target; receiver name -> why it has none; every secret value."""
    targets: dict[str, Target] = {}
    problems: dict[str, str] = {}
    secrets: list[str] = []
    cache: dict[str, dict[str, str] | None] = {}

    def value(name: str, key: str) -> str | None:
        if name not in cache:
            cache[name] = store.read_secret(namespace, name)
        data = cache[name]
        return None if data is None else data.get(key)

    for rname, r in receivers:
        main = value(r.secret_ref.name, r.secret_ref.key)
        if main is None:
            found = cache.get(r.secret_ref.name) is not None
            why = f"has no key {r.secret_ref.key!r}" if found else "not found"
            problems[rname] = f"receiver {rname}: Secret {namespace}/{r.secret_ref.name} {why}"
            continue
        secrets.append(main)
        hmac_key = None
        if r.hmac_secret_ref is not None:
            hmac_key = value(r.hmac_secret_ref.name, r.hmac_secret_ref.key)
            if hmac_key is None:
                problems[rname] = (
                    f"receiver {rname}: HMAC key {r.hmac_secret_ref.key!r} of Secret "
                    f"{namespace}/{r.hmac_secret_ref.name} not found"
                )
                continue
            secrets.append(hmac_key)
        if r.type == "pagerduty":
            targets[rname] = Target("pagerduty", r.url or PAGERDUTY_URL, routing_key=main)
        else:
            targets[rname] = Target(r.type, main.strip(), hmac_key=hmac_key)
    return targets, problems, secrets


def _message(policy: str, alert: Mapping[str, Any], action: str, rule: AlertRule | None,
             now: datetime) -> Message:  # fmt: skip
    labels = dict(alert.get("labels") or {})
    value = alert.get("value")
    where = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    summary = (rule.summary if rule is not None and rule.summary else None) or (
        f"{alert['rule']} {'resolved' if action == 'resolve' else 'firing'} for {where or policy}"
        + (f" (value {value:.4g})" if isinstance(value, int | float) else "")
    )
    return Message(
        action=action,
        policy=policy,
        rule=str(alert["rule"]),
        severity=str(alert.get("severity", "warning")),
        labels=labels,
        value=value if isinstance(value, int | float) else None,
        summary=summary,
        dedup_key=str(alert["dedupKey"]),
        active_since=str(alert.get("activeSince")),
        firing_since=alert.get("firingSince"),
        resolved_at=alert.get("resolvedAt"),
        time=_fmt(now),
    )


def evaluate(
    body: Mapping[str, Any],
    *,
    store: AlertStore,
    reader: Callable[[], AlertReader],
    sender: Sender,
    now: datetime | None = None,
) -> Evaluated:
    """One evaluation (see the module docstring). The caller checks :func:`due`. The
    status carries kstatus's Reconciling and Stalled, derived from the rest."""
    now = now or datetime.now(UTC)
    out = _evaluate(body, store=store, reader=reader, sender=sender, now=now)
    out.status = kstatus.complete(
        body.get("status"),
        out.status,
        body["metadata"].get("generation"),
        _fmt(now),
        kstatus.alertpolicy_conditions,
    )
    return out


def _evaluate(
    body: Mapping[str, Any],
    *,
    store: AlertStore,
    reader: Callable[[], AlertReader],
    sender: Sender,
    now: datetime,
) -> Evaluated:
    stamp = _fmt(now)
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation")
    status: dict[str, Any] = dict(body.get("status") or {})
    conditions = list(status.get("conditions") or [])
    out = Evaluated()
    try:
        spec = AlertPolicySpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        message = "; ".join(e["msg"] for e in exc.errors())[:1024]
        conditions = cond.set_condition(conditions, cond.DEGRADED, True, "InvalidSpec", message,
                                        generation=generation, now=stamp)  # fmt: skip
        out.status = {"observedGeneration": generation, "conditions": conditions}
        return out

    problems: list[str] = []
    matchers = ""
    if spec.experiment_selector is not None:
        experiments = store.experiment_names(namespace, selector_string(spec.experiment_selector))
        matchers = scope_matchers(namespace, experiments)

    results: dict[str, list[Active] | None] = {}
    prom = reader()
    try:
        for rule in spec.rules:
            try:
                results[rule.name] = _evaluate_rule(rule, prom, matchers, now)
            except QueryError as exc:
                results[rule.name] = None
                problems.append(f"rule {rule.name}: Prometheus rejected the query: {exc.cause}")
    except PrometheusUnavailable as exc:
        conditions = cond.set_condition(
            conditions, cond.READY, False, "PrometheusUnavailable",
            f"no evaluation, no alert changed: {exc}"[:1024], generation=generation, now=stamp,
        )  # fmt: skip
        out.status = {"observedGeneration": generation, "conditions": conditions,
                      "lastEvaluation": stamp}  # fmt: skip
        return out
    except MetricsError as exc:
        problems.append(f"metrics unreadable: {exc}")
    finally:
        prom.close()

    for_of = {r.name: timedelta(seconds=parse_duration(r.for_)) for r in spec.rules}
    alerts, transitions = alertrules.step(
        status.get("alerts") or [], results, spec.rules, now=now,
        policy_uid=meta.get("uid", ""), for_of=for_of,
    )  # fmt: skip
    for alert, what in transitions:
        labels = " ".join(f"{k}={v}" for k, v in sorted((alert.get("labels") or {}).items()))
        kind = "Warning" if what == "firing" else "Normal"
        reason = "AlertFiring" if what == "firing" else "AlertResolved"
        out.events.append((kind, reason, f"{alert['rule']} ({alert['severity']}) {labels}"[:1024]))

    receivers = list(zip(spec.receiver_names(), spec.receivers, strict=True))
    targets, missing, out.secrets = _targets(store, namespace, receivers)
    problems.extend(missing.values())
    rules = {r.name: r for r in spec.rules}
    cooldown = timedelta(seconds=parse_duration(spec.cooldown))
    planned = alertrules.plan(alerts, receivers, now=now, cooldown=cooldown)
    sends: list[tuple[int, str, alertrules.Action, Future[Delivery]]] = []
    # each delivery on its own thread: a slow or failing receiver (retries, timeouts)
    # delays nobody else, and the evaluation ends after the slowest one
    with ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="notify") as pool:
        for index, receiver, action in planned:
            alert = alerts[index]
            target = targets.get(receiver)
            if target is None:
                alertrules.record(alert, receiver, action, now=now, ok=False, attempts=0,
                                  error=missing.get(receiver, "no target"))  # fmt: skip
                continue
            note = _message(f"{namespace}/{name}", alert, action, rules.get(alert["rule"]), now)
            sends.append((index, receiver, action, pool.submit(sender.send, target, note)))
    for index, receiver, sent, future in sends:
        alert = alerts[index]
        delivery = future.result()
        alertrules.record(alert, receiver, sent, now=now, ok=delivery.ok,
                          attempts=delivery.attempts, error=delivery.error)  # fmt: skip
        if not delivery.ok:
            failed = f"{receiver} {sent} {alert['rule']}: {delivery.error}"
            out.events.append(("Warning", "DeliveryFailed", failed[:1024]))

    conditions = cond.set_condition(
        conditions, cond.READY, True, "Evaluated",
        f"{len(spec.rules)} rules evaluated", generation=generation, now=stamp,
    )  # fmt: skip
    if problems:
        conditions = cond.set_condition(
            conditions, cond.DEGRADED, True,
            "SecretMissing" if not any(p.startswith("rule ") for p in problems) else "RuleFailed",
            "; ".join(problems)[:4096], generation=generation, now=stamp,
        )  # fmt: skip
    else:
        conditions = cond.set_condition(conditions, cond.DEGRADED, False, "AsExpected", "",
                                        generation=generation, now=stamp)  # fmt: skip
    out.status = {
        "observedGeneration": generation,
        "alerts": alerts,
        "firingCount": sum(a["state"] == "firing" for a in alerts),
        "lastEvaluation": stamp,
        "conditions": conditions,
    }
    return out
