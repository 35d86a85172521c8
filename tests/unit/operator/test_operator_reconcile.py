"""reconcile() against an in-memory ChildStore: idempotency, weight changes, removal,
pause, unsupported model URIs and readiness, without a cluster."""

from __future__ import annotations

import copy
from typing import Any

from rankexp import conditions as cond
from rankexp import reconcile as rec

VARIANT_DEPLOYMENTS = ["feed-ranking-control", "feed-ranking-treatment"]


def _run(store: Any, body: dict[str, Any], now: str = "T1") -> rec.Outcome:
    """One reconcile, then store its status into the body as kopf's patch would."""
    before = copy.deepcopy(body)
    outcome = rec.reconcile(store, body, now=now)
    assert body == before, "reconcile must not modify the Experiment"
    body["status"] = {**(body.get("status") or {}), **outcome.status}
    return outcome


def _reasons(outcome: rec.Outcome) -> list[str]:
    return [e.reason for e in outcome.events]


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    found = cond.find(body["status"]["conditions"], type_)
    assert found is not None
    return found


def test_first_reconcile_creates_owned_children(store: Any, experiment_body: Any) -> None:
    outcome = _run(store, experiment_body)
    assert store.names("Deployment") == [
        "feed-ranking-control",
        "feed-ranking-router",
        "feed-ranking-treatment",
    ]
    assert store.names("Service") == store.names("Deployment")
    assert store.names("ConfigMap") == ["feed-ranking-routing"]
    for obj in store.objects.values():
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == "0000-1111" and owner["controller"] is True
        assert owner["kind"] == "Experiment" and owner["apiVersion"] == "rankexp.io/v1alpha1"
    assert _reasons(outcome) == ["ChildrenCreated"]
    status = experiment_body["status"]
    assert status["observedGeneration"] == 1
    assert status["phase"] == "Pending"
    assert status["traffic"] == [
        {"variant": "control", "weight": 50},
        {"variant": "treatment", "weight": 50},
    ]
    assert status["variants"] == [
        {"name": "control", "readyReplicas": 0},
        {"name": "treatment", "readyReplicas": 0},
    ]
    assert _condition(experiment_body, "Ready")["reason"] == "VariantsNotReady"
    assert _condition(experiment_body, "Degraded")["status"] == "False"
    assert _condition(experiment_body, "Progressing")["observedGeneration"] == 1


def test_reconcile_is_idempotent(store: Any, experiment_body: Any) -> None:
    _run(store, experiment_body, now="T1")
    versions = {k: o["metadata"]["resourceVersion"] for k, o in store.objects.items()}
    status = copy.deepcopy(experiment_body["status"])
    outcome = _run(store, experiment_body, now="T2")
    assert outcome.events == [] and outcome.created == outcome.updated == []
    assert {k: o["metadata"]["resourceVersion"] for k, o in store.objects.items()} == versions
    assert experiment_body["status"] == status  # lastTransitionTime did not move


def test_weight_change_touches_only_the_routing(store: Any, experiment_body: Any) -> None:
    _run(store, experiment_body)
    versions = {
        n: store.get("Deployment", n)["metadata"]["resourceVersion"] for n in VARIANT_DEPLOYMENTS
    }
    experiment_body["spec"]["variants"][0]["weight"] = 80
    experiment_body["spec"]["variants"][1]["weight"] = 20
    experiment_body["metadata"]["generation"] = 2
    outcome = _run(store, experiment_body)
    assert sorted(outcome.updated) == [
        "ConfigMap feed-ranking-routing",
        "Deployment feed-ranking-router",
    ]
    assert "TrafficChanged" in _reasons(outcome)
    for name, version in versions.items():
        assert store.get("Deployment", name)["metadata"]["resourceVersion"] == version
    routing = rec.routing_from_configmap(store.get("ConfigMap", "feed-ranking-routing"))
    assert [v["weight"] for v in routing["variants"]] == [80, 20]
    assert experiment_body["status"]["observedGeneration"] == 2


def test_removing_a_variant_deletes_its_children(store: Any, experiment_body: Any) -> None:
    spec = experiment_body["spec"]
    spec["variants"].append(
        {"name": "treatment-b", "model": {"uri": "/models/v3"}, "weight": 0, "replicas": 1}
    )
    _run(store, experiment_body)
    assert "feed-ranking-treatment-b" in store.names("Deployment")
    spec["variants"].pop()
    outcome = _run(store, experiment_body)
    assert sorted(outcome.deleted) == [
        "Deployment feed-ranking-treatment-b",
        "Service feed-ranking-treatment-b",
    ]
    assert "ChildrenDeleted" in _reasons(outcome)
    assert "feed-ranking-treatment-b" not in store.names("Deployment") + store.names("Service")


