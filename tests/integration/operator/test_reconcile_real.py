"""The plain reconcile functions and the kopf handler against a real kube-apiserver.

No operator process: each test creates the Experiment with kubectl (so it has a real uid,
generation and status subresource), calls ``reconcile.reconcile`` / ``refresh_readiness`` /
``handlers.reconcile_experiment`` with the real :class:`KubeChildStore`, and writes the
returned status back through the status subresource, as kopf's ``patch.status`` would.
Every child, resourceVersion and rejection below comes from the API server itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
import yaml

from rankexp.api import conditions as cond
from rankexp.experiment import reconcile as rec
from rankexp.experiment.store import KubeChildStore
from rankexp.runtime import childcache, handlers

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SAMPLE: dict[str, Any] = yaml.safe_load((REPO / "crds/samples/experiment.yaml").read_text())
NAME = SAMPLE["metadata"]["name"]  # feed-ranking
VARIANT_DEPLOYMENTS = [f"{NAME}-control", f"{NAME}-treatment"]
ALL_DEPLOYMENTS = [f"{NAME}-control", f"{NAME}-router", f"{NAME}-treatment"]
T1, T2, T3 = "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z", "2026-01-01T00:00:03Z"


def manifest(name: str = NAME, **spec: Any) -> dict[str, Any]:
    """The sample without its traffic ramp (so the routing holds the spec's weights)."""
    out = copy.deepcopy(SAMPLE)
    out["metadata"] = {"name": name}
    out["spec"].pop("traffic", None)
    out["spec"].update(spec)
    return out


class Experiment:
    """One Experiment in the test's namespace: kubectl for the object, the real store for
    its children."""

    def __init__(self, kube: Any, store: KubeChildStore, name: str = NAME) -> None:
        self.kube = kube
        self.store = store
        self.name = name
        self.manifest = manifest(name)

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.manifest["spec"]
        return spec

    def apply(self) -> dict[str, Any]:
        """kubectl apply the current manifest; the API server bumps generation on change."""
        self.kube.apply(self.manifest)
        return self.body()

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] | None = self.kube.get("experiment", self.name)
        assert body is not None
        return body

    def reconcile(self, now: str = T1) -> rec.Outcome:
        """One reconcile of the stored object, its status then patched as kopf would."""
        body = self.body()
        before = copy.deepcopy(body)
        outcome = rec.reconcile(self.store, body, now=now)
        assert body == before, "reconcile must not modify the Experiment"
        self.kube.kubectl(
            "patch",
            "experiment",
            self.name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": outcome.status}),
        )
        return outcome

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.body()["status"]
        return status

    def condition(self, type_: str) -> dict[str, Any]:
        found = cond.find(self.status()["conditions"], type_)
        assert found is not None, type_
        return found


def reasons(outcome: rec.Outcome) -> list[str]:
    return [e.reason for e in outcome.events]


def names(kube: Any, kind: str, experiment: str = NAME) -> list[str]:
    result: list[str] = kube.names(kind, f"rankexp.io/experiment={experiment}")
    return result


def versions(kube: Any, kind: str, experiment: str = NAME) -> dict[str, str]:
    return {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"]
        for o in kube.list_objects(kind, f"rankexp.io/experiment={experiment}")
    }


def all_versions(kube: Any, experiment: str = NAME) -> dict[str, dict[str, str]]:
    return {
        kind: versions(kube, kind, experiment) for kind in ("deployments", "services", "configmaps")
    }


def routing_weights(kube: Any, experiment: str = NAME) -> list[int]:
    configmap = kube.get("configmap", f"{experiment}-routing")
    assert configmap is not None
    return [v["weight"] for v in rec.routing_from_configmap(configmap)["variants"]]


@pytest.fixture(scope="module")
def api_client(kube_cluster: Any) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))  # type: ignore[no-untyped-call]
    yield client
    client.close()


@pytest.fixture
def store(api_client: Any) -> KubeChildStore:
    return KubeChildStore(api_client)


@pytest.fixture
def exp(kube: Any, store: KubeChildStore) -> Experiment:
    return Experiment(kube, store)


# ------------------------------------------------------------------------------ reconcile


