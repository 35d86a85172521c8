"""loop.needs_tick: a tick that would do nothing is answered from memory.

The Experiment is one captured from the kind e2e (gitops testdata: Running, awaiting
approval, its last analysis at a known time); its children are rendered by
rankexp.experiment.resources and held in kopf-shaped indexes, all ready.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import yaml

from rankexp.api import ExperimentSpec
from rankexp.experiment import loop, rollout
from rankexp.experiment import resources as res
from rankexp.experiment.measure import Settings
from rankexp.runtime import childcache

CAPTURED = (
    Path(__file__).resolve().parents[3]
    / "gitops/argocd/resource_customizations/rankexp.io/Experiment/testdata/awaiting-approval.yaml"
)
SETTINGS = Settings(prometheus_url="http://127.0.0.1:9", interval_scale=1.0)


class Api:
    def read(self, kind: str, namespace: str, name: str) -> None:
        raise AssertionError("a probe never reads the API server")


def setup(ready: bool = True) -> tuple[dict[str, Any], Any, datetime]:
    obj = yaml.safe_load(CAPTURED.read_text())
    spec = ExperimentSpec.model_validate(obj["spec"])
    record = rollout.ActionRecord.from_status(obj["status"]["lastAction"])
    assert record is not None
    children = res.desired_children(
        res.ExperimentRef.from_body(obj), spec, record.weights, action=record.annotation()
    )
    kopf.adopt(children, owner=obj)
    indexes: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {
        name: {} for name in childcache.INDEXES
    }
    by_kind = {kind: name for name, (_, _, _, kind) in childcache.INDEXES.items()}
    for child in children:
        child["metadata"].update(resourceVersion="1", generation=1)
        if child["kind"] == "Deployment":
            n = child["spec"].get("replicas", 1) if ready else 0
            child["status"] = {"observedGeneration": 1, "replicas": n, "updatedReplicas": n,
                               "readyReplicas": n, "availableReplicas": n}  # fmt: skip
        for key, value in childcache.entry(child).items():
            indexes[by_kind[child["kind"]]].setdefault(key, []).append(value)
    store = childcache.ChildCache(Api()).view(indexes)
    last = datetime.fromisoformat(obj["status"]["analysis"]["time"].replace("Z", "+00:00"))
    return obj, store, last


def test_nothing_to_do_between_analyses() -> None:
    obj, store, last = setup()
    assert not loop.needs_tick(store, obj, settings=SETTINGS, now=last + timedelta(seconds=5))


def test_a_due_analysis_needs_a_tick() -> None:
    obj, store, last = setup()
    assert loop.needs_tick(store, obj, settings=SETTINGS, now=last + timedelta(minutes=2))


def test_a_readiness_change_needs_a_tick() -> None:
    obj, store, last = setup(ready=False)
    assert loop.needs_tick(store, obj, settings=SETTINGS, now=last + timedelta(seconds=5))


def test_an_approval_needs_a_tick() -> None:
    obj, store, last = setup()
    approved = copy.deepcopy(obj)
    approved["spec"]["promotion"]["approvedVariant"] = "treatment"
    assert loop.needs_tick(store, approved, settings=SETTINGS, now=last + timedelta(seconds=5))


def test_an_unobserved_generation_is_the_reconcilers_turn() -> None:
    obj, store, last = setup(ready=False)
    obj["metadata"]["generation"] += 1
    assert not loop.needs_tick(store, obj, settings=SETTINGS, now=last + timedelta(minutes=2))
