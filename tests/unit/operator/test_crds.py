"""The CRD YAML in crds/ is generated from rankexp.api and is a valid structural schema."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rankexp import api
from rankexp.api import crd

Loader = Callable[[str], dict[str, Any]]


def _crd(kind: str) -> dict[str, Any]:
    return api.render_crd(next(k for k in api.KINDS if k.kind == kind))


def _schema(kind: str) -> dict[str, Any]:
    version = _crd(kind)["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for name, child in (node.get("properties") or {}).items():
            yield from _walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("folder", ["crds", "charts/rankexp/crds"])
def test_crd_files_are_up_to_date(repo: Path, folder: str) -> None:
    """Golden test: run `make crds` when this fails (the chart ships the same CRDs)."""
    for name, content in api.crd_files().items():
        path = repo / folder / name
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == content, f"{path} is stale: run `make crds`"


def test_the_chart_installs_the_sample_alert_policy(repo: Path) -> None:
    sample = (repo / "crds/samples/alertpolicy.yaml").read_text()
    assert (repo / "charts/rankexp/files/alertpolicy.yaml").read_text() == sample


def test_render_check_mode_reports_stale_files(tmp_path: Path) -> None:
    assert crd.main(["render", "crds", "--out", str(tmp_path)]) == 0
    assert crd.main(["render", "crds", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "experiment.yaml").write_text("stale\n")
    assert crd.main(["render", "crds", "--out", str(tmp_path), "--check"]) == 1


@pytest.mark.parametrize("kind", ["Experiment", "AlertPolicy"])
def test_schema_is_structural(kind: str) -> None:
    """Every node has a type (or is int-or-string), no $ref/anyOf survives, no node
    preserves unknown fields, and spec and status are both declared objects."""
    schema = _schema(kind)
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node, path
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and not isinstance(node["minimum"], bool)
    for part in ("spec", "status"):
        assert schema["properties"][part]["type"] == "object"
        assert schema["properties"][part]["properties"], part


@pytest.mark.parametrize(
    ("kind", "short", "columns"),
    [
        ("Experiment", "exp", ["Phase", "Control", "Winner", "Lift", "P-Value", "Age"]),
        ("AlertPolicy", "ap", ["Interval", "Firing", "Last-Evaluation", "Age"]),
    ],
)
def test_names_subresource_and_columns(kind: str, short: str, columns: list[str]) -> None:
    crd = _crd(kind)
    assert crd["spec"]["group"] == "rankexp.io"
    assert crd["spec"]["names"]["shortNames"] == [short]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns


def test_experiment_status_is_declared() -> None:
    status = _schema("Experiment")["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"
    assert status["phase"]["enum"] == list(api.PHASES)
    condition = status["conditions"]["items"]
    assert set(condition["required"]) >= {"type", "status", "reason", "lastTransitionTime"}
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["traffic"]["items"]["properties"]["weight"]["type"] == "integer"
    assert "readyReplicas" in status["variants"]["items"]["properties"]


def test_weights_are_integers() -> None:
    variant = _schema("Experiment")["properties"]["spec"]["properties"]["variants"]["items"]
    assert variant["properties"]["weight"]["type"] == "integer"
    assert variant["properties"]["replicas"]["type"] == "integer"


def test_cel_rules_name_each_rule_and_are_bounded() -> None:
    """Every rule has a message; every list or string a rule iterates over is bounded,
    which is what keeps the API server's CEL cost estimate under its limit."""
    messages = []
    for path, node in _walk(_schema("Experiment")):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"], (path, rule)
            messages.append(rule["message"])
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "string" and node.get("format") != "date-time":
            assert "maxLength" in node or "enum" in node or path.endswith(("apiVersion", "kind")), (
                path
            )
    text = " | ".join(messages)
    for expected in (
        "weights must sum to 100",
        "names must be unique",
        "must be a DNS label",
        "control must name one of the variants",
        "between 2 and 10 variants",
        "weight must be in 0..100",
        "replicas must not be negative",
        "interleaving takes exactly two variants",
    ):
        assert expected in text


@pytest.mark.parametrize(
    ("sample", "model"),
    [("experiment.yaml", api.Experiment), ("alertpolicy.yaml", api.AlertPolicy)],
)
def test_samples_validate_against_the_models(
    load_sample: Loader, sample: str, model: type[api.Experiment | api.AlertPolicy]
) -> None:
    manifest = load_sample(sample)
    assert manifest["apiVersion"] == api.API_VERSION
    model.model_validate({"spec": manifest["spec"]})


def test_experiment_sample_is_the_documented_ab_test(load_sample: Loader) -> None:
    spec = api.ExperimentSpec.model_validate(load_sample("experiment.yaml")["spec"])
    uris = {v.name: v.model.uri for v in spec.variants}
    assert uris == {"control": "file:///models/v1", "treatment": "file:///models/v2"}
    assert spec.control == "control"


def test_alertpolicy_sample_has_the_four_default_rules(load_sample: Loader) -> None:
    spec = api.AlertPolicySpec.model_validate(load_sample("alertpolicy.yaml")["spec"])
    severities = {r.name: r.severity for r in spec.rules}
    assert severities == {
        "high_latency": "warning",
        "high_error_rate": "critical",
        "low_cache_hit": "warning",
        "model_drift": "warning",
    }


def _spec(load_sample: Loader) -> dict[str, Any]:
    return copy.deepcopy(load_sample("experiment.yaml")["spec"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["variants"][0].update(weight=60), "weights must sum to 100"),
        (lambda s: s["variants"][1].update(name="control"), "names must be unique"),
        (lambda s: s["variants"][1].update(name="Treatment_B"), "DNS label"),
        (lambda s: s.update(control="nobody"), "control must name one of the variants"),
        (lambda s: s["variants"].pop(), "between 2 and 10 variants"),
        (lambda s: s["variants"][1].update(replicas=-1), "replicas must not be negative"),
        (
            lambda s: s.update(
                mode="interleaving",
                variants=[*s["variants"], {**s["variants"][1], "name": "t2", "weight": 0}],
            ),
            "interleaving takes exactly two variants",
        ),
        (
            lambda s: s["analysis"].update(guardrails=[{"metric": "ctr", "maxIncreaseMs": 20}]),
            "maxIncreaseMs is for latency_p95_ms",
        ),
        (
            lambda s: s["analysis"].update(
                guardrails=[{"metric": "latency_p95_ms", "max": 100, "maxIncreaseMs": 20}]
            ),
            "exactly one of max, nonInferiorityMargin and maxIncreaseMs",
        ),
    ],
)
def test_models_mirror_the_cel_rules(
    load_sample: Loader, mutate: Callable[[dict[str, Any]], Any], message: str
) -> None:
    spec = _spec(load_sample)
    mutate(spec)
    with pytest.raises(ValidationError, match=message):
        api.ExperimentSpec.model_validate(spec)


def test_rendered_yaml_round_trips() -> None:
    for content in api.crd_files().values():
        assert yaml.safe_load(content)["kind"] == "CustomResourceDefinition"