def test_first_reconcile_creates_owned_children(kube: Any, exp: Experiment) -> None:
    uid = exp.apply()["metadata"]["uid"]
    outcome = exp.reconcile()
    assert names(kube, "deployments") == ALL_DEPLOYMENTS
    assert names(kube, "services") == ALL_DEPLOYMENTS
    assert names(kube, "configmaps") == [f"{NAME}-routing"]
    children = [o for k in ("deployments", "services", "configmaps") for o in kube.list_objects(k)]
    assert len(children) == 7  # nothing else in the namespace either
    for obj in children:
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == uid and owner["controller"] is True
        assert owner["kind"] == "Experiment" and owner["apiVersion"] == "rankexp.io/v1alpha1"
        assert owner["name"] == NAME
    assert reasons(outcome) == ["ChildrenCreated"]
    assert outcome.action is not None and (outcome.action.seq, outcome.action.type) == (1, "Start")
    assert len(outcome.created) == 7 and outcome.updated == outcome.deleted == []
    status = exp.status()
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
    assert exp.condition("Ready")["reason"] == "VariantsNotReady"
    assert exp.condition("Degraded")["status"] == "False"
    assert exp.condition("Progressing")["observedGeneration"] == 1


def test_reconcile_is_idempotent(kube: Any, exp: Experiment) -> None:
    exp.apply()
    exp.reconcile(now=T1)
    before = all_versions(kube)
    status = exp.status()
    outcome = exp.reconcile(now=T2)
    assert outcome.events == [] and outcome.created == outcome.updated == outcome.deleted == []
    assert all_versions(kube) == before, "a no-op server-side apply changed a child"
    assert exp.status() == status  # lastTransitionTime did not move


def test_weight_change_touches_only_the_routing(kube: Any, exp: Experiment) -> None:
    exp.apply()
    exp.reconcile()
    before = all_versions(kube)
    exp.spec["variants"][0]["weight"] = 80
    exp.spec["variants"][1]["weight"] = 20
    assert exp.apply()["metadata"]["generation"] == 2
    outcome = exp.reconcile()
    assert sorted(outcome.updated) == [
        f"ConfigMap {NAME}-routing",
        f"Deployment {NAME}-router",
    ]
    assert outcome.action is not None and (outcome.action.seq, outcome.action.type) == (2, "Start")
    after = all_versions(kube)
    for name in VARIANT_DEPLOYMENTS:
        assert after["deployments"][name] == before["deployments"][name]
    assert after["services"] == before["services"]
    assert after["deployments"][f"{NAME}-router"] != before["deployments"][f"{NAME}-router"]
    assert routing_weights(kube) == [80, 20]
    assert exp.status()["observedGeneration"] == 2
    assert exp.status()["traffic"] == [
        {"variant": "control", "weight": 80},
        {"variant": "treatment", "weight": 20},
    ]


def test_removing_a_variant_deletes_its_children(kube: Any, exp: Experiment) -> None:
    exp.spec["variants"].append(
        {"name": "treatment-b", "model": {"uri": "/models/v3"}, "weight": 0, "replicas": 1}
    )
    exp.apply()
    exp.reconcile()
    assert f"{NAME}-treatment-b" in names(kube, "deployments")
    assert f"{NAME}-treatment-b" in names(kube, "services")
    exp.spec["variants"].pop()
    exp.apply()
    outcome = exp.reconcile()
    assert sorted(outcome.deleted) == [
        f"Deployment {NAME}-treatment-b",
        f"Service {NAME}-treatment-b",
    ]
    assert "ChildrenDeleted" in reasons(outcome)
    assert kube.get("deployment", f"{NAME}-treatment-b") is None
    assert kube.get("service", f"{NAME}-treatment-b") is None
    assert names(kube, "deployments") == ALL_DEPLOYMENTS


def test_children_of_other_experiments_are_left_alone(
    kube: Any, store: KubeChildStore, exp: Experiment
) -> None:
    other = Experiment(kube, store, "other")
    other.apply()
    other.reconcile()
    other_versions = all_versions(kube, "other")
    exp.apply()
    outcome = exp.reconcile()
    assert outcome.deleted == []
    assert "other-control" in names(kube, "deployments", "other")
    assert all_versions(kube, "other") == other_versions
    assert len(other_versions["deployments"]) == 3


