"""Kopf registration only: settings, the Experiment handlers and the per-Experiment timer.

The work happens in :mod:`rankexp.reconcile` (children and status), :mod:`rankexp.loop`
(the analysis loop) and :mod:`rankexp.rollout` (actions); these handlers translate their
outcomes into status writes, Kubernetes Events and kopf's retry semantics. Handler return
values are always None so nothing lands in status by accident.

Why the handlers write status themselves instead of returning it through ``patch``: the
change handlers and the timer of one Experiment run concurrently in kopf, and a status
merge patch replaces lists (``conditions``) whole. Each handler therefore holds the
Experiment's lock, reads the object fresh, computes and writes its status before letting
go, so no writer ever overwrites another's update with an older view.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf

from rankexp import alertloop, loop, reconcile, rollout
from rankexp import conditions as cond
from rankexp.api import GROUP, VERSION

EXPERIMENTS = (GROUP, VERSION, "experiments")
ALERTPOLICIES = (GROUP, VERSION, "alertpolicies")
# How often each Experiment's timer runs: readiness is copied into status, and the
# analysis runs when its own interval (spec.analysis.interval x the scale) is due.
READINESS_INTERVAL = float(os.environ.get("RANKEXP_READINESS_INTERVAL", "10"))
RETRY_DELAY = 10.0
# HTTP statuses that mean "this object is invalid", not "try again".
REJECTED = (400, 422)
PROMETHEUS_URL_ENV = "RANKEXP_PROMETHEUS_URL"
INTERVAL_SCALE_ENV = "RANKEXP_INTERVAL_SCALE"

log = logging.getLogger("rankexp.handlers")


def new_api_client() -> Any:
    """A kubernetes ApiClient: in-cluster service account, else KUBECONFIG / ~/.kube/config."""
    from kubernetes import client, config

    try:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    except config.ConfigException:
        return config.new_client_from_config()  # type: ignore[no-untyped-call]


class Locks:
    """One lock per Experiment (by uid): its handlers and its timer never interleave."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextmanager
    def hold(self, uid: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(uid, threading.Lock())
        with lock:
            yield


def loop_settings() -> loop.Settings:
    scale = float(os.environ.get(INTERVAL_SCALE_ENV, "1") or "1")
    if not scale > 0:
        raise ValueError(f"{INTERVAL_SCALE_ENV} must be a positive number, got {scale}")
    return loop.Settings(
        prometheus_url=os.environ.get(PROMETHEUS_URL_ENV) or None, interval_scale=scale
    )


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
    memo.locks = Locks()
    memo.loop = loop_settings()
    from rankexp.notify import Sender

    memo.sender = Sender()
    if memo.loop.prometheus_url is None:
        log.warning("no --prometheus-url: every analysis holds with PrometheusUnavailable")


def _post(body: Any, events: list[reconcile.Event]) -> None:
    for event in events:
        if event.type == "Warning":
            kopf.warn(body, reason=event.reason, message=event.message)
        else:
            kopf.info(body, reason=event.reason, message=event.message)


def _announce(store: Any, body: Any, action: rollout.ActionRecord | None) -> None:
    """The action's Event, under a name fixed by its sequence number: exactly once."""
    if action is None:
        return
    type_, reason, message = rollout.event_for(action)
    meta = body["metadata"]
    store.create_event(
        body,
        name=rollout.event_name(meta["name"], meta.get("uid", ""), action.seq),
        type_=type_,
        reason=reason,
        message=message,
        now=cond.utcnow(),
    )


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
    retry: int,
    **_: Any,
) -> None:
    from kubernetes.client.exceptions import ApiException

    meta = body["metadata"]
    with memo.locks.hold(meta.get("uid", "")):
        try:
            fresh = memo.store.get_experiment(meta["namespace"], meta["name"])
            if fresh is None:
                return  # deleted meanwhile
            try:
                outcome = reconcile.reconcile(memo.store, fresh)
            except ApiException as exc:
                if exc.status in REJECTED:
                    # The API server refused a rendered child: the spec holds something it
                    # cannot take (e.g. an invalid resource quantity); retrying cannot help.
                    outcome = reconcile.failed(fresh, "ChildRejected", _api_error(exc))
                else:
                    raise
            # The action's Event before its status: if the status write fails, the next
            # try finishes the action from the ConfigMap and the Event is not repeated.
            _announce(memo.store, fresh, outcome.action)
            memo.store.patch_status(meta["namespace"], meta["name"], outcome.status)
        except ApiException as exc:
            message = _api_error(exc)
            if retry == 0:  # one warning, not one per retry
                kopf.warn(body, reason="ReconcileError", message=message)
            raise kopf.TemporaryError(message, delay=RETRY_DELAY) from exc
    _post(body, outcome.events)
    if outcome.permanent_error is not None:
        # Retrying cannot help; kopf handles the object again when its spec changes.
        raise kopf.PermanentError(outcome.permanent_error)


