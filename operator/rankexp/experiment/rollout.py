"""The traffic state machine of an Experiment: runs, ramp stages and actions (pure, no I/O).

A *run* is one experiment of one design (variants and their models and weights, control,
traffic steps, analysis settings, image). It starts with a ``Start`` action when the
Experiment is created or its design changes, and ends with ``Promote``, ``Rollback`` or
``Inconclusive``. In between, ``Ramp`` actions walk the traffic stages.

Every routing change is an :class:`ActionRecord` with a sequence number that only grows.
The operator applies one in this order, so a crash at any point converges to exactly one
action and one Event:

1. the children, with the record in the routing ConfigMap's ``rankexp.io/last-action``
   annotation (a write-ahead copy);
2. the action's Event, under a name derived from the sequence number (a second create
   of the same Event is refused by the API server, so it is never posted twice);
3. ``status.lastAction`` and the fields derived from it (:func:`status_fields`).

On restart, :func:`latest` picks the newer of status and ConfigMap; a ConfigMap ahead of
status means steps 2-3 did not finish, and they are redone from the record without
deciding anything again.

Stages: without ``spec.traffic.steps`` the run has one stage, the spec's weights. With
steps, each step is the total weight of the non-control variants, split between them in
proportion to their spec weights; steps at or above the spec's non-control total are
dropped and the last stage is always the spec's weights. So ``steps: [10, 25, 50]`` with
a 50/50 spec runs 90/10, 75/25, then 50/50.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from rankexp.api import ExperimentSpec
from rankexp.api import conditions as cond

ACTION_ANNOTATION = "rankexp.io/last-action"  # resources.ANNOTATION_ACTION
ActionType = Literal["Start", "Ramp", "Promote", "Rollback", "Inconclusive"]
Outcome = Literal["Promoted", "RolledBack", "Inconclusive"]
OUTCOMES: dict[str, Outcome] = {
    "Promote": "Promoted",
    "Rollback": "RolledBack",
    "Inconclusive": "Inconclusive",
}
#: Event reason per action type.
EVENT_REASONS = {
    "Start": "RunStarted",
    "Ramp": "TrafficRamped",
    "Promote": "Promoted",
    "Rollback": "RolledBack",
    "Inconclusive": "Inconclusive",
}
#: Concluded=True reason per outcome.
CONCLUDED_REASONS = {
    "Promoted": "Promoted",
    "RolledBack": "RolledBack",
    "Inconclusive": "MaxDurationReached",
}
MAX_HISTORY = 32


def design_hash(spec: ExperimentSpec) -> str:
    """What a run is an experiment of. Changing any of it starts a new run; replicas,
    resources, env, ``paused``, ``promotion`` and ``rollback`` are not part of it."""
    design = {
        "image": spec.template.image,
        "variants": [[v.name, v.model.uri, v.weight] for v in spec.variants],
        "control": spec.control,
        "steps": list(spec.traffic.steps) if spec.traffic else [],
        "analysis": spec.analysis.model_dump(mode="json") if spec.analysis else None,
    }
    text = json.dumps(design, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split(total: int, spec_weights: Mapping[str, int], treatments: Sequence[str]) -> dict[str, int]:
    """``total`` percent split between ``treatments`` in proportion to their spec weights
    (largest remainder, ties to the earlier treatment)."""
    base = sum(spec_weights[t] for t in treatments)
    if base == 0:
        return dict.fromkeys(treatments, 0)
    exact = {t: total * spec_weights[t] / base for t in treatments}
    out = {t: int(exact[t]) for t in treatments}
    left = total - sum(out.values())
    for t in sorted(treatments, key=lambda t: (-(exact[t] - out[t]), treatments.index(t)))[:left]:
        out[t] += 1
    return out


def stages(spec: ExperimentSpec) -> list[dict[str, int]]:
    """The run's traffic stages, in order; the last is the spec's weights."""
    weights = {v.name: v.weight for v in spec.variants}
    treatments = [v.name for v in spec.variants if v.name != spec.control]
    total = 100 - weights[spec.control]
    out: list[dict[str, int]] = []
    for step in spec.traffic.steps if spec.traffic else []:
        if step >= total:
            break
        stage = {spec.control: 100 - step, **split(step, weights, treatments)}
        out.append({v.name: stage[v.name] for v in spec.variants})
    out.append(weights)
    return out


@dataclass(frozen=True)
class ActionRecord:
    seq: int
    type: ActionType
    time: str
    design: str
    weights: dict[str, int]
    generation: int | None = None
    step: int = 0
    stages: int = 1
    scaled_down: tuple[str, ...] = ()
    outcome: Outcome | None = None
    winner: str | None = None
    reason: str = ""
    stale_approval: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def concluded(self) -> bool:
        return self.outcome is not None

    @property
    def last_stage(self) -> bool:
        return self.step >= self.stages - 1

    def to_status(self) -> dict[str, Any]:
        """The ``status.lastAction`` form (also the ConfigMap annotation's JSON)."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "type": self.type,
            "time": self.time,
            "generation": self.generation,
            "design": self.design,
            "step": self.step,
            "stages": self.stages,
            "weights": [{"variant": k, "weight": v} for k, v in self.weights.items()],
            "scaledDown": list(self.scaled_down),
            "outcome": self.outcome,
            "winner": self.winner,
            "reason": self.reason[:4096],
        }
        if self.stale_approval is not None:
            out["staleApproval"] = self.stale_approval
        return out

    @classmethod
    def from_status(cls, data: Any) -> ActionRecord | None:
        """Parse a ``status.lastAction`` or annotation; None when absent or malformed
        (a hand-edited annotation must not break the operator)."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                return None
        if not isinstance(data, Mapping):
            return None
        try:
            weights = {str(w["variant"]): int(w["weight"]) for w in data["weights"]}
            type_ = str(data["type"])
            outcome = data.get("outcome")
            if type_ not in EVENT_REASONS or outcome not in (None, *OUTCOMES.values()):
                return None
            return cls(
                seq=int(data["seq"]),
                type=type_,  # type: ignore[arg-type]
                time=str(data["time"]),
                design=str(data["design"]),
                weights=weights,
                generation=data.get("generation"),
                step=int(data.get("step", 0)),
                stages=max(1, int(data.get("stages", 1))),
                scaled_down=tuple(str(v) for v in data.get("scaledDown") or ()),
                outcome=outcome,
                winner=data.get("winner"),
                reason=str(data.get("reason", "")),
                stale_approval=data.get("staleApproval"),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def annotation(self) -> str:
        return json.dumps(self.to_status(), sort_keys=True, separators=(",", ":"))


def latest(*records: ActionRecord | None) -> ActionRecord | None:
    """The record with the highest sequence number."""
    present = [r for r in records if r is not None]
    return max(present, key=lambda r: r.seq) if present else None


def _approval(spec: ExperimentSpec) -> str | None:
    return spec.promotion.approved_variant if spec.promotion else None


def start(
    previous: ActionRecord | None, spec: ExperimentSpec, *, now: str, generation: int | None
) -> ActionRecord:
    """A new run at the first stage. An approval already in the spec when a run starts
    belongs to an earlier run and is ignored (``stale_approval``)."""
    plan = stages(spec)
    why = "experiment created" if previous is None else "the spec's design changed"
    return ActionRecord(
        seq=(previous.seq + 1) if previous else 1,
        type="Start",
        time=now,
        design=design_hash(spec),
        weights=plan[0],
        generation=generation,
        step=0,
        stages=len(plan),
        reason=f"run started ({why}) at {_weights_text(plan[0])}",
        stale_approval=_approval(spec),
    )


def ramp(
    current: ActionRecord, spec: ExperimentSpec, *, now: str, generation: int | None, reason: str
) -> ActionRecord:
    plan = stages(spec)
    step = min(current.step + 1, len(plan) - 1)
    return replace(
        current,
        seq=current.seq + 1,
        type="Ramp",
        time=now,
        generation=generation,
        step=step,
        stages=len(plan),
        weights=plan[step],
        reason=f"stage {step + 1}/{len(plan)}: {_weights_text(plan[step])}; {reason}",
    )


def conclude(
    current: ActionRecord,
    spec: ExperimentSpec,
    type_: Literal["Promote", "Rollback", "Inconclusive"],
    *,
    now: str,
    generation: int | None,
    reason: str,
    winner: str | None = None,
) -> ActionRecord:
    """The final action of a run: the kept variant at 100 %, the others at 0 replicas."""
    names = [v.name for v in spec.variants]
    keep = winner if type_ == "Promote" and winner is not None else spec.control
    if keep not in names:
        raise ValueError(f"{keep!r} is not a variant")
    return replace(
        current,
        seq=current.seq + 1,
        type=type_,
        time=now,
        generation=generation,
        weights={n: 100 if n == keep else 0 for n in names},
        scaled_down=tuple(n for n in names if n != keep),
        outcome=OUTCOMES[type_],
        winner=keep if type_ == "Promote" else None,
        reason=reason,
    )


def replicas(spec: ExperimentSpec, record: ActionRecord | None) -> dict[str, int]:
    """Replicas per variant: the spec's, 0 for the variants the run scaled down."""
    down = set(record.scaled_down) if record else set()
    return {v.name: 0 if v.name in down else v.replicas for v in spec.variants}