def test_paused_freezes_children(kube: Any, exp: Experiment) -> None:
    exp.apply()
    exp.reconcile()
    before = all_versions(kube)
    exp.spec["paused"] = True
    exp.spec["variants"][0]["weight"] = 10
    exp.spec["variants"][1]["weight"] = 90
    exp.apply()
    outcome = exp.reconcile()
    assert all_versions(kube) == before, "a child changed while paused"
    assert routing_weights(kube) == [50, 50]
    assert outcome.created == outcome.updated == outcome.deleted == []
    assert reasons(outcome) == ["Paused"]
    progressing = exp.condition("Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "Paused")
    assert exp.status()["traffic"][0]["weight"] == 50  # still the old split
    assert exp.status()["observedGeneration"] == 2
    assert reasons(exp.reconcile()) == []  # no event storm while paused
    exp.spec["paused"] = False
    exp.apply()
    outcome = exp.reconcile()
    assert "Resumed" in reasons(outcome)
    assert outcome.action is not None and outcome.action.type == "Start"
    assert routing_weights(kube) == [10, 90]


def test_unsupported_model_uri_is_a_permanent_failure(kube: Any, exp: Experiment) -> None:
    exp.spec["variants"][1]["model"]["uri"] = "s3://bucket/models/v2"
    exp.apply()
    outcome = exp.reconcile()
    assert (
        outcome.permanent_error is not None and "s3://bucket/models/v2" in outcome.permanent_error
    )
    assert all_versions(kube) == {"deployments": {}, "services": {}, "configmaps": {}}
    assert exp.status()["phase"] == "Failed"
    degraded = exp.condition("Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "UnsupportedModelURI")
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "UnsupportedModelURI")]
    # Fixing the spec recovers.
    exp.spec["variants"][1]["model"]["uri"] = "file:///models/v2"
    exp.apply()
    outcome = exp.reconcile()
    assert outcome.permanent_error is None and "Recovered" in reasons(outcome)
    assert exp.condition("Degraded")["status"] == "False"
    assert exp.status()["phase"] == "Pending"
    assert names(kube, "deployments") == ALL_DEPLOYMENTS


def test_name_conflict_with_another_experiment(
    kube: Any, store: KubeChildStore, exp: Experiment
) -> None:
    # "feed" + "ranking-control" renders the same child names as "feed-ranking" + "control".
    other = Experiment(kube, store, "feed")
    other.spec["variants"][0]["name"] = "ranking-control"
    other.spec["control"] = "ranking-control"
    other_uid = other.apply()["metadata"]["uid"]
    other.reconcile()
    taken = kube.get("deployment", f"{NAME}-control")
    exp.apply()
    outcome = exp.reconcile()
    assert outcome.permanent_error is not None
    assert f"Deployment {NAME}-control" in outcome.permanent_error
    assert exp.condition("Degraded")["reason"] == "NameConflict"
    assert exp.status()["phase"] == "Failed"
    # The other experiment's child is untouched and nothing of this one was created.
    assert kube.get("deployment", f"{NAME}-control") == taken
    assert taken["metadata"]["ownerReferences"][0]["uid"] == other_uid
    assert all_versions(kube) == {"deployments": {}, "services": {}, "configmaps": {}}


