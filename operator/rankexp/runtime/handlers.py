"""Kopf registration only: settings, the Experiment handlers and the per-Experiment timer.

The work happens in :mod:`rankexp.experiment.reconcile` (children and status),
:mod:`rankexp.experiment.loop` (the analysis loop) and :mod:`rankexp.experiment.rollout`
(actions); these handlers translate their outcomes into status writes, Kubernetes Events
and kopf's retry semantics. Handler return values are always None so nothing lands in
status by accident.

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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf

from rankexp import __version__
from rankexp.alerting import evaluate as alertloop
from rankexp.api import GROUP, VERSION
from rankexp.api import conditions as cond
from rankexp.experiment import loop, reconcile, rollout
from rankexp.experiment.measure import MetricsReader, Settings
from rankexp.experiment.resources import LABEL_MANAGED_BY, MANAGER
from rankexp.experiment.store import Event, KubeChildStore
from rankexp.runtime import childcache

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
#: Threads running the handlers and timers (kopf's executor). An analysis mostly waits on
#: Prometheus, so a thousand Experiments need more than kopf's default (cores + 4).
WORKERS_ENV = "RANKEXP_WORKERS"
DEFAULT_WORKERS = 16
#: This replica's identity (``python -m rankexp`` sets it): the Lease holder's name
IDENTITY_ENV = "RANKEXP_IDENTITY"

log = logging.getLogger("rankexp.runtime.handlers")


def user_agent() -> str:
    """``rankexp-operator/<version> (<identity>)``: the API server's audit log names the
    replica behind every request."""
    return f"rankexp-operator/{__version__} ({os.environ.get(IDENTITY_ENV) or 'unnamed'})"


def new_api_client() -> Any:
    """The operator's kubernetes ApiClient (in-cluster service account, else KUBECONFIG):
    every write checks the leader fence first, and every request is counted."""
    from rankexp.runtime import leader, telemetry

    return leader.fenced_api_client(
        leader.process_fence(),
        user_agent=user_agent(),
        on_response=telemetry.process_metrics().counter_for("rankexp"),
    )


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


def loop_settings() -> Settings:
    scale = float(os.environ.get(INTERVAL_SCALE_ENV, "1") or "1")
    if not scale > 0:
        raise ValueError(f"{INTERVAL_SCALE_ENV} must be a positive number, got {scale}")
    return Settings(prometheus_url=os.environ.get(PROMETHEUS_URL_ENV) or None, interval_scale=scale)


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
    settings.execution.max_workers = int(os.environ.get(WORKERS_ENV) or DEFAULT_WORKERS)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # kopf logs every handler's and timer's success at INFO: with a thousand
        # Experiments ticking, a hundred lines a second; failures still show (--verbose:
        # all of them)
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Only the operator's own kopf.info/kopf.warn calls become Events, not every log line.
    settings.posting.level = logging.INFO
    settings.posting.loggers = False
    memo.store = KubeChildStore(new_api_client())
    memo.children = childcache.ChildCache(memo.store)
    memo.locks = Locks()
    memo.loop = loop_settings()
    from rankexp.alerting.receivers import Sender
    from rankexp.runtime.leader import process_fence

    # a replica that lost the Lease sends no notification either
    memo.sender = Sender(may_send=process_fence().ok)
    if memo.loop.prometheus_url is None:
        log.warning("no --prometheus-url: every analysis holds with PrometheusUnavailable")


@kopf.on.login()
async def login(settings: kopf.OperatorSettings, logger: Any, **kwargs: Any) -> Any:
    """kopf's own session, as kopf builds it from the kubernetes client's configuration,
    plus the leader fence on every write and this replica's User-Agent."""
    import aiohttp

    from rankexp.runtime import leader, telemetry

    info = kopf.login_via_client(settings=settings, logger=logger, **kwargs)
    if info is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers={**info.as_http_headers(), "User-Agent": user_agent()},
        trust_env=info.trust_env,
        middlewares=(
            leader.aiohttp_fence(
                leader.process_fence(), telemetry.process_metrics().counter_for("kopf")
            ),
        ),
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )


def _post(body: Any, events: list[Event]) -> None:
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


# The children, kept in memory by one watch per kind (rankexp.runtime.childcache): the handlers
# and timers read them from here instead of listing them on every tick.
CHILDREN = {LABEL_MANAGED_BY: MANAGER}


