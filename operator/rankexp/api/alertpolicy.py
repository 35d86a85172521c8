"""The AlertPolicy: rules, receivers, selectors and the alert state in status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from rankexp.api.common import Duration, _Model, cel, validations
from rankexp.api.experiment import Condition, Name, _condition_list

# ---------------------------------------------------------------------------------------
# AlertPolicy
# ---------------------------------------------------------------------------------------


#: The named metrics an alert rule can compare (rankexp.prom.metrics.ALERT_METRICS has the
#: PromQL; drift_psi is computed from the score histograms).
AlertMetric = Literal[
    "latency_p95_ms",
    "error_rate",
    "cache_hit_rate",
    "ctr",
    "engagement_rate",
    "request_rate",
    "fallback_rate",
    "drift_psi",
]
Severity = Literal["info", "warning", "critical"]


class AlertRule(_Model):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.expr) ? !(has(self.metric) || has(self.op) || has(self.threshold))"
                " : (has(self.metric) && has(self.op) && has(self.threshold))",
                "a rule sets either expr or all of metric, op and threshold",
            ),
        )
    )

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=63, description="Rule name.")
    expr: str | None = Field(
        default=None,
        max_length=4096,
        description="A PromQL condition: every series it returns is an active alert.",
    )
    metric: AlertMetric | None = Field(
        default=None, description="A named metric, per namespace, experiment and variant."
    )
    op: Literal[">", ">=", "<", "<="] | None = Field(default=None, description="Comparison.")
    threshold: float | None = Field(default=None, description="Right-hand side.")
    window: Duration = Field(default="5m", description="Range of a named metric.")
    for_: Duration = Field(default="5m", alias="for", description="How long before firing.")
    severity: Severity = Field(default="warning")
    summary: str | None = Field(
        default=None, max_length=512, description="One line for the notification."
    )

    @model_validator(mode="after")
    def _mirror_cel_rules(self) -> AlertRule:
        named = (self.metric, self.op, self.threshold)
        if self.expr is not None and any(x is not None for x in named):
            raise ValueError("a rule sets either expr or all of metric, op and threshold")
        if self.expr is None and any(x is None for x in named):
            raise ValueError("a rule sets either expr or all of metric, op and threshold")
        return self


class SecretKeyRef(_Model):
    name: str = Field(max_length=253, description="Secret in the policy's namespace.")
    key: str = Field(max_length=253, description="Key holding the value.")


class Receiver(_Model):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.hmacSecretRef) || self.type == 'webhook'",
                "hmacSecretRef is for webhook receivers",
            ),
            cel(
                "!has(self.url) || self.type == 'pagerduty'",
                "url is for pagerduty receivers (slack and webhook URLs are secrets)",
            ),
        )
    )

    name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Unique name (default: <type>-<index>).",
    )
    type: Literal["slack", "pagerduty", "webhook"]
    secret_ref: SecretKeyRef = Field(
        description="slack: the incoming-webhook URL; pagerduty: the routing key; webhook: the URL."
    )
    hmac_secret_ref: SecretKeyRef | None = Field(
        default=None, description="webhook: the HMAC-SHA256 key that signs each body."
    )
    url: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^https?://\S+$",
        description="pagerduty: the Events API v2 endpoint (default "
        "https://events.pagerduty.com/v2/enqueue; the EU one is events.eu.pagerduty.com).",
    )
    severities: list[Severity] = Field(
        default_factory=list, max_length=3, description="Severities sent here (empty: all)."
    )


class LabelSelectorRequirement(_Model):
    key: str = Field(max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=32)


class LabelSelector(_Model):
    match_labels: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, description="Labels the Experiments must have."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=16)


class AlertPolicySpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.rules.all(a, self.rules.exists_one(b, b.name == a.name))",
                "rule names must be unique",
            ),
        )
    )

    rules: list[AlertRule] = Field(min_length=1, max_length=32, description="Alert rules.")
    receivers: list[Receiver] = Field(
        default_factory=list, max_length=8, description="Where alerts go."
    )
    experiment_selector: LabelSelector | None = Field(
        default=None,
        description="Only the Experiments of the policy's namespace with these labels "
        "(named-metric rules). Absent: every experiment's series.",
    )
    interval: Duration = Field(default="30s", description="Evaluation interval.")
    cooldown: Duration = Field(
        default="10m", description="Quiet time between repeats of a firing alert."
    )

    def receiver_names(self) -> list[str]:
        return [r.name or f"{r.type}-{i}" for i, r in enumerate(self.receivers)]


class Delivery(_Model):
    receiver: Name
    action: Literal["trigger", "resolve"]
    time: datetime
    ok: bool
    attempts: int = Field(ge=0)
    error: str | None = Field(default=None, max_length=1024)


class AlertState(_Model):
    rule: Name
    severity: str = Field(max_length=16)
    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(default_factory=dict)
    state: Literal["pending", "firing", "resolved"]
    active_since: datetime = Field(description="When the condition started to hold.")
    firing_since: datetime | None = None
    resolved_at: datetime | None = None
    value: float | None = None
    dedup_key: str = Field(max_length=64)
    last_notified: datetime | None = Field(default=None, description="Last trigger sent.")
    deliveries: list[Delivery] = Field(default_factory=list, max_length=16)


class AlertPolicyStatus(_Model):
    observed_generation: int | None = None
    alerts: list[AlertState] = Field(
        default_factory=list, max_length=256, description="Pending, firing, recently resolved."
    )
    firing_count: int | None = Field(default=None, ge=0)
    last_evaluation: datetime | None = None
    conditions: list[Condition] = _condition_list("Ready, Degraded.")


class AlertPolicy(_Model):
    """Alert rules on the ranker metrics and where to send the alerts."""

    spec: AlertPolicySpec
    status: AlertPolicyStatus | None = None
