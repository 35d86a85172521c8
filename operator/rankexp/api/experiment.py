"""The Experiment: spec (variants, traffic, analysis, promotion) and status (runs, evidence)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, model_validator

from rankexp.api.common import (
    DNS_LABEL,
    ENV_NAME,
    MAX_VARIANTS,
    MIN_VARIANTS,
    RESERVED_VARIANT_NAMES,
    Duration,
    Quantity,
    _Model,
    cel,
    validations,
)

# ---------------------------------------------------------------------------------------
# Experiment
# ---------------------------------------------------------------------------------------


class EnvVar(_Model):
    name: str = Field(
        min_length=1, max_length=256, pattern=ENV_NAME, description="Environment variable name."
    )
    value: str = Field(default="", max_length=4096, description="Literal value.")


class ResourceRequirements(_Model):
    limits: dict[str, Quantity] | None = Field(default=None, description="e.g. {cpu: '1'}")
    requests: dict[str, Quantity] | None = Field(default=None, description="e.g. {memory: 1Gi}")


class PodTemplate(_Model):
    image: str = Field(
        min_length=1, max_length=512, pattern=r"^\S+$", description="Ranker image for all pods."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Pull policy of the ranker container."
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Requests and limits of each ranker container."
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Extra environment for every pod."
    )


class ModelRef(_Model):
    uri: str = Field(
        min_length=1,
        max_length=1024,
        description=(
            "Model directory: file:///path or an absolute path. Other schemes are accepted by "
            "the schema but the operator marks the Experiment Degraded (UnsupportedModelURI)."
        ),
    )


class Variant(_Model):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"self.name.matches('{DNS_LABEL}')",
                "variant name must be a DNS label: lowercase letters, digits and '-', "
                "starting and ending with a letter or digit",
            ),
            cel(
                "!(self.name in " + repr(list(RESERVED_VARIANT_NAMES)).replace('"', "'") + ")",
                "variant names 'router' and 'routing' are reserved for the experiment's router",
            ),
            cel("self.weight >= 0 && self.weight <= 100", "variant weight must be in 0..100"),
            cel("self.replicas >= 0", "variant replicas must not be negative"),
        )
    )

    name: str = Field(min_length=1, max_length=63, description="Variant name (a DNS label).")
    model: ModelRef = Field(description="The model this variant serves.")
    weight: int = Field(description="Integer percentage of users routed here (0..100).")
    replicas: int = Field(default=1, description="Ranker pods for this variant.")
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=32,
        description="Extra environment for this variant's pods (wins over template.env).",
    )


class Traffic(_Model):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.steps.all(s, s >= 1 && s <= 100)",
                "traffic steps must be percentages in 1..100",
            ),
            cel(
                "self.steps.isSorted()",
                "traffic steps must be in ascending order",
            ),
        )
    )

    steps: list[int] = Field(
        default_factory=list,
        max_length=20,
        description="Optional ramp of the non-control weight, in percent (e.g. [10, 25, 50]).",
    )


MetricName = Literal["ctr", "engagement_rate", "dwell_time"]
LIMIT_METRICS = ("latency_p95_ms", "error_rate")
MARGIN_METRICS: tuple[str, ...] = get_args(MetricName)
GuardrailMetric = Literal["latency_p95_ms", "error_rate", "ctr", "engagement_rate", "dwell_time"]
DriftFeature = Annotated[str, Field(min_length=1, max_length=63)]


class Guardrail(_Model):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(has(self.max) ? 1 : 0) + (has(self.nonInferiorityMargin) ? 1 : 0) "
                "+ (has(self.maxIncreaseMs) ? 1 : 0) == 1",
                "a guardrail sets exactly one of max, nonInferiorityMargin and maxIncreaseMs",
            ),
            cel(
                "!has(self.max) || self.metric in ['latency_p95_ms', 'error_rate']",
                "max is for latency_p95_ms and error_rate",
            ),
            cel(
                "!has(self.nonInferiorityMargin) || "
                "self.metric in ['ctr', 'engagement_rate', 'dwell_time']",
                "nonInferiorityMargin is for ctr, engagement_rate and dwell_time",
            ),
            cel(
                "!has(self.maxIncreaseMs) || self.metric == 'latency_p95_ms'",
                "maxIncreaseMs is for latency_p95_ms",
            ),
        )
    )

    metric: GuardrailMetric = Field(description="Guarded metric.")
    max: float | None = Field(
        default=None, ge=0, description="Absolute upper limit for any treatment."
    )
    non_inferiority_margin: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="Relative margin: roll back when a treatment is shown worse than "
        "control by more than this (0.02 = 2 %).",
    )
    max_increase_ms: float | None = Field(
        default=None,
        ge=0,
        description="latency_p95_ms only: roll back when a treatment's p95 is shown above "
        "control's by more than this many milliseconds (bucket-bootstrap interval).",
    )

    @model_validator(mode="after")
    def _mirror_cel_rules(self) -> Guardrail:
        given = (self.max, self.non_inferiority_margin, self.max_increase_ms)
        if sum(x is not None for x in given) != 1:
            raise ValueError(
                "a guardrail sets exactly one of max, nonInferiorityMargin and maxIncreaseMs"
            )
        if self.max_increase_ms is not None and self.metric != "latency_p95_ms":
            raise ValueError("maxIncreaseMs is for latency_p95_ms")
        if self.max is not None and self.metric not in LIMIT_METRICS:
            raise ValueError("max is for latency_p95_ms and error_rate")
        if self.non_inferiority_margin is not None and self.metric not in MARGIN_METRICS:
            raise ValueError("nonInferiorityMargin is for ctr, engagement_rate and dwell_time")
        return self


class DriftSpec(_Model):
    psi: float = Field(default=0.2, ge=0, description="Population stability index threshold.")
    ks_p_value: float = Field(
        default=0.05, ge=0, le=1, description="Two-sample KS p-value threshold."
    )
    features: list[DriftFeature] = Field(
        default_factory=list, max_length=32, description="Features compared besides the score."
    )
    action: Literal["rollback", "alert", "none"] = Field(
        default="rollback", description="What to do when drift is detected."
    )


class CupedSpec(_Model):
    enabled: bool = Field(
        default=False,
        description="Adjust the primary metric with its pre-period per user bucket (CUPED); "
        "without a pre-period the analysis runs unadjusted and status says why.",
    )
    pre_window: Duration = Field(
        default="168h",
        description="The window before status.startedAt read from the same series as the "
        "covariate (the variants' users before the run).",
    )


class Analysis(_Model):
    interval: Duration = Field(default="1m", description="How often metrics are analysed.")
    primary_metric: MetricName = Field(default="ctr", description="Metric that decides.")
    secondary_metrics: list[MetricName] = Field(
        default_factory=list, max_length=3, description="Reported, Holm-corrected."
    )
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Significance level.")
    method: Literal["sequential", "fixed"] = Field(
        default="sequential", description="Always-valid sequential test or classical test."
    )
    min_samples_per_variant: int = Field(
        default=1000, ge=1, description="Impressions per variant before any decision."
    )
    min_users_with_click: int = Field(
        default=200,
        ge=1,
        description="Interleaving: users seen clicking an interleaved feed before any decision.",
    )
    max_duration: Duration = Field(
        default="24h", description="After this the experiment ends Inconclusive."
    )
    guardrails: list[Guardrail] = Field(
        default_factory=list,
        max_length=8,
        description="Absolute limits {metric, max} (latency_p95_ms, error_rate), "
        "non-inferiority margins against control {metric, nonInferiorityMargin} and the "
        "p95 latency increase over control {metric: latency_p95_ms, maxIncreaseMs}.",
    )
    srm_p_value: float = Field(
        default=0.001, gt=0, lt=1, description="Sample-ratio-mismatch threshold."
    )
    drift: DriftSpec | None = Field(default=None, description="Drift detection.")
    cuped: CupedSpec | None = Field(
        default=None, description="Variance reduction with pre-period data (CUPED)."
    )


class AutoAction(_Model):
    auto: bool = Field(default=False, description="Act without a human.")


class Promotion(_Model):
    auto: bool = Field(default=False, description="Promote a significant winner without a human.")
    approved_variant: str | None = Field(
        default=None,
        max_length=63,
        description="Set by a person (or `rankexp promote`) to promote this variant now; "
        "the operator never writes it.",
    )


class ExperimentSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"size(self.variants) >= {MIN_VARIANTS} && size(self.variants) <= {MAX_VARIANTS}",
                f"an experiment needs between {MIN_VARIANTS} and {MAX_VARIANTS} variants",
            ),
            cel(
                "self.variants.map(v, v.weight).sum() == 100",
                "variant weights must sum to 100",
            ),
            cel(
                "self.variants.all(a, self.variants.exists_one(b, b.name == a.name))",
                "variant names must be unique",
            ),
            cel(
                "self.variants.exists(v, v.name == self.control)",
                "control must name one of the variants",
            ),
            cel(
                "!has(self.promotion) || !has(self.promotion.approvedVariant) || "
                "self.variants.exists(v, v.name == self.promotion.approvedVariant)",
                "promotion.approvedVariant must name one of the variants",
            ),
            cel(
                "!has(self.mode) || self.mode != 'interleaving' || size(self.variants) == 2",
                "interleaving takes exactly two variants: control and one treatment",
            ),
        )
    )

    template: PodTemplate = Field(description="Pod settings shared by every variant.")
    variants: list[Variant] = Field(
        max_length=MAX_VARIANTS,
        description=f"Model variants ({MIN_VARIANTS}..{MAX_VARIANTS}, A/B/n).",
    )
    control: str = Field(min_length=1, max_length=63, description="Name of the control variant.")
    traffic: Traffic | None = Field(default=None, description="Traffic ramp.")
    analysis: Analysis | None = Field(default=None, description="Statistics settings.")
    promotion: Promotion | None = Field(default=None, description="Promote the winner.")
    rollback: AutoAction | None = Field(default=None, description="Roll back on a loss.")
    paused: bool = Field(
        default=False, description="Freeze all changes to the children while true."
    )
    mode: Literal["ab", "interleaving"] = Field(
        default="ab",
        description="ab: each user sees one variant's feed. interleaving (exactly two "
        "variants): users routed to the treatment get control's and the treatment's feeds "
        "merged by team draft, and the analysis decides on the preference share.",
    )

    @model_validator(mode="after")
    def _mirror_cel_rules(self) -> ExperimentSpec:
        """The CEL rules again, so a spec parsed outside the API server fails the same way."""
        names = [v.name for v in self.variants]
        errors = []
        if not MIN_VARIANTS <= len(names) <= MAX_VARIANTS:
            errors.append(f"an experiment needs between {MIN_VARIANTS} and {MAX_VARIANTS} variants")
        if sum(v.weight for v in self.variants) != 100:
            errors.append("variant weights must sum to 100")
        if len(set(names)) != len(names):
            errors.append("variant names must be unique")
        if self.control not in names:
            errors.append("control must name one of the variants")
        if self.mode == "interleaving" and len(names) != 2:
            errors.append("interleaving takes exactly two variants: control and one treatment")
        approved = self.promotion.approved_variant if self.promotion else None
        if approved is not None and approved not in names:
            errors.append("promotion.approvedVariant must name one of the variants")
        for v in self.variants:
            if not re.match(DNS_LABEL, v.name):
                errors.append("variant name must be a DNS label")
            if v.name in RESERVED_VARIANT_NAMES:
                errors.append("variant names 'router' and 'routing' are reserved")
            if not 0 <= v.weight <= 100:
                errors.append("variant weight must be in 0..100")
            if v.replicas < 0:
                errors.append("variant replicas must not be negative")
        if errors:
            raise ValueError("; ".join(dict.fromkeys(errors)))
        return self


Phase = Literal["Pending", "Running", "Promoted", "RolledBack", "Inconclusive", "Failed"]
PHASES: tuple[str, ...] = get_args(Phase)


class Condition(_Model):
    type: str = Field(
        max_length=63, description="Ready, Reconciling, Stalled, Progressing, Degraded, Concluded."
    )
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=128, description="One CamelCase word.")
    message: str = Field(default="", max_length=4096)
    last_transition_time: datetime
    observed_generation: int | None = None


class TrafficWeight(_Model):
    variant: str = Field(max_length=63)
    weight: int = Field(ge=0, le=100)


Name = Annotated[str, Field(max_length=63)]
Reason = Annotated[str, Field(max_length=4096)]
Decision = Literal["Hold", "Continue", "Promote", "Rollback", "Inconclusive"]
ActionType = Literal["Start", "Ramp", "Promote", "Rollback", "Inconclusive"]


class VariantStatus(_Model):
    name: str = Field(max_length=63)
    ready_replicas: int = Field(default=0, ge=0)
    exposures: float | None = Field(default=None, description="Feeds the router served.")
    impressions: float | None = Field(default=None, description="Items shown.")
    clicks: float | None = None
    ctr: float | None = None
    latency_p95_ms: float | None = None
    error_rate: float | None = None


class TrafficPeriod(_Model):
    since: datetime = Field(description="When the operator set these weights.")
    settled_at: datetime | None = Field(
        default=None, description="When every router pod served them (the rollout was done)."
    )
    weights: list[TrafficWeight] = Field(max_length=MAX_VARIANTS)


class Action(_Model):
    """The last traffic action. The operator writes it to the routing ConfigMap (annotation
    rankexp.io/last-action) before status, so a crash in between is finished on restart."""

    seq: int = Field(ge=0, description="Action number, increasing for the object's life.")
    type: ActionType
    time: datetime
    generation: int | None = None
    design: str = Field(max_length=64, description="Hash of the spec the run was started for.")
    step: int = Field(default=0, ge=0, description="Index of the traffic stage in force.")
    stages: int = Field(default=1, ge=1, description="Number of traffic stages of the run.")
    weights: list[TrafficWeight] = Field(max_length=MAX_VARIANTS)
    scaled_down: list[Name] = Field(
        default_factory=list, max_length=MAX_VARIANTS, description="Variants at 0 replicas."
    )
    outcome: Literal["Promoted", "RolledBack", "Inconclusive"] | None = None
    winner: str | None = Field(default=None, max_length=63)
    reason: str = Field(default="", max_length=4096)


class Window(_Model):
    start: datetime
    end: datetime


class Estimate(_Model):
    metric: Name
    value: float | None = None
    std_error: float | None = None


class VariantEvidence(_Model):
    name: Name
    exposures: float | None = None
    expected_share: float | None = Field(
        default=None, description="Share of exposures the weights in force over the window imply."
    )
    srm_exposures: float | None = Field(
        default=None,
        description="Exposures the sample-ratio check tested: those of the settled traffic "
        "periods (after each weight change settled), against expectedShare.",
    )
    estimates: list[Estimate] = Field(default_factory=list, max_length=8)


class ComparisonEvidence(_Model):
    variant: Name
    metric: Name
    lift: float | None = None
    relative_lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    relative_ci_low: float | None = None
    relative_ci_high: float | None = None
    p_value: float | None = None
    p_value_adjusted: float | None = None
    significant: bool = False
    test: str | None = Field(default=None, max_length=16)


class DriftEvidence(_Model):
    histogram: Name
    variant: Name
    psi: float | None = None
    ks_statistic: float | None = None
    ks_p_value: float | None = None
    ok: bool | None = None
    gating: bool = True


class GuardrailEvidence(_Model):
    metric: Name
    variant: Name
    value: float | None = None
    limit: float | None = None
    ok: bool | None = None
    kind: Literal["absolute", "non_inferiority", "latency_non_inferiority"]
    ci_low: float | None = Field(
        default=None, description="latency_non_inferiority: the interval of the p95 difference."
    )
    ci_high: float | None = None


class SampleProgress(_Model):
    variant: Name
    observed: float | None = None
    required: float | None = None
    progress_percent: float | None = None


class PowerEvidence(_Model):
    metric: Name
    unit: str = Field(max_length=32, description="What the sample counts: impressions, ...")
    mde: float | None = Field(default=None, description="Relative minimum detectable effect.")
    power: float | None = None
    baseline: float | None = None
    design_effect: float | None = None
    required_per_variant: float | None = None
    variants: list[SampleProgress] = Field(default_factory=list, max_length=MAX_VARIANTS)


class InterleavingEvidence(_Model):
    """Interleaving experiments: the preference share and the counts behind it."""

    delta: float | None = Field(
        default=None,
        description="Preference share (treatment wins - control wins) / (wins + ties).",
    )
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    wins_control: float | None = Field(default=None, description="Clicked feeds control won.")
    wins_treatment: float | None = Field(default=None, description="Clicked feeds it won.")
    ties: float | None = None
    clicking_users: float | None = Field(default=None, description="Users seen clicking.")


class VarianceReduction(_Model):
    variant: str = Field(max_length=63)
    value: float | None = Field(default=None, description="1 - Var(adjusted) / Var(unadjusted).")


class CupedEvidence(_Model):
    """CUPED on the primary metric: applied or not (and why), theta, the reduction."""

    applied: bool = False
    metric: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=1024)
    pre_window: Window | None = Field(default=None, description="The pre-period read.")
    theta: float | None = None
    rho: float | None = Field(
        default=None, description="Correlation of the pre-period with the run, pooled."
    )
    variance_reduction: list[VarianceReduction] = Field(
        default_factory=list, max_length=MAX_VARIANTS
    )


class AnalysisStatus(_Model):
    time: datetime | None = None
    window: Window | None = None
    decision: Decision | None = None
    reason_code: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=4096)
    winner: str | None = Field(
        default=None, max_length=63, description="The winner the analysis proposes."
    )
    primary_metric: str | None = Field(default=None, max_length=32)
    method: str | None = Field(default=None, max_length=16)
    lift: float | None = Field(
        default=None,
        description="Relative lift of the best treatment on the primary metric "
        "(interleaving: the preference share).",
    )
    p_value: float | None = Field(default=None, description="Its (Holm-adjusted) p-value.")
    srm_p_value: float | None = None
    variants: list[VariantEvidence] = Field(default_factory=list, max_length=MAX_VARIANTS)
    comparisons: list[ComparisonEvidence] = Field(default_factory=list, max_length=40)
    drift: list[DriftEvidence] = Field(default_factory=list, max_length=330)
    guardrails: list[GuardrailEvidence] = Field(default_factory=list, max_length=80)
    required_samples: PowerEvidence | None = None
    interleaving: InterleavingEvidence | None = Field(
        default=None, description="Interleaving experiments: the preference share."
    )
    cuped: CupedEvidence | None = Field(
        default=None, description="Variance reduction of the primary metric (when enabled)."
    )


def _condition_list(description: str) -> Any:
    return Field(
        default_factory=list,
        max_length=16,
        description=description,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


class ExperimentStatus(_Model):
    observed_generation: int | None = Field(default=None, description="Last handled generation.")
    phase: Phase | None = Field(default=None, description="Summary of the conditions.")
    conditions: list[Condition] = _condition_list("Ready, Progressing, Degraded, Concluded.")
    started_at: datetime | None = Field(
        default=None, description="When the run first became Running: the window's start."
    )
    traffic: list[TrafficWeight] = Field(
        default_factory=list, max_length=MAX_VARIANTS, description="Effective weights."
    )
    traffic_history: list[TrafficPeriod] = Field(
        default_factory=list,
        max_length=32,
        description="Weights in force since the run started (for the sample-ratio check).",
    )
    last_action: Action | None = Field(default=None, description="The last traffic action.")
    variants: list[VariantStatus] = Field(
        default_factory=list, max_length=MAX_VARIANTS, description="Per-variant observations."
    )
    analysis: AnalysisStatus | None = Field(default=None, description="Latest evidence.")
    winner: str | None = Field(default=None, max_length=63, description="Promoted variant.")


class Experiment(_Model):
    """An online experiment: model variants, the traffic split and the analysis settings."""

    spec: ExperimentSpec
    status: ExperimentStatus | None = None