def event_name(experiment: str, uid: str, seq: int) -> str:
    """A stable Event name per action, so posting it twice is refused (409)."""
    return f"{experiment}.{uid[:8] or 'nouid'}.action-{seq}"


def event_for(record: ActionRecord) -> tuple[str, str, str]:
    """(type, reason, message) of the action's Event."""
    kind = "Warning" if record.type in ("Rollback", "Inconclusive") else "Normal"
    message = record.reason
    if record.type == "Promote":
        message = f"{record.winner} promoted to 100 %: {record.reason}"
    elif record.type in ("Rollback", "Inconclusive"):
        message = f"control back to 100 %: {record.reason}"
    return kind, EVENT_REASONS[record.type], message[:1024]


def _weights_text(weights: Mapping[str, int]) -> str:
    return ", ".join(f"{name}={weight}" for name, weight in weights.items())


def traffic(record: ActionRecord) -> list[dict[str, Any]]:
    return [{"variant": k, "weight": v} for k, v in record.weights.items()]


def status_fields(
    old_status: Mapping[str, Any], record: ActionRecord, *, now: str
) -> dict[str, Any]:
    """The status fields an applied action sets (idempotent for the same record)."""
    previous = ActionRecord.from_status(old_status.get("lastAction"))
    out: dict[str, Any] = {"lastAction": record.to_status(), "traffic": traffic(record)}
    history = list(old_status.get("trafficHistory") or [])
    is_new = previous is None or record.seq > previous.seq
    if record.type == "Start":
        if is_new:
            history = []
            out.update(startedAt=None, winner=None, analysis=None, phase="Pending")
    if is_new and (not history or history[-1].get("weights") != traffic(record)):
        history.append({"since": record.time, "weights": traffic(record)})
    out["trafficHistory"] = history[-MAX_HISTORY:]
    conditions = list(old_status.get("conditions") or [])
    generation = record.generation
    if record.outcome is not None:
        out["phase"] = record.outcome
        out["winner"] = record.winner
        conditions = cond.set_condition(
            conditions,
            cond.CONCLUDED,
            True,
            CONCLUDED_REASONS[record.outcome],
            record.reason[:1024],
            generation=generation,
            now=now,
        )
    elif record.type == "Start" and is_new:
        conditions = cond.set_condition(
            conditions,
            cond.CONCLUDED,
            False,
            "RunStarted",
            "the analysis starts once every variant is ready",
            generation=generation,
            now=now,
        )
    out["conditions"] = conditions
    return out


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime."""
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def segments(
    history: Sequence[Mapping[str, Any]], start: datetime, end: datetime
) -> list[tuple[datetime, datetime, dict[str, int]]]:
    """The weight periods of ``history`` clipped to [start, end], as (from, to, weights)."""
    out: list[tuple[datetime, datetime, dict[str, int]]] = []
    for i, period in enumerate(history):
        since = parse_time(period["since"])
        until = parse_time(history[i + 1]["since"]) if i + 1 < len(history) else end
        lo, hi = max(since, start), min(until, end)
        if lo < hi:
            weights = {str(w["variant"]): int(w["weight"]) for w in period["weights"]}
            out.append((lo, hi, weights))
    return out


def srm_segments(
    history: Sequence[Mapping[str, Any]], start: datetime, end: datetime, margin: timedelta
) -> list[tuple[datetime, datetime, dict[str, int]]]:
    """The parts of the window in which the router served each period's weights: from
    ``settledAt`` + ``margin`` (the router's rollout done, its old pods drained) to the
    next change. A period not yet settled is left out."""
    out: list[tuple[datetime, datetime, dict[str, int]]] = []
    for i, period in enumerate(history):
        settled = period.get("settledAt")
        if not settled:
            continue
        lo = max(parse_time(period["since"]), parse_time(settled) + margin, start)
        hi = min(parse_time(history[i + 1]["since"]) if i + 1 < len(history) else end, end)
        if lo < hi:
            weights = {str(w["variant"]): int(w["weight"]) for w in period["weights"]}
            out.append((lo, hi, weights))
    return out


def expected_weights(
    periods: Sequence[tuple[Mapping[str, int], float]], fallback: Mapping[str, int]
) -> dict[str, float]:
    """Percent of exposures each variant should have had over the window: the weights of
    each period, weighted by the exposures served in it. Without any exposures, the
    ``fallback`` weights."""
    total = sum(max(n, 0.0) for _, n in periods)
    if total <= 0:
        return {k: float(v) for k, v in fallback.items()}
    out: dict[str, float] = dict.fromkeys(fallback, 0.0)
    for weights, n in periods:
        for name, weight in weights.items():
            if name in out:
                out[name] += weight * max(n, 0.0) / total
    scale = 100.0 / sum(out.values()) if sum(out.values()) > 0 else 0.0
    return {k: v * scale for k, v in out.items()}
