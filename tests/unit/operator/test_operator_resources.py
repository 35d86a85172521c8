"""Rendering of an Experiment's children: names, labels, commands, routing config."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rankexp.api import ExperimentSpec
from rankexp.experiment import resources as res


@pytest.fixture
def ref() -> res.ExperimentRef:
    return res.ExperimentRef(name="feed-ranking", namespace="ns1", uid="u-1")


@pytest.fixture
def spec(experiment_body: dict[str, Any]) -> ExperimentSpec:
    return ExperimentSpec.model_validate(experiment_body["spec"])


def _by_key(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {res.child_key(c): c for c in children}


def test_children_of_an_ab_experiment(ref: res.ExperimentRef, spec: ExperimentSpec) -> None:
    children = _by_key(res.desired_children(ref, spec, res.effective_weights(spec)))
    assert sorted(children) == [
        ("ConfigMap", "feed-ranking-routing"),
        ("Deployment", "feed-ranking-control"),
        ("Deployment", "feed-ranking-router"),
        ("Deployment", "feed-ranking-treatment"),
        ("Service", "feed-ranking-control"),
        ("Service", "feed-ranking-router"),
        ("Service", "feed-ranking-treatment"),
    ]
    assert all(c["metadata"]["namespace"] == "ns1" for c in children.values())


def test_variant_deployment(ref: res.ExperimentRef, spec: ExperimentSpec) -> None:
    deployment = _by_key(res.desired_children(ref, spec, res.effective_weights(spec)))[
        ("Deployment", "feed-ranking-treatment")
    ]
    labels = deployment["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "ranker",
        "app.kubernetes.io/instance": "feed-ranking-treatment",
        "app.kubernetes.io/component": "variant",
        "app.kubernetes.io/part-of": "rankexp",
        "app.kubernetes.io/managed-by": "rankexp-operator",
        "rankexp.io/experiment": "feed-ranking",
        "rankexp.io/variant": "treatment",
    }
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    (container,) = pod["spec"]["containers"]
    assert [*container["command"], *container["args"]] == [
        "ranker",
        "serve",
        "--model",
        "file:///models/v2",
        "--variant",
        "treatment",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert container["image"] == spec.template.image
    assert container["resources"] == {
        "limits": {"memory": "1Gi"},
        "requests": {"cpu": "250m", "memory": "512Mi"},
    }
    assert {"name": "RANKER_LOG_LEVEL", "value": "info"} in container["env"]
    assert deployment["spec"]["replicas"] == 1


def test_variant_service(ref: res.ExperimentRef, spec: ExperimentSpec) -> None:
    service = _by_key(res.desired_children(ref, spec, res.effective_weights(spec)))[
        ("Service", "feed-ranking-control")
    ]
    assert service["spec"]["selector"] == {
        "rankexp.io/experiment": "feed-ranking",
        "rankexp.io/variant": "control",
    }
    assert service["spec"]["ports"][0]["port"] == 8080
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_router_and_routing_config(ref: res.ExperimentRef, spec: ExperimentSpec) -> None:
    children = _by_key(res.desired_children(ref, spec, {"control": 70, "treatment": 30}))
    config = json.loads(children[("ConfigMap", "feed-ranking-routing")]["data"]["routing.json"])
    assert config == {
        "mode": "ab",
        "experiment": "feed-ranking",
        "salt": "u-1",
        "control": "control",
        "variants": [
            {
                "name": "control",
                "weight": 70,
                "endpoints": ["http://feed-ranking-control.ns1.svc:8080"],
                "buckets": [[0, 7000]],
            },
            {
                "name": "treatment",
                "weight": 30,
                "endpoints": ["http://feed-ranking-treatment.ns1.svc:8080"],
                "buckets": [[7000, 10000]],
            },
        ],
    }
    # a later change starts from the stored allocation, not from a fresh layout
    later = _by_key(
        res.desired_children(
            ref,
            spec,
            {"control": 40, "treatment": 60},
            res.previous_allocation(children[("ConfigMap", "feed-ranking-routing")]),
        )
    )
    moved = json.loads(later[("ConfigMap", "feed-ranking-routing")]["data"]["routing.json"])
    assert [v["buckets"] for v in moved["variants"]] == [[[0, 4000]], [[4000, 10000]]]
    router = children[("Deployment", "feed-ranking-router")]
    (container,) = router["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "route",
        "--config",
        "/etc/rankexp/routing.json",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert container["volumeMounts"][0]["mountPath"] == "/etc/rankexp"
    volume = router["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == "feed-ranking-routing"
    assert router["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    assert "rankexp.io/variant" not in router["spec"]["selector"]["matchLabels"]


def test_weights_change_only_routing_children(ref: res.ExperimentRef, spec: ExperimentSpec) -> None:
    before = _by_key(res.desired_children(ref, spec, {"control": 50, "treatment": 50}))
    after = _by_key(res.desired_children(ref, spec, {"control": 90, "treatment": 10}))
    changed = sorted(key for key in before if before[key] != after[key])
    assert changed == [("ConfigMap", "feed-ranking-routing"), ("Deployment", "feed-ranking-router")]


def test_selectors_do_not_overlap(ref: res.ExperimentRef, spec: ExperimentSpec) -> None:
    children = res.desired_children(ref, spec, res.effective_weights(spec))
    deployments = [c for c in children if c["kind"] == "Deployment"]
    for d in deployments:
        selector = d["spec"]["selector"]["matchLabels"].items()
        matching = [
            o["metadata"]["name"]
            for o in deployments
            if selector <= o["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matching == [d["metadata"]["name"]]


@pytest.mark.parametrize("uri", ["file:///models/v1", "/models/v1", "file://localhost/m"])
def test_supported_model_uris(uri: str) -> None:
    assert res.unsupported_model_uri(uri) is None


@pytest.mark.parametrize(
    "uri",
    ["s3://bucket/models/v2", "gs://b/m", "http://models/v2", "models/v2", "file://host/m"],
)
def test_unsupported_model_uris(uri: str) -> None:
    why = res.unsupported_model_uri(uri)
    assert why is not None and uri in why


def test_pods_run_hardened_and_variants_get_their_own_env(experiment_body: dict[str, Any]) -> None:
    ref = res.ExperimentRef(name="feed-ranking", namespace="ns1", uid="u-1")
    raw = json.loads(json.dumps(experiment_body["spec"]))
    raw["template"]["env"] = [{"name": "SHARED", "value": "a"}, {"name": "LEVEL", "value": "x"}]
    raw["variants"][1]["env"] = [{"name": "LEVEL", "value": "y"},
                                 {"name": "RANKER_INJECT_LATENCY_MS", "value": "150"}]  # fmt: skip
    spec = ExperimentSpec.model_validate(raw)
    children = _by_key(res.desired_children(ref, spec, res.effective_weights(spec)))
    for name in ("feed-ranking-control", "feed-ranking-treatment", "feed-ranking-router"):
        pod = children[("Deployment", name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}

    def env(name: str) -> dict[str, str]:
        (container,) = children[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e["value"] for e in container["env"]}

    assert env("feed-ranking-control")["LEVEL"] == "x"
    assert "RANKER_INJECT_LATENCY_MS" not in env("feed-ranking-control")
    treatment = env("feed-ranking-treatment")
    assert treatment["LEVEL"] == "y" and treatment["RANKER_INJECT_LATENCY_MS"] == "150"
    assert treatment["SHARED"] == "a" and treatment["RANKEXP_VARIANT"] == "treatment"


def test_interleaving_routes_interleaved_until_the_run_concludes(
    ref: res.ExperimentRef, spec: ExperimentSpec
) -> None:
    spec = spec.model_copy(update={"mode": "interleaving"})
    weights = {"control": 50, "treatment": 50}

    def mode(concluded: bool) -> str:
        children = _by_key(res.desired_children(ref, spec, weights, concluded=concluded))
        data = children[("ConfigMap", "feed-ranking-routing")]["data"]["routing.json"]
        return str(json.loads(data)["mode"])

    assert mode(False) == "interleaving"
    assert mode(True) == "ab"  # the winner, or control, serves alone
