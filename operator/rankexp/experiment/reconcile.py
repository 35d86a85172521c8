"""Reconcile an Experiment: apply its children, delete removed ones, compute its status.

Plain functions over a small :class:`~rankexp.experiment.store.ChildStore` protocol
(:class:`~rankexp.experiment.store.KubeChildStore`: server-side apply against the API
server), callable from kopf handlers and from tests without a running operator. Nothing
here writes the Experiment: the caller turns the returned :class:`Outcome` into a status
patch and Kubernetes Events, and never touches ``spec``.

The routing in force is the run's last action (:mod:`rankexp.experiment.rollout`): a new
Experiment or a changed design starts a run; an action found in the routing ConfigMap but
not yet in status (the operator died in between) is finished here, without deciding
anything again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from pydantic import ValidationError

from rankexp.api import ExperimentSpec, kstatus
from rankexp.api import conditions as cond
from rankexp.experiment import resources as res
from rankexp.experiment import rollout
from rankexp.experiment.rollout import ActionRecord
from rankexp.experiment.store import CHILD_KINDS, ChildStore, Event

# Phases the analysis owns once reached; reconciling children does not undo them.
FINAL_PHASES = ("Promoted", "RolledBack", "Inconclusive")


@dataclass
class Outcome:
    """What one reconcile decided: the status to patch, events to post, an error to raise."""

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    permanent_error: str | None = None
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: An action applied (or finished) by this call: announce it with its fixed-name Event.
    action: ActionRecord | None = None


def _describe(keys: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{kind} {name}" for kind, name in keys)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def _ready_replicas(deployment: Mapping[str, Any] | None, wanted: int) -> int:
    """Ready replicas of the Deployment's *current* template, as ``kubectl rollout status``
    counts them: 0 until the controller has observed the latest generation and updated
    the pods, so pods of an older template (say, another model) never count."""
    if not deployment:
        return 0
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or int(observed) < int(generation)):
        return 0
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    return min(ready, updated) if wanted > 0 else ready


def readiness(
    experiment: res.ExperimentRef,
    spec: ExperimentSpec,
    deployments: Mapping[str, Mapping[str, Any]],
    previous_variants: Iterable[Mapping[str, Any]] = (),
    replicas: Mapping[str, int] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-variant status entries (readyReplicas from the child Deployments, other fields
    carried over from the previous status) and the names of components not yet ready.
    ``replicas`` are the wanted replicas (the spec's, 0 for variants a run scaled down)."""
    previous = {v.get("name"): dict(v) for v in previous_variants}
    wanted = dict(replicas) if replicas is not None else {v.name: v.replicas for v in spec.variants}
    entries: list[dict[str, Any]] = []
    waiting: list[str] = []
    for variant in spec.variants:
        name = res.variant_child_name(experiment.name, variant.name)
        want = wanted.get(variant.name, variant.replicas)
        ready = _ready_replicas(deployments.get(name), want)
        entry = {**previous.get(variant.name, {}), "name": variant.name, "readyReplicas": ready}
        entries.append(entry)
        if ready < want:
            waiting.append(f"{variant.name} {ready}/{want}")
    router_ready = _ready_replicas(deployments.get(res.router_name(experiment.name)), 1)
    if router_ready < 1:
        waiting.append(f"router {router_ready}/1")
    return entries, waiting


def _phase(previous: str | None, all_ready: bool) -> str:
    """Pending until every component is ready for the first time, then Running until the
    run concludes (a pod lost later shows in Ready, not in the phase)."""
    if previous is not None and (previous in FINAL_PHASES or previous == "Running"):
        return previous
    return "Running" if all_ready else "Pending"


def with_phase(
    status: dict[str, Any], previous_phase: str | None, all_ready: bool, started: Any, now: str
) -> dict[str, Any]:
    """Set ``phase``, and ``startedAt`` when the run first becomes Running."""
    status["phase"] = _phase(previous_phase, all_ready)
    if status["phase"] == "Running" and not started:
        status["startedAt"] = now
    return status


def readiness_conditions(
    conditions: list[dict[str, Any]], waiting: list[str], generation: int | None, now: str
) -> list[dict[str, Any]]:
    if waiting:
        conditions = cond.set_condition(
            conditions,
            cond.READY,
            False,
            "VariantsNotReady",
            "waiting for ready replicas: " + ", ".join(waiting),
            generation=generation,
            now=now,
        )
        return cond.set_condition(
            conditions,
            cond.PROGRESSING,
            True,
            "WaitingForReplicas",
            "children are applied; waiting for their pods to become ready",
            generation=generation,
            now=now,
        )
    conditions = cond.set_condition(
        conditions,
        cond.READY,
        True,
        "AllVariantsReady",
        "every variant and the router have ready replicas",
        generation=generation,
        now=now,
    )
    return cond.set_condition(
        conditions,
        cond.PROGRESSING,
        False,
        "RolloutComplete",
        "children match the spec and are ready",
        generation=generation,
        now=now,
    )


