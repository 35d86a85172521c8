"""The operator against a real kube-apiserver, with kubectl as the client and the operator
running as `python -m rankexp --standalone --namespace NS`.

There is no controller-manager: Deployments never get ready replicas (so experiments stay
Pending with Ready=False/VariantsNotReady) and owner references are not garbage-collected,
which is why removed children must be deleted by the operator itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SAMPLE: dict[str, Any] = yaml.safe_load((REPO / "crds/samples/experiment.yaml").read_text())
NAME = SAMPLE["metadata"]["name"]  # feed-ranking


def sample(name: str = NAME, **spec: Any) -> dict[str, Any]:
    """The sample without its traffic ramp (so the routing holds the spec's weights)."""
    manifest = copy.deepcopy(SAMPLE)
    manifest["metadata"] = {"name": name}
    manifest["spec"].pop("traffic", None)
    manifest["spec"].update(spec)
    return manifest


def variant(name: str, weight: int, uri: str = "file:///models/v1", replicas: int = 1) -> Any:
    return {"name": name, "model": {"uri": uri}, "weight": weight, "replicas": replicas}


def selector(name: str = NAME) -> str:
    return f"rankexp.io/experiment={name}"


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def reconciled(kube: Any, name: str = NAME) -> Callable[[], dict[str, Any] | None]:
    """A check: the Experiment once status.observedGeneration caught up with its generation."""

    def check() -> dict[str, Any] | None:
        obj: dict[str, Any] | None = kube.get("experiment", name)
        if obj and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"].get(
            "generation"
        ):
            return obj
        return None

    return check


def routing(kube: Any, name: str = NAME) -> dict[str, Any]:
    configmap = kube.get("configmap", f"{name}-routing")
    assert configmap is not None
    parsed: dict[str, Any] = json.loads(configmap["data"]["routing.json"])
    return parsed


def weights(kube: Any, name: str = NAME) -> dict[str, int]:
    return {v["name"]: v["weight"] for v in routing(kube, name)["variants"]}


def resource_versions(kube: Any, kind: str, name: str = NAME) -> dict[str, str]:
    return {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"]
        for o in kube.list_objects(kind, f"{selector(name)},app.kubernetes.io/component=variant")
    }


# ------------------------------------------------------------------------- happy path


