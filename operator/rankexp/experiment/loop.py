"""The analysis loop: one tick of one Experiment, as a plain function.

:func:`tick` is what the operator's timer calls for every Experiment. It

1. finishes an action that is in the routing ConfigMap but not yet in status (the
   operator died in between: no new decision is taken);
2. copies the child Deployments' readiness into status; the phase turns Running (and
   ``status.startedAt`` is set) when every component is ready for the first time;
3. while Running and not paused: promotes a variant the user approved
   (``spec.promotion.approvedVariant``) at once, and, once per ``spec.analysis.interval``,
   reads the window ``[startedAt, now]`` from Prometheus and decides
   (:mod:`rankexp.experiment.measure`), and acts (:mod:`rankexp.experiment.rollout`): ramp
   to the next traffic stage, promote, roll back, end Inconclusive at ``maxDuration``, or
   hold with a condition that says why.

Missing, stale or unreadable data never promotes or rolls back: it holds. The one action
taken without data is Inconclusive at ``maxDuration`` (control back to 100 %), so an
outage of Prometheus cannot leave an experiment running forever.

Nothing here writes the Experiment; the caller patches ``status`` with the returned
:class:`TickOutcome` and posts its Events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from rankexp.analysis import parse_duration
from rankexp.api import Analysis, ExperimentSpec, kstatus
from rankexp.api import conditions as cond
from rankexp.experiment import reconcile as rec
from rankexp.experiment import resources as res
from rankexp.experiment import rollout
from rankexp.experiment.measure import MetricsReader, Settings, decide_tick, fmt_time
from rankexp.experiment.rollout import ActionRecord
from rankexp.experiment.store import ChildStore, Event

#: Hold reasons on the Concluded condition (Concluded=False while holding).
HOLD_REASONS = {
    "SampleRatioMismatch": "SampleRatioMismatch",
    "TooFewSamples": "NotEnoughSamples",
    "MissingData": "MissingData",
}


@dataclass
class TickOutcome:
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    #: An action applied or finished now: announce it with its fixed-name Event.
    action: ActionRecord | None = None
    analyzed: bool = False
    #: seconds the analysis ran after it was due (when it ran)
    lag: float | None = None


def interval_of(analysis: Analysis, scale: float) -> timedelta:
    return timedelta(seconds=parse_duration(analysis.interval) * scale)


def tick(
    store: ChildStore,
    body: Mapping[str, Any],
    *,
    settings: Settings,
    reader: Callable[[], MetricsReader],
    now: datetime | None = None,
) -> TickOutcome:
    """One pass of the loop for one Experiment (see the module docstring); the status it
    returns carries kstatus's Reconciling and Stalled, derived from the rest."""
    now = now or datetime.now(UTC)
    outcome = _tick(store, body, settings=settings, reader=reader, now=now)
    if outcome.status:
        outcome.status = kstatus.complete(
            body.get("status"),
            outcome.status,
            body["metadata"].get("generation"),
            fmt_time(now),
            kstatus.experiment_conditions,
        )
    return outcome


class _WouldAct(Exception):
    """Raised by :class:`_Probe` where a tick would write, read fresh or analyse."""


class _Probe:
    """A ChildStore that lists from the real one and refuses everything else."""

    def __init__(self, store: ChildStore) -> None:
        self._store = store

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._store.list(kind, namespace, selector)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        raise _WouldAct

    def delete(self, kind: str, namespace: str, name: str) -> None:
        raise _WouldAct

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        raise _WouldAct


def _no_reader() -> MetricsReader:
    raise _WouldAct


def needs_tick(
    store: ChildStore,
    body: Mapping[str, Any],
    *,
    settings: Settings,
    now: datetime | None = None,
) -> bool:
    """Whether :func:`tick` would do anything for this copy of the Experiment (kopf's,
    as its watch last saw it): change status, touch a child, read a routing record or
    run the analysis. Most ticks of a running Experiment only find nothing changed; this
    answers that from memory, so the caller reads the Experiment from the API server
    only for a tick that acts. A stale copy can only make a tick wait for the next one,
    never act on old data: the tick itself runs on a fresh read."""
    try:
        outcome = tick(_Probe(store), body, settings=settings, reader=_no_reader, now=now)
    except _WouldAct:
        return True
    return bool(outcome.status or outcome.events or outcome.action)


