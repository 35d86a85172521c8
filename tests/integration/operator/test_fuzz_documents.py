"""Hostile documents: hypothesis mutates the samples (a field set to another value of its
type or to any JSON value, a field removed, an unknown field added, a list item
repeated) and applies each to the real API server. A rejection must be a clear one (no
internal error). Whatever the CRD (schema and CEL) accepts, the running operator must
answer: it serves the object (status with a phase for the current generation) or marks
it Degraded with a reason. The operator never crashes, and an answered Experiment is not
rewritten again and again (no status loop)."""

from __future__ import annotations

import copy
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankexp.local.prom import LocalPrometheus

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SAMPLES = {
    kind: yaml.safe_load((REPO / "crds" / "samples" / f"{kind}.yaml").read_text())
    for kind in ("experiment", "alertpolicy")
}
PHASES = {"Pending", "Running", "Promoted", "RolledBack", "Inconclusive", "Failed"}
EXAMPLES = 100

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=80) | st.sampled_from(["", "0", "-1", "1e309", "ctr", "1m", "10%"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=8,
)  # fmt: skip


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*prefix, i))
    return out


def like(value: Any) -> st.SearchStrategy[Any]:
    """Values of the same JSON type as ``value``."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-5, 10**7) | st.sampled_from([0, 1, 99, 100, 101])
    if isinstance(value, float):
        return st.floats(-1, 2, allow_nan=False) | st.sampled_from([0.0, 1e-300, 1.0])
    if isinstance(value, str):
        known = st.sampled_from(
            [
                "0s",
                "1s",
                "1000h",
                "2h45m",
                "v1",
                "control",
                "treatment",
                "ctr",
                "file:///models/v3",
                "rankexp/ranker:other",
                "x",
                value,
            ]
        )
        return known | known | known | st.text(max_size=40)
    if isinstance(value, list):
        return st.lists(st.sampled_from(value), max_size=5) if value else st.just([])
    return json_values


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    doc = copy.deepcopy(SAMPLES[kind])
    spec = doc["spec"]
    for _ in range(draw(st.integers(1, 3))):
        candidates = paths(spec)
        path = draw(st.sampled_from(candidates))
        parent: Any = spec
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        op = draw(st.sampled_from(["same-type", "same-type", "any", "remove", "add", "repeat"]))
        if op == "same-type":  # the kind of change the schema lets through most often
            parent[last] = draw(like(parent[last]))
        elif op == "any":
            parent[last] = draw(json_values)
        elif op == "remove":
            del parent[last]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        elif op == "repeat" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return doc


def answered(obj: dict[str, Any]) -> str | None:
    """How the operator answered the object's current generation, or None (not yet)."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    degraded = conditions.get("Degraded", {})
    if degraded.get("status") == "True":
        return f"Degraded/{degraded['reason']}" if degraded.get("reason") else None
    if obj["kind"] == "Experiment":
        return f"phase {status['phase']}" if status.get("phase") in PHASES else None
    return "evaluated" if status.get("lastEvaluation") else None


def test_every_accepted_document_is_served_or_degraded(
    kube: Any, operator: Any, prometheus: LocalPrometheus
) -> None:
    operator.extra_args = ["--prometheus-url", prometheus.url]
    operator.env = {"RANKEXP_READINESS_INTERVAL": "1"}
    operator.start()
    names = (f"fz-{i}" for i in itertools.count())
    outcomes: dict[str, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(doc=st.sampled_from(["experiment", "alertpolicy"]).flatmap(mutated))
    def check(doc: dict[str, Any]) -> None:
        kind = doc["kind"].lower()
        doc["metadata"] = {"name": next(names)}
        applied = kube.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)
        if applied.returncode != 0:
            assert "Internal error" not in applied.stderr, applied.stderr  # a clear rejection
            outcomes["rejected by the API server"] = (
                outcomes.get("rejected by the API server", 0) + 1
            )
            return
        name = doc["metadata"]["name"]

        def probe() -> str | None:
            obj = kube.get(kind, name)
            return answered(obj) if obj else None

        how = kube.wait_for(probe, f"{kind} {name} answered: {json.dumps(doc['spec'])[:400]}",
                            timeout=30, interval=0.3, operator=operator)  # fmt: skip
        key = f"{kind}: {how}"
        outcomes[key] = outcomes.get(key, 0) + 1
        version = kube.get(kind, name)["metadata"]["resourceVersion"]
        time.sleep(2.5)  # two ticks: an answered object stays as it is
        after = kube.get(kind, name)
        if kind == "experiment":
            assert after["metadata"]["resourceVersion"] == version, "rewritten again and again"
        assert operator.alive()
        kube.kubectl("delete", kind, name, "--wait=false")

    check()
    print("outcomes:", outcomes)
    assert operator.alive(), operator.log_tail()
    assert sum(v for k, v in outcomes.items() if "rejected" not in k) >= 5, outcomes