def _failed(
    status: dict[str, Any],
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> Outcome:
    conditions = list(status.get("conditions") or [])
    previous = cond.find(conditions, cond.DEGRADED) or {}
    # Once per generation: a restart that resumes a failed Experiment posts nothing new.
    already_reported = (
        previous.get("status") == "True"
        and previous.get("reason") == reason
        and previous.get("observedGeneration") == generation
    )
    conditions = cond.set_condition(
        conditions, cond.DEGRADED, True, reason, message, generation=generation, now=now
    )
    conditions = cond.set_condition(
        conditions,
        cond.PROGRESSING,
        False,
        reason,
        "not progressing until the spec is fixed",
        generation=generation,
        now=now,
    )
    if cond.find(conditions, cond.READY) is None:
        conditions = cond.set_condition(
            conditions, cond.READY, False, reason, message, generation=generation, now=now
        )
    new_status = {
        "observedGeneration": generation,
        "phase": "Failed",
        "conditions": conditions,
    }
    return Outcome(
        status=new_status,
        events=[] if already_reported else [Event("Warning", reason, message)],
        permanent_error=message,
    )


def failed(body: Mapping[str, Any], reason: str, message: str) -> Outcome:
    """The Outcome for a spec the operator cannot serve, found outside :func:`reconcile`
    (e.g. the API server rejected a rendered child)."""
    status = dict(body.get("status") or {})
    now = cond.utcnow()
    return _with_kstatus(body, _failed(status, reason, message, _generation(body), now), now)


def _generation(body: Mapping[str, Any]) -> int | None:
    generation: int | None = body["metadata"].get("generation")
    return generation


def _with_kstatus(body: Mapping[str, Any], outcome: Outcome, now: str) -> Outcome:
    """The outcome's status with kstatus's Reconciling and Stalled derived from it."""
    outcome.status = kstatus.complete(
        body.get("status"), outcome.status, _generation(body), now, kstatus.experiment_conditions
    )
    return outcome


def current_action(
    status: Mapping[str, Any], configmap: Mapping[str, Any] | None
) -> tuple[ActionRecord | None, bool]:
    """The action in force (the newer of status and the routing ConfigMap's annotation)
    and whether status still lags behind it."""
    in_status = ActionRecord.from_status(status.get("lastAction"))
    annotations = ((configmap or {}).get("metadata") or {}).get("annotations") or {}
    in_configmap = ActionRecord.from_status(annotations.get(rollout.ACTION_ANNOTATION))
    record = rollout.latest(in_status, in_configmap)
    lagging = record is not None and (in_status is None or record.seq > in_status.seq)
    return record, lagging


def fresh_action(
    store: ChildStore, experiment: res.ExperimentRef, status: Mapping[str, Any]
) -> tuple[ActionRecord | None, bool]:
    """:func:`current_action` with the routing ConfigMap read from the API server, not
    from a cache: before a new action is decided, a write-ahead record that a watch has
    not delivered yet must be finished instead."""
    found = store.read("ConfigMap", experiment.namespace, res.routing_configmap_name(
        experiment.name))  # fmt: skip
    return current_action(status, found if found and owned_by(found, experiment.uid) else None)


def list_children(
    store: ChildStore, experiment: res.ExperimentRef
) -> dict[tuple[str, str], dict[str, Any]]:
    selector = f"{res.LABEL_MANAGED_BY}={res.MANAGER}"
    existing: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in CHILD_KINDS:
        for obj in store.list(kind, experiment.namespace, selector):
            existing[res.child_key(obj)] = obj
    return existing


def routing_configmap(
    experiment: res.ExperimentRef, existing: Mapping[tuple[str, str], dict[str, Any]]
) -> dict[str, Any] | None:
    """The experiment's own routing ConfigMap, if there is one."""
    found = existing.get(("ConfigMap", res.routing_configmap_name(experiment.name)))
    return found if found is not None and owned_by(found, experiment.uid) else None


@dataclass
class Applied:
    children: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)