def _tick(
    store: ChildStore,
    body: Mapping[str, Any],
    *,
    settings: Settings,
    reader: Callable[[], MetricsReader],
    now: datetime,
) -> TickOutcome:
    stamp = fmt_time(now)
    status: dict[str, Any] = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    if status.get("observedGeneration") != generation or status.get("phase") == "Failed":
        return TickOutcome()  # the reconciler has not caught up: its turn first
    if cond.is_true(status.get("conditions"), cond.DEGRADED):
        return TickOutcome()
    try:
        spec = ExperimentSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return TickOutcome()
    experiment = res.ExperimentRef.from_body(body)
    existing = rec.list_children(store, experiment)
    record, lagging = rec.current_action(status, rec.routing_configmap(experiment, existing))
    if record is None:
        return TickOutcome()
    if lagging and not spec.paused:
        return _apply(store, body, spec, record, status, stamp, existing, decided=False)

    readiness = _readiness(experiment, spec, record, status, existing, stamp, generation)
    settled = _settled_history(experiment, status, existing, stamp)
    if settled is not None:
        readiness["trafficHistory"] = settled
    merged = {**status, **readiness}
    outcome = TickOutcome(status=readiness)
    if record.concluded and not spec.paused and _losers_up(experiment, record, existing):
        # the router has (or soon has) the final routing: scale the losers down now
        rec.apply_children(store, body, spec, record, existing)
    if spec.paused or merged.get("phase") != "Running" or record.concluded:
        return outcome

    approved = spec.promotion.approved_variant if spec.promotion else None
    if approved is not None and approved != record.stale_approval:
        proposed = (status.get("analysis") or {}).get("winner")
        why = f"approved in spec.promotion.approvedVariant (the analysis proposed {proposed})"
        new = rollout.conclude(
            record, spec, "Promote", now=stamp, generation=generation, winner=approved, reason=why
        )
        return _merge(outcome, _apply(store, body, spec, new, merged, stamp, existing))

    analysis = spec.analysis or Analysis()
    interval = interval_of(analysis, settings.interval_scale)
    started = rollout.parse_time(merged["startedAt"])
    last = (status.get("analysis") or {}).get("time")
    since = rollout.parse_time(last) if last else started
    if now - since < interval or now - started < interval:
        return outcome

    elapsed = now - started
    max_duration = timedelta(seconds=parse_duration(analysis.max_duration))
    decision = decide_tick(spec, analysis, experiment, merged, started, now, settings, reader)
    outcome.analyzed = True
    outcome.lag = (now - max(since, started) - interval).total_seconds()
    concluded_before = cond.find(status.get("conditions"), cond.CONCLUDED) or {}

    if decision.error is not None and elapsed < max_duration:
        reason, message = decision.error
        outcome.status["analysis"] = {
            "time": stamp,
            "decision": "Hold",
            "reasonCode": reason,
            "reason": message[:4096],
        }
        _concluded(outcome, merged, False, reason, f"holding: {message}", generation, stamp)
        if concluded_before.get("reason") != reason:
            outcome.events.append(Event("Warning", reason, f"holding: {message}"[:1024]))
        return outcome

    if decision.record is not None:
        outcome.status["analysis"] = decision.status
        outcome.status["variants"] = _with_observations(
            readiness.get("variants") or status.get("variants") or [], decision.observations
        )
    verdict = decision.record or {}
    kind = str(verdict.get("decision", "Hold"))
    code = str(verdict.get("reason_code", ""))
    text = str(verdict.get("reason", ""))
    auto_rollback = spec.rollback is not None and spec.rollback.auto
    auto_promote = spec.promotion is not None and spec.promotion.auto
    if kind == "Rollback" and auto_rollback:
        new = rollout.conclude(
            record, spec, "Rollback", now=stamp, generation=generation, reason=text
        )
        return _merge(outcome, _apply(store, body, spec, new, merged, stamp, existing))
    if kind == "Promote" and record.last_stage and auto_promote:
        winner = str(verdict.get("winner"))
        new = rollout.conclude(
            record, spec, "Promote", now=stamp, generation=generation, winner=winner, reason=text
        )
        return _merge(outcome, _apply(store, body, spec, new, merged, stamp, existing))
    if decision.error is not None or kind == "Inconclusive" or elapsed >= max_duration:
        # Whatever was left undone (a hold, a ramp, an approval, a recommended rollback)
        # ends here: control back to 100 %.
        why = decision.error[1] if decision.error is not None else text
        reason = f"max duration {analysis.max_duration} reached: {why}"
        new = rollout.conclude(
            record, spec, "Inconclusive", now=stamp, generation=generation, reason=reason
        )
        return _merge(outcome, _apply(store, body, spec, new, merged, stamp, existing))

    if kind == "Hold":
        reason = HOLD_REASONS.get(code, "MissingData")
        _concluded(outcome, merged, False, reason, f"holding: {text}", generation, stamp)
        if concluded_before.get("reason") != reason:
            outcome.events.append(Event("Warning", reason, f"holding: {text}"[:1024]))
        return outcome

    if kind == "Rollback":
        message = f"rollback.auto is false, not rolling back: {text}"
        _concluded(outcome, merged, False, "RollbackRecommended", message, generation, stamp)
        if concluded_before.get("reason") != "RollbackRecommended":
            outcome.events.append(Event("Warning", "RollbackRecommended", message[:1024]))
        return outcome

    stage_started = max(rollout.parse_time(record.time), started)
    if not record.last_stage:
        # A significant win before the last stage passes the stage; promotion waits
        # for the full split, the ramp exists to limit exposure.
        if now - stage_started >= interval:
            passed = "significant win so far" if kind == "Promote" else "no guardrail breached"
            reason = (
                f"stage {record.step + 1} ran {int((now - stage_started).total_seconds())} s "
                f"with at least {analysis.min_samples_per_variant} exposures per variant, "
                f"{passed}"
            )
            new = rollout.ramp(record, spec, now=stamp, generation=generation, reason=reason)
            return _merge(outcome, _apply(store, body, spec, new, merged, stamp, existing))
        message = f"stage {record.step + 1}/{record.stages} running; {text}"
        _concluded(outcome, merged, False, "Ramping", message, generation, stamp)
        return outcome

    if kind == "Promote":
        winner = str(verdict.get("winner"))
        message = (
            f"{winner} wins ({text}); approve with `rankexp promote {experiment.name} {winner}` "
            f"(sets spec.promotion.approvedVariant)"
        )
        _concluded(outcome, merged, False, "AwaitingApproval", message, generation, stamp)
        if concluded_before.get("reason") != "AwaitingApproval":
            outcome.events.append(Event("Normal", "AwaitingApproval", message[:1024]))
        return outcome

    _concluded(outcome, merged, False, code or "NoSignificantDifference", text, generation, stamp)
    return outcome


