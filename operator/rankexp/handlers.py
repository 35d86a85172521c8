"""Kopf registration only: settings, the Experiment handlers and the readiness timer.

The work happens in :mod:`rankexp.reconcile` (children and status) and
:mod:`rankexp.resources` (rendering); these handlers translate its outcome into
``patch.status``, Kubernetes Events and kopf's retry semantics. Handler return values are
always None so nothing lands in status by accident.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import kopf

from rankexp import reconcile
from rankexp.api import GROUP, VERSION

EXPERIMENTS = (GROUP, VERSION, "experiments")
# How often the child Deployments' readyReplicas are copied into status.
READINESS_INTERVAL = float(os.environ.get("RANKEXP_READINESS_INTERVAL", "10"))
RETRY_DELAY = 10.0
# HTTP statuses that mean "this object is invalid", not "try again".
REJECTED = (400, 422)


def new_api_client() -> Any:
    """A kubernetes ApiClient: in-cluster service account, else KUBECONFIG / ~/.kube/config."""
    from kubernetes import client, config

    try:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    except config.ConfigException:
        return config.new_client_from_config()  # type: ignore[no-untyped-call]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Reconnect watches regularly so a silently dropped connection costs minutes at most.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Only the operator's own kopf.info/kopf.warn calls become Events, not every log line.
    settings.posting.level = logging.INFO
    settings.posting.loggers = False
    memo.store = reconcile.KubeChildStore(new_api_client())


def _post(body: kopf.Body, events: list[reconcile.Event]) -> None:
    for event in events:
        if event.type == "Warning":
            kopf.warn(body, reason=event.reason, message=event.message)
        else:
            kopf.info(body, reason=event.reason, message=event.message)


def _api_error(exc: Any) -> str:
    """The API server's own message (from the Status body) when there is one."""
    try:
        detail = json.loads(exc.body or "{}").get("message")
    except (TypeError, ValueError):
        detail = None
    return f"{exc.status} {exc.reason}: {detail or exc}"


@kopf.on.resume(*EXPERIMENTS)
@kopf.on.create(*EXPERIMENTS)
@kopf.on.update(*EXPERIMENTS)
def reconcile_experiment(
    body: kopf.Body,
    memo: kopf.Memo,
    patch: kopf.Patch,
    retry: int,
    **_: Any,
) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        outcome = reconcile.reconcile(memo.store, body)
    except ApiException as exc:
        message = _api_error(exc)
        if exc.status not in REJECTED:
            if retry == 0:  # one warning, not one per retry
                kopf.warn(body, reason="ReconcileError", message=message)
            raise kopf.TemporaryError(message, delay=RETRY_DELAY) from exc
        # The API server refused a rendered child: the spec holds something it cannot take
        # (e.g. an invalid resource quantity); retrying cannot help.
        outcome = reconcile.failed(body, "ChildRejected", message)
    patch.status.update(outcome.status)
    _post(body, outcome.events)
    if outcome.permanent_error is not None:
        # Retrying cannot help; kopf handles the object again when its spec changes.
        raise kopf.PermanentError(outcome.permanent_error)


@kopf.timer(*EXPERIMENTS, interval=READINESS_INTERVAL, initial_delay=READINESS_INTERVAL)
def refresh_readiness(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    status = reconcile.refresh_readiness(memo.store, body)
    if status is not None and any(body.status.get(k) != v for k, v in status.items()):
        patch.status.update(status)