@kopf.index("apps", "v1", "deployments", labels=CHILDREN)
def rankexp_deployments(body: kopf.Body, **_: Any) -> Any:
    return childcache.entry(body)


@kopf.index("", "v1", "services", labels=CHILDREN)
def rankexp_services(body: kopf.Body, **_: Any) -> Any:
    return childcache.entry(body)


@kopf.index("", "v1", "configmaps", labels=CHILDREN)
def rankexp_configmaps(body: kopf.Body, **_: Any) -> Any:
    return childcache.entry(body)


def _children(memo: kopf.Memo, kwargs: dict[str, Any]) -> childcache.CachedChildStore:
    """The store of one handler call: children from the indexes kopf passed it."""
    view: childcache.CachedChildStore = memo.children.view(kwargs)
    return view


@kopf.on.resume(*EXPERIMENTS)
@kopf.on.create(*EXPERIMENTS)
@kopf.on.update(*EXPERIMENTS)
def reconcile_experiment(
    body: kopf.Body,
    memo: kopf.Memo,
    retry: int,
    **kwargs: Any,
) -> None:
    from kubernetes.client.exceptions import ApiException

    from rankexp.runtime.telemetry import process_metrics

    meta = body["metadata"]
    with memo.locks.hold(meta.get("uid", "")), process_metrics().reconcile.time():
        try:
            fresh = memo.store.get_experiment(meta["namespace"], meta["name"])
            if fresh is None:
                return  # deleted meanwhile
            try:
                outcome = reconcile.reconcile(_children(memo, kwargs), fresh)
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


@kopf.on.event(*EXPERIMENTS)
def export_evidence(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Every status the watch sees becomes the Experiment's ``rankexp_analysis_*`` series
    on /metrics (rankexp.prom.evidence); a deleted Experiment's end."""
    from rankexp.runtime.telemetry import process_metrics

    evidence = process_metrics().evidence
    if type == "DELETED":
        evidence.forget(body["metadata"]["namespace"], body["metadata"]["name"])
    else:
        evidence.observe(body)


@kopf.timer(*EXPERIMENTS, interval=READINESS_INTERVAL, initial_delay=READINESS_INTERVAL)
def experiment_tick(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Readiness every tick; the analysis loop when its interval is due."""
    from kubernetes.client.exceptions import ApiException

    from rankexp.prom.metrics import ExperimentMetrics
    from rankexp.runtime.telemetry import process_metrics

    settings: Settings = memo.loop
    url = settings.prometheus_url or ""

    def reader() -> MetricsReader:
        return ExperimentMetrics(url, timeout=settings.timeout, retries=0)

    metrics = process_metrics()
    meta = body["metadata"]
    started = time.perf_counter()
    store = _children(memo, kwargs)
    with memo.locks.hold(meta.get("uid", "")):
        if not loop.needs_tick(store, body, settings=settings):
            # nothing to do on the watch's copy: no read of the Experiment, no write
            metrics.tick.labels(analyzed="false").observe(time.perf_counter() - started)
            return
        try:
            fresh = memo.store.get_experiment(meta["namespace"], meta["name"])
            if fresh is None:
                return
            outcome = loop.tick(store, fresh, settings=settings, reader=reader)
            _announce(memo.store, fresh, outcome.action)
            if outcome.status:
                memo.store.patch_status(meta["namespace"], meta["name"], outcome.status)
        except ApiException as exc:
            # The next tick tries again; an action half done is finished from the
            # routing ConfigMap's record then.
            log.warning("tick of %s/%s failed: %s", meta["namespace"], meta["name"], exc)
            return
    analyzed = "true" if outcome.analyzed else "false"
    metrics.tick.labels(analyzed=analyzed).observe(time.perf_counter() - started)
    if outcome.lag is not None:
        metrics.lag.observe(max(outcome.lag, 0.0))
    _post(body, outcome.events)


@kopf.timer(*ALERTPOLICIES, interval=READINESS_INTERVAL, initial_delay=READINESS_INTERVAL)
def alertpolicy_tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Evaluate the policy's rules when its interval is due; notify its receivers."""
    from datetime import UTC, datetime

    from kubernetes.client.exceptions import ApiException
    from pydantic import ValidationError

    from rankexp.api import AlertPolicySpec
    from rankexp.prom.metrics import ExperimentMetrics

    settings: Settings = memo.loop
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
                generation = fresh["metadata"].get("generation")
                if not alertloop.due(status, spec, now, settings.interval_scale, generation):
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