@kopf.timer(*EXPERIMENTS, interval=READINESS_INTERVAL, initial_delay=READINESS_INTERVAL)
def experiment_tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Readiness every tick; the analysis loop when its interval is due."""
    from kubernetes.client.exceptions import ApiException

    from rankexp.metrics import ExperimentMetrics

    settings: loop.Settings = memo.loop
    url = settings.prometheus_url or ""

    def reader() -> loop.MetricsReader:
        return ExperimentMetrics(url, timeout=settings.timeout, retries=0)

    meta = body["metadata"]
    with memo.locks.hold(meta.get("uid", "")):
        try:
            fresh = memo.store.get_experiment(meta["namespace"], meta["name"])
            if fresh is None:
                return
            outcome = loop.tick(memo.store, fresh, settings=settings, reader=reader)
            _announce(memo.store, fresh, outcome.action)
            if outcome.status:
                memo.store.patch_status(meta["namespace"], meta["name"], outcome.status)
        except ApiException as exc:
            # The next tick tries again; an action half done is finished from the
            # routing ConfigMap's record then.
            log.warning("tick of %s/%s failed: %s", meta["namespace"], meta["name"], exc)
            return
    _post(body, outcome.events)


@kopf.timer(*ALERTPOLICIES, interval=READINESS_INTERVAL, initial_delay=READINESS_INTERVAL)
def alertpolicy_tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Evaluate the policy's rules when its interval is due; notify its receivers."""
    from datetime import UTC, datetime

    from kubernetes.client.exceptions import ApiException
    from pydantic import ValidationError

    from rankexp.api import AlertPolicySpec
    from rankexp.metrics import ExperimentMetrics

    settings: loop.Settings = memo.loop
    meta = body["metadata"]
    with memo.locks.hold(meta.get("uid", "")):
        try:
            fresh = memo.store.get_object("alertpolicies", meta["namespace"], meta["name"])
            if fresh is None:
                return
            status = fresh.get("status") or {}
            now = datetime.now(UTC)
            try:
                spec = AlertPolicySpec.model_validate(fresh.get("spec") or {})
                if not alertloop.due(status, spec, now, settings.interval_scale):
                    return
            except ValidationError:
                if status.get("observedGeneration") == fresh["metadata"].get("generation"):
                    return  # already reported for this generation
            result = alertloop.evaluate(
                fresh,
                store=memo.store,
                reader=lambda: ExperimentMetrics(
                    settings.prometheus_url or "", timeout=settings.timeout, retries=0
                ),
                sender=memo.sender,
                now=now,
            )
            memo.store.patch_object_status(
                "alertpolicies", meta["namespace"], meta["name"], result.status
            )
        except ApiException as exc:
            log.warning("evaluating %s/%s failed: %s", meta["namespace"], meta["name"],
                        exc.status)  # fmt: skip
            return
    for type_, reason, message in result.events:
        if type_ == "Warning":
            kopf.warn(body, reason=reason, message=message)
        else:
            kopf.info(body, reason=reason, message=message)
