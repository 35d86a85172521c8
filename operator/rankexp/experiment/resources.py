"""Desired children of an Experiment, rendered as plain dicts (no I/O).

Per variant: a Deployment and a Service running ``ranker serve``. Per experiment: the
router's Deployment and Service (``ranker route``) and the routing ConfigMap. Variant
children never depend on the weights, so a weight change only rewrites the ConfigMap (and
rolls the router through its checksum annotation).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ranker.route.allocation import reallocate
from rankexp.api import ExperimentSpec, Variant

PORT = 8080
ROUTING_KEY = "routing.json"
ROUTING_DIR = "/etc/rankexp"
MANAGER = "rankexp-operator"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_EXPERIMENT = "rankexp.io/experiment"
LABEL_VARIANT = "rankexp.io/variant"
ANNOTATION_ROUTING_CHECKSUM = "rankexp.io/routing-checksum"
ANNOTATION_ACTION = "rankexp.io/last-action"

COMPONENT_VARIANT = "variant"
COMPONENT_ROUTER = "router"

PROMETHEUS_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(PORT),
    "prometheus.io/path": "/metrics",
}

SUPPORTED_SCHEMES = ("file",)


@dataclass(frozen=True)
class ExperimentRef:
    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ExperimentRef:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""))


# --- model URIs ---------------------------------------------------------------------------


def unsupported_model_uri(uri: str) -> str | None:
    """None if the operator can serve ``uri``, else why not (for the Degraded message)."""
    if uri.startswith("/"):
        return None
    parts = urlsplit(uri)
    if parts.scheme in SUPPORTED_SCHEMES:
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            return f"{uri!r} is not an absolute file:// URI (expected file:///path)"
        return None
    scheme = parts.scheme or "relative path"
    return (
        f"{uri!r}: {scheme} is not supported; use file:///path or an absolute path "
        "mounted in the ranker image"
    )


# --- names and labels ---------------------------------------------------------------------


def variant_child_name(experiment: str, variant: str) -> str:
    return f"{experiment}-{variant}"


def router_name(experiment: str) -> str:
    return f"{experiment}-router"


def routing_configmap_name(experiment: str) -> str:
    return f"{experiment}-routing"


def endpoint(experiment: ExperimentRef, variant: str) -> str:
    service = variant_child_name(experiment.name, variant)
    return f"http://{service}.{experiment.namespace}.svc:{PORT}"


def selector_labels(experiment: str, variant: str | None = None) -> dict[str, str]:
    """Immutable Deployment selectors: never add to these once children exist."""
    if variant is None:
        return {LABEL_EXPERIMENT: experiment, LABEL_COMPONENT: COMPONENT_ROUTER}
    return {LABEL_EXPERIMENT: experiment, LABEL_VARIANT: variant}


def labels(experiment: str, component: str, variant: str | None = None) -> dict[str, str]:
    instance = (
        router_name(experiment) if variant is None else variant_child_name(experiment, variant)
    )
    out = {
        LABEL_NAME: "ranker",
        LABEL_INSTANCE: instance,
        LABEL_COMPONENT: component,
        LABEL_PART_OF: "rankexp",
        LABEL_MANAGED_BY: MANAGER,
        LABEL_EXPERIMENT: experiment,
    }
    if variant is not None:
        out[LABEL_VARIANT] = variant
    return out


# --- routing ------------------------------------------------------------------------------


def effective_weights(spec: ExperimentSpec) -> dict[str, int]:
    """The spec's weights. The router's weights in force are the run's last action's
    (rankexp.experiment.rollout), which start at the first traffic stage."""
    return {v.name: v.weight for v in spec.variants}


def variant_order(spec: ExperimentSpec) -> list[str]:
    """Control first, then the treatments in spec order (the router's layout order)."""
    names = [v.name for v in spec.variants]
    return [spec.control, *(n for n in names if n != spec.control)]


def previous_allocation(configmap: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The bucket allocation stored in an existing routing ConfigMap, if it has one."""
    if not configmap:
        return None
    try:
        config = json.loads((configmap.get("data") or {})[ROUTING_KEY])
        out = {v["name"]: v["buckets"] for v in config["variants"]}
    except (KeyError, TypeError, ValueError):
        return None
    return out if all(isinstance(b, list) for b in out.values()) else None


def routing_config(
    experiment: ExperimentRef,
    spec: ExperimentSpec,
    weights: Mapping[str, int],
    previous: Mapping[str, Any] | None = None,
    concluded: bool = False,
) -> dict[str, Any]:
    """routing.json. The bucket allocation is computed from the ``previous`` one (the
    ConfigMap's), so a weight change moves only the users it must (ranker.route.allocation).
    An interleaving experiment routes in interleaving mode until its run concludes; then
    the winner (or control) serves alone."""
    allocation = reallocate(previous, variant_order(spec), weights)
    return {
        "mode": "ab" if concluded else spec.mode,
        "experiment": experiment.name,
        # The uid is stable for the object's life and new for a re-created experiment, so
        # users are re-randomised between experiments but never within one.
        "salt": experiment.uid,
        "control": spec.control,
        "variants": [
            {
                "name": v.name,
                "weight": weights[v.name],
                "endpoints": [endpoint(experiment, v.name)],
                "buckets": [list(r) for r in allocation[v.name]],
            }
            for v in spec.variants
        ],
    }


def routing_json(config: Mapping[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"


# --- children -----------------------------------------------------------------------------


def _env(spec: ExperimentSpec, experiment: str, variant: Variant | None) -> list[dict[str, str]]:
    """The operator's own variables, then the template's, then the variant's (a variant's
    value wins over the template's for the same name)."""
    env = [{"name": "RANKEXP_EXPERIMENT", "value": experiment}]
    if variant is not None:
        env.append({"name": "RANKEXP_VARIANT", "value": variant.name})
    reserved = {e["name"] for e in env}
    extra: dict[str, str] = {e.name: e.value for e in spec.template.env}
    if variant is not None:
        extra.update({e.name: e.value for e in variant.env})
    env.extend({"name": k, "value": v} for k, v in extra.items() if k not in reserved)
    return env


# Every pod runs as a non-root user with a read-only root filesystem (the rankexp-ranker
# image's user is 65532); nothing in ranker serve or route writes to disk.
POD_SECURITY = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
PRESTOP_SECONDS = 5
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _container(spec: ExperimentSpec, args: list[str], env: list[dict[str, str]]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "ranker",
        "image": spec.template.image,
        "command": ["ranker"],
        "args": args,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": dict(CONTAINER_SECURITY),
        # Keep serving while the endpoint is removed from the Service (kube-proxy and
        # clients catch up), so a rollout or scale-down drops no requests.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
    }
    if spec.template.image_pull_policy:
        container["imagePullPolicy"] = spec.template.image_pull_policy
    return container


def _deployment(
    name: str,
    namespace: str,
    child_labels: dict[str, str],
    selector: dict[str, str],
    replicas: int,
    container: dict[str, Any],
    pod_annotations: dict[str, str],
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"securityContext": dict(POD_SECURITY), "containers": [container]}
    if volumes:
        pod_spec["volumes"] = volumes
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(child_labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": {"labels": dict(child_labels), "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }


def _service(
    name: str, namespace: str, child_labels: dict[str, str], selector: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(child_labels),
            "annotations": dict(PROMETHEUS_ANNOTATIONS),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def variant_children(
    experiment: ExperimentRef, spec: ExperimentSpec, variant: Variant, replicas: int | None = None
) -> list[dict[str, Any]]:
    name = variant_child_name(experiment.name, variant.name)
    child_labels = labels(experiment.name, COMPONENT_VARIANT, variant.name)
    selector = selector_labels(experiment.name, variant.name)
    args = [
        "serve",
        "--model",
        variant.model.uri,
        "--variant",
        variant.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
    ]
    container = _container(spec, args, _env(spec, experiment.name, variant))
    if spec.template.resources is not None:
        container["resources"] = spec.template.resources.model_dump(exclude_none=True)
    deployment = _deployment(
        name,
        experiment.namespace,
        child_labels,
        selector,
        variant.replicas if replicas is None else replicas,
        container,
        dict(PROMETHEUS_ANNOTATIONS),
    )
    return [deployment, _service(name, experiment.namespace, child_labels, selector)]


def router_children(
    experiment: ExperimentRef,
    spec: ExperimentSpec,
    weights: Mapping[str, int],
    previous: Mapping[str, Any] | None = None,
    action: str | None = None,
    concluded: bool = False,
) -> list[dict[str, Any]]:
    name = router_name(experiment.name)
    child_labels = labels(experiment.name, COMPONENT_ROUTER)
    selector = selector_labels(experiment.name)
    config_text = routing_json(routing_config(experiment, spec, weights, previous, concluded))
    configmap: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": routing_configmap_name(experiment.name),
            "namespace": experiment.namespace,
            "labels": dict(child_labels),
        },
        "data": {ROUTING_KEY: config_text},
    }
    if action is not None:
        # The write-ahead copy of the run's last action (rankexp.experiment.rollout).
        configmap["metadata"]["annotations"] = {ANNOTATION_ACTION: action}
    args = [
        "route",
        "--config",
        f"{ROUTING_DIR}/{ROUTING_KEY}",
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
    ]
    container = _container(spec, args, _env(spec, experiment.name, None))
    container["volumeMounts"] = [{"name": "routing", "mountPath": ROUTING_DIR, "readOnly": True}]
    # A new weight rolls the router, so it never serves a half-propagated ConfigMap volume.
    checksum = checksum_of(config_text)
    deployment = _deployment(
        name,
        experiment.namespace,
        child_labels,
        selector,
        1,
        container,
        {**PROMETHEUS_ANNOTATIONS, ANNOTATION_ROUTING_CHECKSUM: checksum},
        volumes=[
            {"name": "routing", "configMap": {"name": routing_configmap_name(experiment.name)}}
        ],
    )
    return [configmap, deployment, _service(name, experiment.namespace, child_labels, selector)]


def rolled_out(deployment: Mapping[str, Any]) -> bool:
    """Whether a Deployment runs its current template everywhere, as ``kubectl rollout
    status`` decides: the controller saw the latest generation, every replica is updated
    and available, and no old one is left."""
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    observed = status.get("observedGeneration")
    return (
        observed is not None
        and int(observed) >= int(meta.get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) >= wanted
        and int(status.get("availableReplicas") or status.get("readyReplicas") or 0) >= wanted
        and int(status.get("replicas") or 0) <= wanted
    )


def checksum_of(config_text: str) -> str:
    return hashlib.sha256(config_text.encode()).hexdigest()[:16]


def routing_checksum(configmap: Mapping[str, Any]) -> str | None:
    """The checksum of a routing ConfigMap's routing.json, as the router's pod template
    carries it once it runs that routing."""
    text = (configmap.get("data") or {}).get(ROUTING_KEY)
    return checksum_of(text) if text is not None else None


def desired_children(
    experiment: ExperimentRef,
    spec: ExperimentSpec,
    weights: Mapping[str, int],
    previous: Mapping[str, Any] | None = None,
    *,
    replicas: Mapping[str, int] | None = None,
    action: str | None = None,
    concluded: bool = False,
) -> list[dict[str, Any]]:
    """Every child of the experiment, variants first, without owner references.
    ``previous`` is the bucket allocation of the routing ConfigMap in place, if any;
    ``replicas`` overrides the spec's per variant (0 for variants a run scaled down);
    ``action`` is the last action's JSON, annotated on the routing ConfigMap."""
    children: list[dict[str, Any]] = []
    for variant in spec.variants:
        count = None if replicas is None else replicas.get(variant.name)
        children.extend(variant_children(experiment, spec, variant, count))
    children.extend(router_children(experiment, spec, weights, previous, action, concluded))
    return children


def child_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]