def apply_children(
    store: ChildStore,
    body: Mapping[str, Any],
    spec: ExperimentSpec,
    record: ActionRecord,
    existing: Mapping[tuple[str, str], dict[str, Any]],
) -> Applied:
    """Apply every child for the routing of ``record`` (server-side apply: unchanged
    children are no-ops) and delete the ones no longer wanted. Nothing is applied when
    another experiment's children hold one of the names (``conflicts``).

    Order: the routing ConfigMap (it carries the action, so a routing change is on record
    before anything else moves), the router, then the variants. Variants a concluded run
    scales down keep their replicas until the router runs the new routing, so no request
    is routed to a variant that is already gone; the next tick scales them down."""
    experiment = res.ExperimentRef.from_body(body)
    previous = res.previous_allocation(routing_configmap(experiment, existing))

    def render(replicas: Mapping[str, int]) -> list[dict[str, Any]]:
        children = res.desired_children(
            experiment, spec, record.weights, previous, replicas=replicas,
            action=record.annotation(), concluded=record.concluded,
        )  # fmt: skip
        kopf.adopt(children, owner=cast(kopf.Body, dict(body)))
        return children

    desired = render(rollout.replicas(spec, None))
    result = Applied()
    result.conflicts = [
        key
        for child in desired
        if (key := res.child_key(child)) in existing
        and not owned_by(existing[key], experiment.uid)
        and existing[key]["metadata"].get("labels", {}).get(res.LABEL_EXPERIMENT) != experiment.name
    ]
    if result.conflicts:
        return result

    def apply(child: dict[str, Any]) -> dict[str, Any]:
        key = res.child_key(child)
        before = existing.get(key)
        after = store.apply(child)
        result.children[key] = after
        if before is None:
            result.created.append(f"{key[0]} {key[1]}")
        elif before["metadata"].get("resourceVersion") != after["metadata"].get("resourceVersion"):
            result.updated.append(f"{key[0]} {key[1]}")
        return after

    router_keys = {
        ("ConfigMap", res.routing_configmap_name(experiment.name)),
        ("Deployment", res.router_name(experiment.name)),
        ("Service", res.router_name(experiment.name)),
    }
    router_first = sorted(
        (c for c in desired if res.child_key(c) in router_keys),
        key=lambda c: c["kind"] != "ConfigMap",
    )
    applied_router = {res.child_key(c): apply(c) for c in router_first}
    router = applied_router[("Deployment", res.router_name(experiment.name))]
    replicas = (
        rollout.replicas(spec, record) if res.rolled_out(router) else rollout.replicas(spec, None)
    )
    for child in render(replicas):
        if res.child_key(child) not in router_keys:
            apply(child)
    desired_keys = {res.child_key(c) for c in desired}
    for key, obj in sorted(existing.items()):
        labels = obj["metadata"].get("labels") or {}
        if key in desired_keys or labels.get(res.LABEL_EXPERIMENT) != experiment.name:
            continue
        if key[0] == "ConfigMap":
            continue  # the one routing ConfigMap is always wanted (and RBAC grants no delete)
        if not owned_by(obj, experiment.uid):
            continue
        # No garbage collector is needed for this: the child of a removed variant goes now.
        store.delete(key[0], experiment.namespace, key[1])
        result.deleted.append(f"{key[0]} {key[1]}")
    return result


def reconcile(
    store: ChildStore,
    body: Mapping[str, Any],
    *,
    now: str | None = None,
) -> Outcome:
    """Bring the children of one Experiment in line with its spec; return the new status
    (with the kstatus conditions GitOps tools read)."""
    now = now or cond.utcnow()
    return _with_kstatus(body, _reconcile(store, body, now), now)


