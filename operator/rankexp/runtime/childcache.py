"""The operator's children as its watches last saw them: reads from memory, writes to the API.

Every tick of every Experiment used to list the Deployments, Services and ConfigMaps of
its namespace (three LIST requests returning every Experiment's children there): with a
thousand Experiments that is O(N^2) objects read per tick interval. Instead, kopf indexes
(``@kopf.index`` in :mod:`rankexp.runtime.handlers`, fed by one watch per kind) keep each child,
pruned to the fields the operator reads, under ``(kind, namespace)``; kopf runs no handler
before the indexes are filled, so a restarted operator never sees a partial picture.

:class:`CachedChildStore` is a :class:`rankexp.experiment.store.ChildStore` on them: ``list``
from memory, ``apply`` and ``delete`` through the real store. A watch event trails the
write that caused it, so a write is remembered for a few seconds (or until the watch
shows the same resourceVersion): the next read sees the operator's own write at once.
Everything else (the Experiment itself, Events, the fresh read of a routing ConfigMap
before an action) goes to the API server through the real store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: kopf index name -> (group, version, plural, kind) of each child kind
INDEXES = {
    "rankexp_deployments": ("apps", "v1", "deployments", "Deployment"),
    "rankexp_services": ("", "v1", "services", "Service"),
    "rankexp_configmaps": ("", "v1", "configmaps", "ConfigMap"),
}
_META = ("name", "namespace", "uid", "labels", "annotations", "ownerReferences", "generation",
         "resourceVersion")  # fmt: skip


def prune(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a child the operator reads (readiness, rollout, routing, ownership):
    a pruned Deployment is about a tenth of the whole object in memory."""
    kind = str(body.get("kind", ""))
    meta = body.get("metadata") or {}
    out: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": kind,
        "metadata": {k: meta[k] for k in _META if k in meta},
    }
    if kind == "Deployment":
        spec = body.get("spec") or {}
        template = (spec.get("template") or {}).get("metadata") or {}
        out["spec"] = {
            "replicas": spec.get("replicas"),
            "template": {"metadata": {"annotations": dict(template.get("annotations") or {})}},
        }
        out["status"] = dict(body.get("status") or {})
    elif kind == "ConfigMap":
        out["data"] = dict(body.get("data") or {})
    return out


def entry(body: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """What a kopf index function returns for one child."""
    meta = body.get("metadata") or {}
    return {(str(body.get("kind", "")), str(meta.get("namespace", ""))): prune(body)}


def _selected(obj: Mapping[str, Any], selector: str) -> bool:
    """Equality label selectors (``k=v,k2=v2``), the only form the operator uses."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.partition("=")
        if not sep:
            raise ValueError(f"unsupported label selector term {term!r}")
        if labels.get(key.strip()) != value.strip().lstrip("="):
            return False
    return True


Key = tuple[str, str, str]  # kind, namespace, name


class ChildCache:
    """The operator's recent writes, shared by every view (held in kopf's memo)."""

    def __init__(self, api: Any, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.api = api
        self.ttl = ttl
        self._clock = clock
        self._recent: dict[Key, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def remember(self, key: Key, obj: dict[str, Any] | None) -> None:
        with self._lock:
            self._recent[key] = (self._clock() + self.ttl, obj)

    def recent(self, kind: str, namespace: str) -> dict[str, dict[str, Any] | None]:
        """This kind's recent writes in ``namespace``, by name (None: deleted)."""
        now = self._clock()
        with self._lock:
            for key in [k for k, (until, _) in self._recent.items() if until <= now]:
                del self._recent[key]
            return {k[2]: obj for k, (_, obj) in self._recent.items() if k[:2] == (kind, namespace)}

    def view(self, indexes: Mapping[str, Any]) -> CachedChildStore:
        return CachedChildStore(self, indexes)


class CachedChildStore:
    """A ChildStore reading children from the kopf indexes (see the module docstring);
    every other call goes to the real store."""

    def __init__(self, cache: ChildCache, indexes: Mapping[str, Any]) -> None:
        self._cache = cache
        self._api = cache.api
        self._by_kind: dict[str, Any] = {}
        for name, (_, _, _, kind) in INDEXES.items():
            if name not in indexes:
                raise KeyError(f"kopf index {name} is missing")
            self._by_kind[kind] = indexes[name]

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        index = self._by_kind[kind]
        seen: Iterable[Mapping[str, Any]] = index[(kind, namespace)] if (
            (kind, namespace) in index) else ()  # fmt: skip
        recent = self._cache.recent(kind, namespace)
        out: dict[str, dict[str, Any]] = {}
        for obj in seen:
            name = obj["metadata"]["name"]
            if name in recent:
                mine = recent[name]
                # the watch caught up with the write: trust the watch from now on
                same = mine is not None and mine["metadata"].get("resourceVersion") == obj[
                    "metadata"].get("resourceVersion")  # fmt: skip
                if not same:
                    continue
            out[name] = dict(obj)
        for name, mine in recent.items():
            if mine is not None and name not in out:
                out[name] = mine
        return [o for _, o in sorted(out.items()) if _selected(o, selector)]

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        after: dict[str, Any] = self._api.apply(obj)
        meta = after["metadata"]
        self._cache.remember((after["kind"], meta["namespace"], meta["name"]), prune(after))
        return after

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._api.delete(kind, namespace, name)
        self._cache.remember((kind, namespace, name), None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)
