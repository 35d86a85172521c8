"""The children cache: reads from the indexes, the operator's own writes seen at once.

The indexes here are plain dicts of lists, the shape of kopf's (key -> values); the
operator on a real API server reads them through kopf in every integration test.
"""

from __future__ import annotations

from typing import Any

import pytest

from rankexp.runtime import childcache


def child(kind: str, name: str, rv: str, experiment: str = "e", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1" if kind == "Deployment" else "v1",
        "kind": kind,
        "metadata": {
            "name": name, "namespace": "ns", "resourceVersion": rv, "uid": f"uid-{name}",
            "labels": {"app.kubernetes.io/managed-by": "rankexp-operator",
                       "rankexp.io/experiment": experiment},
            "managedFields": [{"manager": "x"}],
        },
        **extra,
    }  # fmt: skip


class Api:
    def __init__(self) -> None:
        self.applied: list[str] = []
        self.deleted: list[str] = []

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(obj["metadata"]["name"])
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": "99"}}

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append(name)

    def get_experiment(self, namespace: str, name: str) -> str:
        return f"fresh {namespace}/{name}"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def indexes(*objs: dict[str, Any]) -> dict[str, dict[tuple[str, str], list[dict[str, Any]]]]:
    out: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {
        name: {} for name in childcache.INDEXES
    }
    names = {kind: name for name, (_, _, _, kind) in childcache.INDEXES.items()}
    for obj in objs:
        for key, value in childcache.entry(obj).items():
            out[names[obj["kind"]]].setdefault(key, []).append(value)
    return out


def test_prune_keeps_what_the_operator_reads() -> None:
    deployment = child("Deployment", "e-control", "1", spec={
        "replicas": 2, "selector": {}, "template": {"metadata": {"annotations": {"a": "b"}},
                                                     "spec": {"containers": []}}},
        status={"readyReplicas": 2})  # fmt: skip
    pruned = childcache.prune(deployment)
    assert pruned["spec"] == {"replicas": 2, "template": {"metadata": {"annotations": {"a": "b"}}}}
    assert pruned["status"] == {"readyReplicas": 2}
    assert "managedFields" not in pruned["metadata"]
    assert pruned["metadata"]["labels"]["rankexp.io/experiment"] == "e"
    configmap = childcache.prune(child("ConfigMap", "e-routing", "1", data={"routing.json": "{}"}))
    assert configmap["data"] == {"routing.json": "{}"}


def test_list_filters_by_kind_namespace_and_label() -> None:
    cache = childcache.ChildCache(Api())
    store = cache.view(indexes(
        child("Deployment", "e-control", "1"), child("Deployment", "f-control", "1", "f"),
        child("Service", "e-control", "1"),
    ))  # fmt: skip
    names = [o["metadata"]["name"] for o in store.list("Deployment", "ns", "")]
    assert names == ["e-control", "f-control"]
    only_e = store.list("Deployment", "ns", "rankexp.io/experiment=e")
    assert [o["metadata"]["name"] for o in only_e] == ["e-control"]
    assert store.list("Deployment", "other", "") == []
    assert [o["kind"] for o in store.list("Service", "ns", "")] == ["Service"]
    with pytest.raises(ValueError, match="unsupported"):
        store.list("Service", "ns", "!rankexp.io/experiment")


def test_own_writes_are_read_back_until_the_watch_catches_up() -> None:
    api, clock = Api(), Clock()
    cache = childcache.ChildCache(api, ttl=5.0, clock=clock)
    old = child("ConfigMap", "e-routing", "1", data={"routing.json": "old"})
    store = cache.view(indexes(old))
    store.apply(child("ConfigMap", "e-routing", "1", data={"routing.json": "new"}))
    (seen,) = store.list("ConfigMap", "ns", "")
    assert seen["data"] == {"routing.json": "new"} and seen["metadata"]["resourceVersion"] == "99"
    # a new child is listed before its watch event
    store.apply(child("Deployment", "e-new", "0"))
    assert [o["metadata"]["name"] for o in store.list("Deployment", "ns", "")] == ["e-new"]
    # once the write is old, the watch's picture wins again
    clock.now = 6.0
    assert store.list("ConfigMap", "ns", "")[0]["data"] == {"routing.json": "old"}


def test_a_watch_at_the_written_version_is_trusted_at_once() -> None:
    api, clock = Api(), Clock()
    cache = childcache.ChildCache(api, ttl=60.0, clock=clock)
    cache.view(indexes()).apply(child("Deployment", "e-control", "1"))
    caught_up = child("Deployment", "e-control", "99", status={"readyReplicas": 1})
    (seen,) = cache.view(indexes(caught_up)).list("Deployment", "ns", "")
    assert seen["status"] == {"readyReplicas": 1}


def test_a_deleted_child_is_gone_at_once_and_other_calls_go_to_the_api() -> None:
    api = Api()
    cache = childcache.ChildCache(api)
    store = cache.view(indexes(child("Service", "e-t2", "1"), child("Service", "e-t1", "1")))
    store.delete("Service", "ns", "e-t2")
    assert [o["metadata"]["name"] for o in store.list("Service", "ns", "")] == ["e-t1"]
    assert api.deleted == ["e-t2"]
    assert store.get_experiment("ns", "e") == "fresh ns/e"


def test_every_index_must_be_there() -> None:
    with pytest.raises(KeyError, match="rankexp_services"):
        childcache.ChildCache(Api()).view({"rankexp_deployments": {}, "rankexp_configmaps": {}})
