"""Status that GitOps tools read: the kstatus conditions ``Reconciling`` and ``Stalled``.

kstatus (sigs.k8s.io/cli-utils, read by Flux, ``kubectl wait`` users and many CD tools)
computes a resource's health from three things: ``status.observedGeneration`` equal to
``metadata.generation``, and two "abnormal-true" conditions: ``Reconciling=True`` means
the controller is still working towards what the spec asks (InProgress), ``Stalled=True``
means it cannot get there without a person (Failed); neither true means Current.

Both are derived here, purely, from the rest of an Experiment's or AlertPolicy's status,
so every writer of status gets them the same way: :func:`complete` adds them to a status
patch. The other conditions (Ready, Progressing, Degraded, Concluded) keep their meaning.

An Experiment maps as Argo Rollouts' and Flagger's canaries do in Argo CD and Flux: a run
that has not ended is in progress, a rollback is a failure of what the spec asked for
(the new model did not make it), a promotion or an inconclusive end is done.

| status | Reconciling | Stalled |
|---|---|---|
| Pending, Running (any hold or ramp reason), paused | True (the reason) | False |
| Promoted, Inconclusive | False | False |
| RolledBack | False | True (RolledBack) |
| Failed or Degraded (InvalidSpec, NameConflict, ...) | False | True (its reason) |

An AlertPolicy is in progress until its first evaluation and while Prometheus cannot be
read (it retries by itself), stalled while Degraded (a rule Prometheus rejects, a missing
Secret, an invalid spec: a person must fix those), else current. Firing alerts are the
policy working, not a fault of the policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rankexp.api import conditions as cond

RECONCILING = cond.RECONCILING
STALLED = cond.STALLED

Derive = Callable[[Mapping[str, Any], "int | None", str], list[dict[str, Any]]]


def _set(
    conditions: list[dict[str, Any]],
    reconciling: tuple[bool, str, str],
    stalled: tuple[bool, str, str],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    for type_, (value, reason, message) in ((RECONCILING, reconciling), (STALLED, stalled)):
        conditions = cond.set_condition(
            conditions, type_, value, reason, message[:1024], generation=generation, now=now
        )
    return conditions


def experiment_conditions(
    status: Mapping[str, Any], generation: int | None, now: str
) -> list[dict[str, Any]]:
    """The Experiment's conditions with Reconciling and Stalled set from the rest."""
    conditions = list(status.get("conditions") or [])
    phase = status.get("phase") or "Pending"
    degraded = cond.find(conditions, cond.DEGRADED) or {}
    progressing = cond.find(conditions, cond.PROGRESSING) or {}
    concluded = cond.find(conditions, cond.CONCLUDED) or {}
    fine = (False, "AsExpected", "")
    if phase == "Failed" or degraded.get("status") == "True":
        reason = str(degraded.get("reason") or "Failed")
        message = str(degraded.get("message") or "the spec cannot be served")
        return _set(
            conditions,
            (False, reason, "not reconciling until the spec is fixed"),
            (True, reason, message),
            generation,
            now,
        )
    if phase == "RolledBack":
        message = f"the run ended with a rollback: {concluded.get('message', '')}"
        done = (False, "RolledBack", "the run has ended; a change of the design starts another")
        return _set(conditions, done, (True, "RolledBack", message), generation, now)
    if phase in ("Promoted", "Inconclusive"):
        done = (False, str(phase), f"the run has ended {phase}")
        return _set(conditions, done, fine, generation, now)
    if progressing.get("reason") == "Paused":
        return _set(conditions, (True, "Paused", "spec.paused is true"), fine, generation, now)
    if phase == "Running":
        if concluded.get("status") == "False" and concluded.get("reason"):
            working = (True, str(concluded["reason"]), str(concluded.get("message", "")))
        else:
            working = (True, "Running", "the analysis is running")
        return _set(conditions, working, fine, generation, now)
    reason = str(progressing.get("reason") or "Pending")
    message = str(progressing.get("message") or "waiting for the children to become ready")
    return _set(conditions, (True, reason, message), fine, generation, now)


def alertpolicy_conditions(
    status: Mapping[str, Any], generation: int | None, now: str
) -> list[dict[str, Any]]:
    """The AlertPolicy's conditions with Reconciling and Stalled set from the rest."""
    conditions = list(status.get("conditions") or [])
    degraded = cond.find(conditions, cond.DEGRADED) or {}
    ready = cond.find(conditions, cond.READY) or {}
    fine = (False, "AsExpected", "")
    if degraded.get("status") == "True":
        reason = str(degraded.get("reason") or "Degraded")
        stalled = (True, reason, str(degraded.get("message") or ""))
        return _set(conditions, (False, reason, "a person must fix this"), stalled, generation, now)
    if ready.get("status") == "True":
        return _set(conditions, (False, "Evaluated", ""), fine, generation, now)
    reason = str(ready.get("reason") or "NotEvaluated")
    message = str(ready.get("message") or "waiting for the first evaluation")
    return _set(conditions, (True, reason, message), fine, generation, now)


def complete(
    old_status: Mapping[str, Any] | None,
    patch: Mapping[str, Any],
    generation: int | None,
    now: str,
    derive: Derive,
) -> dict[str, Any]:
    """``patch`` with the conditions derived from the status it produces (old status
    merged with the patch); unchanged when nothing it derives changed."""
    old = dict(old_status or {})
    merged = {**old, **patch}
    derived = derive(merged, generation, now)
    if "conditions" in patch or derived != list(old.get("conditions") or []):
        return {**patch, "conditions": derived}
    return dict(patch)