def test_children_of_other_experiments_are_left_alone(store: Any, experiment_body: Any) -> None:
    other = copy.deepcopy(experiment_body)
    other["metadata"].update(name="other", uid="9999")
    _run(store, other)
    _run(store, experiment_body)
    assert "other-control" in store.names("Deployment")
    assert store.deleted == []


def test_paused_freezes_children(store: Any, experiment_body: Any) -> None:
    _run(store, experiment_body)
    applied = len(store.applied)
    experiment_body["spec"]["paused"] = True
    experiment_body["spec"]["variants"][0]["weight"] = 10
    experiment_body["spec"]["variants"][1]["weight"] = 90
    experiment_body["metadata"]["generation"] = 2
    outcome = _run(store, experiment_body)
    assert len(store.applied) == applied and store.deleted == []
    assert _reasons(outcome) == ["Paused"]
    progressing = _condition(experiment_body, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "Paused")
    assert experiment_body["status"]["traffic"][0]["weight"] == 50  # still the old split
    assert _reasons(_run(store, experiment_body)) == []  # no event storm while paused
    experiment_body["spec"]["paused"] = False
    outcome = _run(store, experiment_body)
    assert "Resumed" in _reasons(outcome) and "TrafficChanged" in _reasons(outcome)


def test_unsupported_model_uri_is_a_permanent_failure(store: Any, experiment_body: Any) -> None:
    experiment_body["spec"]["variants"][1]["model"]["uri"] = "s3://bucket/models/v2"
    outcome = _run(store, experiment_body)
    assert (
        outcome.permanent_error is not None and "s3://bucket/models/v2" in outcome.permanent_error
    )
    assert store.applied == []
    assert experiment_body["status"]["phase"] == "Failed"
    degraded = _condition(experiment_body, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "UnsupportedModelURI")
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "UnsupportedModelURI")]
    # Fixing the spec recovers.
    experiment_body["spec"]["variants"][1]["model"]["uri"] = "file:///models/v2"
    outcome = _run(store, experiment_body)
    assert outcome.permanent_error is None and "Recovered" in _reasons(outcome)
    assert _condition(experiment_body, "Degraded")["status"] == "False"
    assert experiment_body["status"]["phase"] == "Pending"


def test_name_conflict_with_another_experiment(store: Any, experiment_body: Any) -> None:
    # "feed" + "ranking-control" renders the same child names as "feed-ranking" + "control".
    other = copy.deepcopy(experiment_body)
    other["metadata"].update(name="feed", uid="9999")
    other["spec"]["variants"][0]["name"] = "ranking-control"
    other["spec"]["control"] = "ranking-control"
    _run(store, other)
    outcome = _run(store, experiment_body)
    assert outcome.permanent_error is not None
    assert _condition(experiment_body, "Degraded")["reason"] == "NameConflict"


def test_readiness_comes_from_the_child_deployments(store: Any, experiment_body: Any) -> None:
    _run(store, experiment_body)
    for name in [*VARIANT_DEPLOYMENTS, "feed-ranking-router"]:
        store.get("Deployment", name)["status"] = {"readyReplicas": 1}
    status = rec.refresh_readiness(store, experiment_body, now="T9")
    assert status is not None
    assert status["phase"] == "Running"
    assert [v["readyReplicas"] for v in status["variants"]] == [1, 1]
    ready = cond.find(status["conditions"], "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "AllVariantsReady")
    # A pending generation is the reconciler's business, not the timer's.
    experiment_body["metadata"]["generation"] = 2
    assert rec.refresh_readiness(store, experiment_body) is None


def test_failure_is_reported_once_per_generation(store: Any, experiment_body: Any) -> None:
    experiment_body["spec"]["variants"][1]["model"]["uri"] = "gs://b/m"
    assert _reasons(_run(store, experiment_body)) == ["UnsupportedModelURI"]
    # A resume after an operator restart: still failed, no second warning.
    again = _run(store, experiment_body)
    assert again.permanent_error is not None and again.events == []


def test_failed_outcome_for_a_rejected_child(experiment_body: Any) -> None:
    outcome = rec.failed(experiment_body, "ChildRejected", "422 Unprocessable Entity: nope")
    assert outcome.status["phase"] == "Failed"
    degraded = cond.find(outcome.status["conditions"], "Degraded")
    assert degraded is not None and degraded["reason"] == "ChildRejected"
    assert outcome.permanent_error == "422 Unprocessable Entity: nope"