def test_readiness_comes_from_the_child_deployments(
    kube: Any, store: KubeChildStore, exp: Experiment
) -> None:
    """No kubelet here: play the Deployment controller by writing the status subresource."""
    exp.apply()
    exp.reconcile()
    assert rec.refresh_readiness(store, exp.body(), now=T3) == {
        "phase": "Pending",
        "conditions": exp.status()["conditions"],
        "variants": exp.status()["variants"],
    }, "nothing ready yet: the status must not change"
    # readyReplicas of a template the controller has not rolled out yet do not count
    for name in ALL_DEPLOYMENTS:
        kube.mark_ready(name, observed=0)
    stale = rec.refresh_readiness(store, exp.body(), now=T3)
    assert stale is not None and stale["phase"] == "Pending"
    for name in ALL_DEPLOYMENTS:
        kube.mark_ready(name)
    status = rec.refresh_readiness(store, exp.body(), now=T3)
    assert status is not None
    assert status["phase"] == "Running" and status["startedAt"] == T3
    assert [v["readyReplicas"] for v in status["variants"]] == [1, 1]
    ready = cond.find(status["conditions"], "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "AllVariantsReady")
    assert ready["lastTransitionTime"] == T3
    # A pending generation is the reconciler's business, not the timer's.
    exp.spec["variants"][0]["replicas"] = 2
    assert exp.apply()["metadata"]["generation"] == 2
    assert rec.refresh_readiness(store, exp.body()) is None


def test_failure_is_reported_once_per_generation(exp: Experiment) -> None:
    exp.spec["variants"][1]["model"]["uri"] = "gs://b/m"
    exp.apply()
    assert reasons(exp.reconcile()) == ["UnsupportedModelURI"]
    # A resume after an operator restart: still failed, no second warning.
    again = exp.reconcile()
    assert again.permanent_error is not None and again.events == []
    assert exp.condition("Degraded")["observedGeneration"] == 1


# --------------------------------------------------------------------------- the handler


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """What the handler posts as Events. kopf.warn/info need a running operator's event
    queue, so they are captured here; test_operator.py sees the real Events."""
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(kopf, "warn", lambda body, reason, message: events.append(("W", reason)))
    monkeypatch.setattr(kopf, "info", lambda body, reason, message: events.append(("N", reason)))
    return events


def indexes_now(store: KubeChildStore, namespace: str) -> dict[str, Any]:
    """The kopf indexes of the children as a filled index holds them: listed now."""
    out: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {}
    for name, (_, _, _, kind) in childcache.INDEXES.items():
        out[name] = {}
        for obj in store.list(kind, namespace, "app.kubernetes.io/managed-by=rankexp-operator"):
            for key, value in childcache.entry(obj).items():
                out[name].setdefault(key, []).append(value)
    return out


def call_handler(exp: Experiment, retry: int) -> None:
    """The kopf handler as kopf calls it (with the children's indexes filled); it writes
    status itself (under the lock)."""
    fn: Any = handlers.reconcile_experiment
    memo = kopf.Memo()
    memo.store = exp.store
    memo.children = childcache.ChildCache(exp.store)
    memo.locks = handlers.Locks()
    body = kopf.Body(cast(kopf.RawBody, exp.body()))
    namespace = body["metadata"]["namespace"]
    fn(body=body, memo=memo, patch=kopf.Patch(), retry=retry,
       **indexes_now(exp.store, namespace))  # fmt: skip


def test_rejected_child_is_a_permanent_failure(
    kube: Any, exp: Experiment, posted: list[tuple[str, str]]
) -> None:
    """The CRD accepts requests above limits; the API server refuses the Deployment (422)."""
    exp.spec["template"]["resources"] = {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}
    exp.apply()
    with pytest.raises(kopf.PermanentError, match="must be less than or equal to memory limit"):
        call_handler(exp, retry=0)
    assert posted == [("W", "ChildRejected")]
    assert exp.status()["phase"] == "Failed"
    degraded = exp.condition("Degraded")
    assert degraded["reason"] == "ChildRejected" and degraded["status"] == "True"
    assert degraded["message"].startswith("422 ")
    # The routing ConfigMap and the router go first (the run is on record); the rejected
    # variant Deployments were not created.
    assert not set(all_versions(kube)["deployments"]) & set(VARIANT_DEPLOYMENTS)


def test_transient_api_error_is_retried_with_one_warning(
    kube: Any, exp: Experiment, posted: list[tuple[str, str]], failing_webhook: Any
) -> None:
    exp.apply()
    with failing_webhook(kube, "apps", "deployments"):
        with pytest.raises(kopf.TemporaryError, match="^500 .*failed calling webhook") as first:
            call_handler(exp, retry=0)
        assert first.value.delay == handlers.RETRY_DELAY
        with pytest.raises(kopf.TemporaryError):
            call_handler(exp, retry=1)
    assert posted == [("W", "ReconcileError")]
    assert "phase" not in (exp.body().get("status") or {})
    assert names(kube, "deployments") == []
    # Once the API server accepts writes again, the next retry goes through.
    call_handler(exp, retry=2)
    assert exp.status()["phase"] == "Pending"
    assert posted[0] == ("W", "ReconcileError") and ("N", "ChildrenCreated") in posted
    assert names(kube, "deployments") == ALL_DEPLOYMENTS
    # The run's Start action was announced once, under its fixed name.
    assert [e["reason"] for e in kube.events(NAME, "RunStarted")] == ["RunStarted"]