# --------------------------------------------------------------------------- helpers


def _merge(first: TickOutcome, second: TickOutcome) -> TickOutcome:
    status = {**first.status, **second.status}
    return TickOutcome(
        status=status,
        events=[*first.events, *second.events],
        action=second.action or first.action,
        analyzed=first.analyzed or second.analyzed,
        lag=first.lag if first.lag is not None else second.lag,
    )


def _concluded(
    outcome: TickOutcome,
    merged: Mapping[str, Any],
    value: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> None:
    base = outcome.status.get("conditions") or merged.get("conditions") or []
    outcome.status["conditions"] = cond.set_condition(
        base, cond.CONCLUDED, value, reason, message[:1024], generation=generation, now=now
    )


def _readiness(
    experiment: res.ExperimentRef,
    spec: ExperimentSpec,
    record: ActionRecord,
    status: Mapping[str, Any],
    existing: Mapping[tuple[str, str], Mapping[str, Any]],
    now: str,
    generation: int | None,
) -> dict[str, Any]:
    """Readiness status from the child Deployments (only what changed)."""
    deployments = {
        key[1]: obj
        for key, obj in existing.items()
        if key[0] == "Deployment" and rec.owned_by(obj, experiment.uid)
    }
    variants, waiting = rec.readiness(
        experiment, spec, deployments, status.get("variants") or [], rollout.replicas(spec, record)
    )
    conditions = list(status.get("conditions") or [])
    progressing = cond.find(conditions, cond.PROGRESSING)
    if not (progressing is not None and progressing.get("reason") == "Paused"):
        conditions = rec.readiness_conditions(conditions, waiting, generation, now)
    out: dict[str, Any] = {"conditions": conditions, "variants": variants}
    out = rec.with_phase(out, status.get("phase"), not waiting, status.get("startedAt"), now)
    return {k: v for k, v in out.items() if status.get(k) != v}


def _settled_history(
    experiment: res.ExperimentRef,
    status: Mapping[str, Any],
    existing: Mapping[tuple[str, str], Mapping[str, Any]],
    now: str,
) -> list[dict[str, Any]] | None:
    """The traffic history with ``settledAt`` set on its last period, once the router
    Deployment runs the routing everywhere; None when there is nothing to record."""
    history = [dict(p) for p in status.get("trafficHistory") or []]
    if not history or history[-1].get("settledAt"):
        return None
    router = existing.get(("Deployment", res.router_name(experiment.name)))
    if router is None or not res.rolled_out(router):
        return None
    configmap = existing.get(("ConfigMap", res.routing_configmap_name(experiment.name)))
    wanted = res.routing_checksum(configmap) if configmap is not None else None
    template = (router.get("spec") or {}).get("template", {}).get("metadata", {})
    running = (template.get("annotations") or {}).get(res.ANNOTATION_ROUTING_CHECKSUM)
    if wanted is None or running != wanted:
        return None  # the router does not run this routing yet
    history[-1]["settledAt"] = max(now, str(history[-1]["since"]))
    return history


def _losers_up(
    experiment: res.ExperimentRef,
    record: ActionRecord,
    existing: Mapping[tuple[str, str], Mapping[str, Any]],
) -> bool:
    """Whether a variant the run scaled down still has replicas in its Deployment."""
    for variant in record.scaled_down:
        deployment = existing.get(("Deployment", res.variant_child_name(experiment.name, variant)))
        if deployment is not None and int((deployment.get("spec") or {}).get("replicas", 0)) > 0:
            return True
    return False


def _apply(
    store: ChildStore,
    body: Mapping[str, Any],
    spec: ExperimentSpec,
    record: ActionRecord,
    status: Mapping[str, Any],
    now: str,
    existing: Mapping[tuple[str, str], dict[str, Any]],
    *,
    decided: bool = True,
) -> TickOutcome:
    """Apply an action: children first (the ConfigMap carries the record), then the
    status fields derived from it; the caller posts the Event and patches status.

    A new decision (``decided``) is first checked against the routing ConfigMap as the
    API server has it: when it already holds a record of this sequence number or later
    (written before a crash, not yet seen through the cache), nothing is applied and the
    next tick finishes that record instead of deciding twice."""
    if decided:
        written, _ = rec.fresh_action(store, res.ExperimentRef.from_body(body), {})
        if written is not None and written.seq >= record.seq:
            return TickOutcome()
    applied = rec.apply_children(store, body, spec, record, existing)
    if applied.conflicts:
        return TickOutcome()  # the reconciler reports NameConflict; act once it is solved
    fields = rollout.status_fields(status, record, now=now)
    return TickOutcome(status=fields, action=record)


def _with_observations(
    variants: list[Mapping[str, Any]], observations: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    return [{**v, **observations.get(str(v.get("name")), {})} for v in variants]