def test_sample_creates_owned_children(kube: Any, operator: Any) -> None:
    """kubectl apply -f crds/ (session fixture) and the sample: every child appears with
    labels, owner references, the weights in the ConfigMap, and a status."""
    operator.start()
    kube.kubectl("apply", "-f", str(REPO / "crds/samples/experiment.yaml"))
    exp = wait_for_reconcile(kube, operator)
    uid = exp["metadata"]["uid"]

    expected = [f"{NAME}-control", f"{NAME}-router", f"{NAME}-treatment"]
    assert kube.names("deployments", selector()) == expected
    assert kube.names("services", selector()) == expected
    assert kube.names("configmaps", selector()) == [f"{NAME}-routing"]
    for kind in ("deployments", "services", "configmaps"):
        for child in kube.list_objects(kind, selector()):
            (owner,) = child["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["uid"]) == ("Experiment", NAME, uid)
            assert owner["controller"] is True
            labels = child["metadata"]["labels"]
            assert labels["app.kubernetes.io/managed-by"] == "rankexp-operator"
            assert labels["app.kubernetes.io/part-of"] == "rankexp"

    treatment = kube.get("deployment", f"{NAME}-treatment")
    (container,) = treatment["spec"]["template"]["spec"]["containers"]
    assert container["args"][:5] == [
        "serve",
        "--model",
        "file:///models/v2",
        "--variant",
        "treatment",
    ]
    assert (
        treatment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    )
    # The sample ramps the treatment through 10, 25 and 50 %: the run starts at 90/10.
    assert routing(kube) == {
        "mode": "ab",
        "experiment": NAME,
        "salt": uid,
        "control": "control",
        "variants": [
            {
                "name": v,
                "weight": w,
                "endpoints": [f"http://{NAME}-{v}.{kube.namespace}.svc:8080"],
                "buckets": buckets,
            }
            for v, w, buckets in (("control", 90, [[0, 9000]]), ("treatment", 10, [[9000, 10000]]))
        ],
    }

    status = exp["status"]
    assert status["phase"] == "Pending"
    assert status["traffic"] == [
        {"variant": "control", "weight": 90},
        {"variant": "treatment", "weight": 10},
    ]
    action = status["lastAction"]
    assert (action["seq"], action["type"], action["step"], action["stages"]) == (1, "Start", 0, 3)
    configmap = kube.get("configmap", f"{NAME}-routing")
    written = json.loads(configmap["metadata"]["annotations"]["rankexp.io/last-action"])
    assert {k: v for k, v in written.items() if v is not None} == action
    assert [e["reason"] for e in kube.events(NAME, "RunStarted")] == ["RunStarted"]
    assert [(v["name"], v["readyReplicas"]) for v in status["variants"]] == [
        ("control", 0),
        ("treatment", 0),
    ]
    ready = condition(exp, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "VariantsNotReady")
    assert condition(exp, "Degraded")["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    assert kube.events(NAME, "ChildrenCreated"), "a Kubernetes Event for the new children"
    # The operator never writes spec: the stored spec is what kubectl applied, and no field
    # manager but kubectl owns a spec field.
    assert exp["spec"]["variants"] == SAMPLE["spec"]["variants"]
    managed = kube.kubectl("get", "experiment", NAME, "-o", "json", "--show-managed-fields")
    spec_writers = {
        entry["manager"]
        for entry in json.loads(managed.stdout)["metadata"]["managedFields"]
        if "f:spec" in (entry.get("fieldsV1") or {})
    }
    assert spec_writers == {"kubectl-client-side-apply"}
    assert operator.healthy(), "the --liveness endpoint answers"


def wait_for_reconcile(kube: Any, operator: Any, name: str = NAME) -> dict[str, Any]:
    exp: dict[str, Any] = kube.wait_for(
        reconciled(kube, name), f"{name} reconciled", operator=operator
    )
    return exp


def test_ready_replicas_come_from_the_child_deployments(kube: Any, operator: Any) -> None:
    """No kubelet here: play the Deployment controller by writing the children's status
    subresource; the readiness timer copies readyReplicas into the Experiment."""
    operator.start()
    kube.apply(sample())
    wait_for_reconcile(kube, operator)
    for child in ("control", "treatment", "router"):
        kube.mark_ready(f"{NAME}-{child}")

    def running() -> dict[str, Any] | None:
        obj = kube.get("experiment", NAME)
        return obj if (obj.get("status") or {}).get("phase") == "Running" else None

    exp = kube.wait_for(running, "phase Running", operator=operator)
    assert exp["status"]["startedAt"], "the analysis window starts when the run is Running"
    assert [v["readyReplicas"] for v in exp["status"]["variants"]] == [1, 1]
    ready = condition(exp, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "AllVariantsReady")
    assert condition(exp, "Progressing")["reason"] == "RolloutComplete"


def test_abn_experiment_with_three_variants(kube: Any, operator: Any) -> None:
    operator.start()
    kube.apply(
        sample(
            variants=[
                variant("control", 50),
                variant("ranker-b", 30, "file:///models/v2"),
                variant("ranker-c", 20, "/models/v3", replicas=2),
            ]
        )
    )
    exp = wait_for_reconcile(kube, operator)
    assert kube.names("deployments", selector()) == [
        f"{NAME}-control",
        f"{NAME}-ranker-b",
        f"{NAME}-ranker-c",
        f"{NAME}-router",
    ]
    assert weights(kube) == {"control": 50, "ranker-b": 30, "ranker-c": 20}
    assert kube.get("deployment", f"{NAME}-ranker-c")["spec"]["replicas"] == 2
    assert [t["weight"] for t in exp["status"]["traffic"]] == [50, 30, 20]


def test_weight_change_reaches_configmap_only(kube: Any, operator: Any) -> None:
    operator.start()
    kube.apply(sample())
    wait_for_reconcile(kube, operator)
    deployments = resource_versions(kube, "deployments")
    services = resource_versions(kube, "services")
    assert len(deployments) == len(services) == 2

    manifest = sample()
    manifest["spec"]["variants"][0]["weight"] = 75
    manifest["spec"]["variants"][1]["weight"] = 25
    kube.apply(manifest)  # the GitOps way: re-apply the edited manifest
    exp = wait_for_reconcile(kube, operator)
    assert weights(kube) == {"control": 75, "treatment": 25}
    assert [t["weight"] for t in exp["status"]["traffic"]] == [75, 25]
    assert resource_versions(kube, "deployments") == deployments, "variant Deployments touched"
    assert resource_versions(kube, "services") == services, "variant Services touched"
    # New weights are a new design: a new run, announced once.
    assert len(kube.events(NAME, "RunStarted")) == 2
    assert exp["status"]["lastAction"]["seq"] == 2


def test_kubectl_get_prints_the_columns(kube: Any, operator: Any) -> None:
    operator.start()
    kube.apply(sample())
    wait_for_reconcile(kube, operator)
    lines = kube.kubectl("get", "exp").stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "CONTROL", "WINNER", "LIFT", "P-VALUE", "AGE"]
    row = lines[1].split()
    assert row[:3] == [NAME, "Pending", "control"]
    wide = kube.kubectl("get", "experiments.rankexp.io", NAME, "-o", "name").stdout.strip()
    assert wide == f"experiment.rankexp.io/{NAME}"


def test_alertpolicy_sample_is_accepted(kube: Any) -> None:
    kube.kubectl("apply", "-f", str(REPO / "crds/samples/alertpolicy.yaml"))
    lines = kube.kubectl("get", "ap").stdout.splitlines()
    assert lines[0].split() == ["NAME", "INTERVAL", "FIRING", "LAST-EVALUATION", "AGE"]
    assert lines[1].split()[:2] == ["default", "30s"]


# --------------------------------------------------------------------- API validation


def _eleven() -> list[Any]:
    return [variant(f"v{i}", 10 if i < 9 else 5) for i in range(11)]


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "weights-not-100": (
        {"variants": [variant("control", 60), variant("treatment", 50)]},
        "variant weights must sum to 100",
    ),
    "duplicate-names": (
        {"variants": [variant("control", 50), variant("control", 50)]},
        "variant names must be unique",
    ),
    "non-dns-label": (
        {"variants": [variant("control", 50), variant("Treatment_B", 50)]},
        "variant name must be a DNS label",
    ),
    "control-not-a-variant": ({"control": "baseline"}, "control must name one of the variants"),
    "one-variant": (
        {"variants": [variant("control", 100)]},
        "an experiment needs between 2 and 10 variants",
    ),
    # maxItems (which bounds the CEL cost) is checked first and the API server then skips
    # the CEL rules, so "more than 10" reads as the schema's message.
    "eleven-variants": (
        {"variants": _eleven(), "control": "v0"},
        "spec.variants: Too many: 11: must have at most 10 items",
    ),
    "negative-weight": (
        {"variants": [variant("control", -10), variant("treatment", 110)]},
        "variant weight must be in 0..100",
    ),
    "invalid-quantity": (
        {"template": {"image": "ranker:1", "resources": {"requests": {"cpu": "lots"}}}},
        "spec.template.resources.requests.cpu in body should match",
    ),
    "image-with-spaces": (
        {"template": {"image": "ranker 1"}},
        "spec.template.image in body should match",
    ),
    "negative-replicas": (
        {"variants": [variant("control", 50), variant("treatment", 50, replicas=-1)]},
        "variant replicas must not be negative",
    ),
    "interleaving-three-variants": (
        {
            "mode": "interleaving",
            "variants": [variant("control", 50), variant("t1", 25), variant("t2", 25)],
        },
        "interleaving takes exactly two variants: control and one treatment",
    ),
    "unknown-mode": ({"mode": "bandit"}, 'spec.mode: Unsupported value: "bandit"'),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_experiment_is_rejected(kube: Any, case: str) -> None:
    spec, message = INVALID[case]
    result = kube.apply(sample(name=f"bad-{case}", **spec), check=False)
    assert result.returncode != 0, f"accepted: {case}"
    assert message in result.stderr, result.stderr
    assert kube.get("experiment", f"bad-{case}") is None


def test_invalid_alertpolicy_is_rejected(kube: Any) -> None:
    policy = yaml.safe_load((REPO / "crds/samples/alertpolicy.yaml").read_text())
    policy["spec"]["rules"][0]["metric"] = "latency_p95_ms"  # expr and metric together
    result = kube.apply(policy, check=False)
    assert result.returncode != 0
    assert "a rule sets either expr or all of metric, op and threshold" in result.stderr


# ----------------------------------------------------------------- failure and recovery


def test_unsupported_model_uri_degrades_only_that_experiment(kube: Any, operator: Any) -> None:
    operator.start()
    bad = sample(name="bad-uri")
    bad["spec"]["variants"][1]["model"]["uri"] = "s3://models/v2"
    kube.apply(bad)
    kube.apply(sample(name="good"))

    def degraded() -> dict[str, Any] | None:
        obj = kube.get("experiment", "bad-uri")
        return obj if condition(obj, "Degraded").get("status") == "True" else None

    exp = kube.wait_for(degraded, "bad-uri Degraded", operator=operator)
    assert condition(exp, "Degraded")["reason"] == "UnsupportedModelURI"
    assert "s3://models/v2" in condition(exp, "Degraded")["message"]
    assert exp["status"]["phase"] == "Failed"
    # kstatus: Failed (Stalled), with the same reason; `kubectl wait` sees it
    assert condition(exp, "Stalled")["status"] == "True"
    assert condition(exp, "Stalled")["reason"] == "UnsupportedModelURI"
    assert condition(exp, "Reconciling")["status"] == "False"
    kube.kubectl("wait", "--for=condition=Stalled", "experiment/bad-uri", "--timeout=10s")
    assert kube.names("deployments", selector("bad-uri")) == []
    (event,) = kube.wait_for(lambda: kube.events("bad-uri", "UnsupportedModelURI"), "warning")
    assert event["type"] == "Warning"

    good = wait_for_reconcile(kube, operator, "good")
    assert kube.names("deployments", selector("good")) == [
        "good-control",
        "good-router",
        "good-treatment",
    ]
    assert condition(good, "Degraded")["status"] == "False"
    # Permanent, not retried: a third experiment reconciles meanwhile and the failed one
    # still has exactly one warning.
    kube.apply(sample(name="third"))
    wait_for_reconcile(kube, operator, "third")
    assert len(kube.events("bad-uri", "UnsupportedModelURI")) == 1

    # Fixing the spec recovers it.
    kube.patch(
        "experiment",
        "bad-uri",
        [{"op": "replace", "path": "/spec/variants/1/model/uri", "value": "file:///models/v2"}],
        type_="json",
    )
    fixed = wait_for_reconcile(kube, operator, "bad-uri")
    assert condition(fixed, "Degraded")["status"] == "False"
    assert condition(fixed, "Stalled")["status"] == "False"
    assert condition(fixed, "Reconciling")["status"] == "True"  # waiting for its replicas
    assert len(kube.names("deployments", selector("bad-uri"))) == 3


def test_restart_midway_converges_without_duplicates(kube: Any, operator: Any) -> None:
    operator.start()
    kube.apply(sample())
    # Kill the operator (SIGKILL) as soon as it has started creating children.
    kube.wait_for(
        lambda: kube.list_objects("deployments", selector()), "first child", operator=operator
    )
    operator.kill()
    # Whatever it got done, pretend it died before the router's Service and ConfigMap.
    kube.kubectl("delete", "service", f"{NAME}-router", "--ignore-not-found")
    kube.kubectl("delete", "configmap", f"{NAME}-routing", "--ignore-not-found")
    # While it is down, the experiment changes: new weights and a third variant.
    kube.apply(
        sample(
            variants=[
                variant("control", 40),
                variant("treatment", 40, "file:///models/v2"),
                variant("treatment-b", 20, "file:///models/v3"),
            ]
        )
    )
    operator.start()
    exp = wait_for_reconcile(kube, operator)
    assert exp["metadata"]["generation"] == 2
    assert weights(kube) == {"control": 40, "treatment": 40, "treatment-b": 20}
    names = [f"{NAME}-control", f"{NAME}-router", f"{NAME}-treatment", f"{NAME}-treatment-b"]
    assert kube.names("deployments", selector()) == names
    assert kube.names("services", selector()) == names
    assert kube.names("configmaps", selector()) == [f"{NAME}-routing"]
    for kind in ("deployments", "services", "configmaps"):
        for child in kube.list_objects(kind, selector()):
            assert len(child["metadata"]["ownerReferences"]) == 1
    # Exactly one Experiment, and the operator's annotations are under rankexp.io. The
    # handler writes status itself; kopf stores the handled spec in a patch of its own
    # right after the handler returns, so wait for that patch rather than race it.
    handled = "rankexp.io/last-handled-configuration"

    def stored() -> dict[str, Any] | None:
        obj: dict[str, Any] | None = kube.get("experiment", NAME)
        annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
        return obj if handled in annotations else None

    exp = kube.wait_for(stored, "the handled spec stored", operator=operator)
    annotations = exp["metadata"]["annotations"]
    assert not [k for k in annotations if k.startswith("kopf.zalando.org")]
    assert json.loads(annotations[handled])["spec"]["variants"][2]["name"] == "treatment-b"


def test_removing_a_variant_deletes_its_children(kube: Any, operator: Any) -> None:
    operator.start()
    three = [
        variant("control", 50),
        variant("treatment", 30, "file:///models/v2"),
        variant("treatment-b", 20, "file:///models/v3"),
    ]
    kube.apply(sample(variants=three))
    wait_for_reconcile(kube, operator)
    assert f"{NAME}-treatment-b" in kube.names("deployments", selector())

    kube.apply(
        sample(variants=[variant("control", 50), variant("treatment", 50, "file:///models/v2")])
    )
    wait_for_reconcile(kube, operator)
    assert kube.get("deployment", f"{NAME}-treatment-b") is None
    assert kube.get("service", f"{NAME}-treatment-b") is None
    assert weights(kube) == {"control": 50, "treatment": 50}
    assert kube.events(NAME, "ChildrenDeleted")


def test_paused_freezes_changes(kube: Any, operator: Any) -> None:
    operator.start()
    kube.apply(sample())
    wait_for_reconcile(kube, operator)
    configmap_version = kube.get("configmap", f"{NAME}-routing")["metadata"]["resourceVersion"]
    deployments = resource_versions(kube, "deployments")

    paused = sample(paused=True)
    paused["spec"]["variants"][0]["weight"] = 10
    paused["spec"]["variants"][1]["weight"] = 90
    kube.apply(paused)
    exp = wait_for_reconcile(kube, operator)
    progressing = condition(exp, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "Paused")
    assert "paused" in progressing["message"]
    assert (
        kube.get("configmap", f"{NAME}-routing")["metadata"]["resourceVersion"] == configmap_version
    )
    assert resource_versions(kube, "deployments") == deployments
    assert weights(kube) == {"control": 50, "treatment": 50}
    assert kube.events(NAME, "Paused")

    paused["spec"]["paused"] = False
    kube.apply(paused)
    wait_for_reconcile(kube, operator)
    assert weights(kube) == {"control": 10, "treatment": 90}
