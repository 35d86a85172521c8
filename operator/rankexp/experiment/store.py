"""Where an Experiment's children live: the :class:`ChildStore` protocol the reconcile works on,
and :class:`KubeChildStore`, server-side apply against the API server (plus Events).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from rankexp.api import GROUP, VERSION

FIELD_MANAGER = "rankexp-operator"
CHILD_KINDS = ("Deployment", "Service", "ConfigMap")


class ChildStore(Protocol):
    """The few API calls the reconciler needs, on plain dicts."""

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete(self, kind: str, namespace: str, name: str) -> None: ...

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


class KubeChildStore:
    """ChildStore on the official kubernetes client; applies with server-side apply, so an
    unchanged child is a no-op for the API server (its resourceVersion stays the same) and
    fields the operator stops setting are removed."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)

    def _ops(self, kind: str) -> tuple[Any, Any, Any, Any]:
        if kind == "Deployment":
            a = self._apps
            return (
                a.list_namespaced_deployment,
                a.patch_namespaced_deployment,
                a.delete_namespaced_deployment,
                a.read_namespaced_deployment,
            )
        if kind == "Service":
            c = self._core
            return (
                c.list_namespaced_service,
                c.patch_namespaced_service,
                c.delete_namespaced_service,
                c.read_namespaced_service,
            )
        if kind == "ConfigMap":
            c = self._core
            return (
                c.list_namespaced_config_map,
                c.patch_namespaced_config_map,
                c.delete_namespaced_config_map,
                c.read_namespaced_config_map,
            )
        raise ValueError(f"unsupported child kind {kind}")

    def _to_dict(self, obj: Any, kind: str, api_version: str) -> dict[str, Any]:
        data: dict[str, Any] = self._api_client.sanitize_for_serialization(obj)
        data.setdefault("kind", kind)
        data.setdefault("apiVersion", api_version)
        return data

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        list_fn, _, _, _ = self._ops(kind)
        api_version = "apps/v1" if kind == "Deployment" else "v1"
        items = list_fn(namespace, label_selector=selector).items
        return [self._to_dict(item, kind, api_version) for item in items]

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        _, patch_fn, _, _ = self._ops(obj["kind"])
        meta = obj["metadata"]
        result = patch_fn(
            meta["name"],
            meta["namespace"],
            dict(obj),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        return self._to_dict(result, obj["kind"], obj["apiVersion"])

    def delete(self, kind: str, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        _, _, delete_fn, _ = self._ops(kind)
        try:
            delete_fn(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One child as the API server has it now (None when there is none)."""
        from kubernetes.client.exceptions import ApiException

        _, _, _, read_fn = self._ops(kind)
        try:
            obj = read_fn(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._to_dict(obj, kind, "apps/v1" if kind == "Deployment" else "v1")

    # --- rankexp's own objects (status only: the operator never writes spec) -----------

    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get_object("experiments", namespace, name)

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.patch_object_status("experiments", namespace, name, status)

    def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            obj = client.CustomObjectsApi(self._api_client).get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    def patch_object_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """A JSON merge patch of the status subresource (None deletes a field)."""
        from kubernetes import client

        client.CustomObjectsApi(self._api_client).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )

    def experiment_names(self, namespace: str, selector: str) -> Sequence[str]:
        """Names of the Experiments in ``namespace`` that match a label selector."""
        from kubernetes import client

        listed: Any = client.CustomObjectsApi(self._api_client).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "experiments", label_selector=selector
        )
        return sorted(item["metadata"]["name"] for item in listed.get("items", []))

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, decoded; None when there is no such Secret."""
        import base64

        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            secret = client.CoreV1Api(self._api_client).read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = dict(secret.data or {})
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}

    def create_event(
        self,
        involved: Mapping[str, Any],
        *,
        name: str,
        type_: str,
        reason: str,
        message: str,
        now: str,
    ) -> bool:
        """Create an Event with a fixed name; False when it exists already (so an action
        that is finished twice after a crash is announced once)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        meta = involved["metadata"]
        event: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": involved.get("kind", "Experiment"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            client.CoreV1Api(self._api_client).create_namespaced_event(meta["namespace"], event)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