def _reconcile(store: ChildStore, body: Mapping[str, Any], now: str) -> Outcome:
    experiment = res.ExperimentRef.from_body(body)
    generation = body["metadata"].get("generation")
    old_status: dict[str, Any] = dict(body.get("status") or {})
    conditions: list[dict[str, Any]] = list(old_status.get("conditions") or [])

    try:
        spec = ExperimentSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        errors = "; ".join(e["msg"] for e in exc.errors())
        return _failed(old_status, "InvalidSpec", errors, generation, now)

    if spec.paused:
        previous = cond.find(conditions, cond.PROGRESSING)
        was_paused = previous is not None and previous.get("reason") == "Paused"
        conditions = cond.set_condition(
            conditions,
            cond.PROGRESSING,
            False,
            "Paused",
            "spec.paused is true: changes to the children and the analysis are frozen",
            generation=generation,
            now=now,
        )
        events = [] if was_paused else [Event("Normal", "Paused", "changes are frozen")]
        status = {
            "observedGeneration": generation,
            "phase": old_status.get("phase") or "Pending",
            "conditions": conditions,
        }
        return Outcome(status=status, events=events)

    problems = [
        f"variant {v.name}: {why}"
        for v in spec.variants
        if (why := res.unsupported_model_uri(v.model.uri)) is not None
    ]
    if problems:
        return _failed(old_status, "UnsupportedModelURI", "; ".join(problems), generation, now)

    existing = list_children(store, experiment)
    record, lagging = current_action(old_status, routing_configmap(experiment, existing))
    if record is None or record.design != rollout.design_hash(spec):
        # about to start a run: the API server's routing record decides, not a cache
        record, lagging = fresh_action(store, experiment, old_status)
    announce = lagging
    if record is None or record.design != rollout.design_hash(spec):
        record = rollout.start(record, spec, now=now, generation=generation)
        announce = True

    applied = apply_children(store, body, spec, record, existing)
    if applied.conflicts:
        message = f"names already used by another experiment: {_describe(applied.conflicts)}"
        return _failed(old_status, "NameConflict", message, generation, now)

    outcome = Outcome(status={}, created=applied.created, updated=applied.updated)
    outcome.deleted = applied.deleted
    if outcome.created:
        outcome.events.append(Event("Normal", "ChildrenCreated", ", ".join(outcome.created)))
    if outcome.updated:
        outcome.events.append(Event("Normal", "ChildrenUpdated", ", ".join(outcome.updated)))
    if outcome.deleted:
        outcome.events.append(Event("Normal", "ChildrenDeleted", ", ".join(outcome.deleted)))
    progressing = cond.find(conditions, cond.PROGRESSING)
    if progressing is not None and progressing.get("reason") == "Paused":
        outcome.events.append(Event("Normal", "Resumed", "spec.paused is false again"))
    if cond.is_true(conditions, cond.DEGRADED):
        outcome.events.append(Event("Normal", "Recovered", "the spec can be served again"))

    merged = dict(old_status)
    if announce:
        merged.update(rollout.status_fields(old_status, record, now=now))
        outcome.action = record
    conditions = list(merged.get("conditions") or [])
    deployments = {key[1]: obj for key, obj in applied.children.items() if key[0] == "Deployment"}
    variants, waiting = readiness(
        experiment,
        spec,
        deployments,
        old_status.get("variants") or [],
        rollout.replicas(spec, record),
    )
    conditions = cond.set_condition(
        conditions,
        cond.DEGRADED,
        False,
        "AsExpected",
        "",
        generation=generation,
        now=now,
    )
    conditions = readiness_conditions(conditions, waiting, generation, now)
    new_status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "traffic": rollout.traffic(record),
        "variants": variants,
    }
    if announce:
        new_status.update({k: v for k, v in merged.items() if k not in new_status and k != "phase"})
    outcome.status = with_phase(
        new_status, merged.get("phase"), not waiting, merged.get("startedAt"), now
    )
    return outcome


def refresh_readiness(
    store: ChildStore, body: Mapping[str, Any], *, now: str | None = None
) -> dict[str, Any] | None:
    """Status update from the child Deployments' readyReplicas, or None when the last
    reconcile is not settled (paused, failed, or a newer generation is pending)."""
    now = now or cond.utcnow()
    status: dict[str, Any] = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    if status.get("observedGeneration") != generation:
        return None
    if cond.is_true(conditions, cond.DEGRADED) or status.get("phase") == "Failed":
        return None
    progressing = cond.find(conditions, cond.PROGRESSING)
    if progressing is not None and progressing.get("reason") == "Paused":
        return None
    try:
        spec = ExperimentSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None
    experiment = res.ExperimentRef.from_body(body)
    selector = f"{res.LABEL_EXPERIMENT}={experiment.name}"
    deployments = {
        d["metadata"]["name"]: d
        for d in store.list("Deployment", experiment.namespace, selector)
        if owned_by(d, experiment.uid)
    }
    record = ActionRecord.from_status(status.get("lastAction"))
    variants, waiting = readiness(
        experiment, spec, deployments, status.get("variants") or [], rollout.replicas(spec, record)
    )
    conditions = readiness_conditions(conditions, waiting, generation, now)
    out: dict[str, Any] = {"conditions": conditions, "variants": variants}
    return with_phase(out, status.get("phase"), not waiting, status.get("startedAt"), now)


def routing_from_configmap(configmap: Mapping[str, Any]) -> dict[str, Any]:
    """The parsed routing.json of a routing ConfigMap (used by tests and tooling)."""
    parsed: dict[str, Any] = json.loads((configmap.get("data") or {})[res.ROUTING_KEY])
    return parsed
