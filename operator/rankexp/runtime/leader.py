"""One writer at a time: leader election on a ``coordination.k8s.io/v1`` Lease, and a fence.

Several operator replicas may run (the chart's ``operator.replicas``); each one takes the
Lease before kopf starts, so only the holder watches and writes, and the others wait to
take over. The election follows client-go's ``leaderelection`` package:

* ``lease_duration``: a candidate takes the Lease over only after it has seen the Lease
  unchanged for this long, measured on its own monotonic clock from the moment it saw the
  last change (never by comparing the holder's timestamps with its own wall clock);
* ``renew_deadline``: the holder renews every ``retry_period``; when no renewal succeeded
  within ``renew_deadline`` it has lost leadership;
* ``retry_period``: how often candidates try to acquire and the holder renews.

client-go's elector tells the holder it lost leadership, but nothing stops a paused or
partitioned holder from writing on when it wakes up. Here every write is fenced: the
:class:`Fence` is open only until ``renew_deadline`` after the *start* of the last
successful renewal, by the monotonic clock, which keeps running while a process is
stopped. Since ``renew_deadline < lease_duration`` and a candidate waits
``lease_duration`` from *after* that renewal reached the API server, the fence of the old
holder has closed before a new holder can exist. :class:`FencedApiClient` (the operator's
kubernetes client) and :func:`aiohttp_fence` (kopf's own HTTP session) check the fence
right before every request that is not a read, and refuse it with :class:`NotLeader`.
A holder that finds its fence closed exits (as client-go's users do on ``OnStoppedLeading``);
its pod restarts and becomes a candidate again. Lease writes themselves are not fenced.

On a graceful stop the holder releases the Lease (an empty holder), so the next replica
takes over at once instead of after ``lease_duration``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("rankexp.runtime.leader")

#: HTTP methods that only read; every other method is a write and is fenced.
READS = frozenset({"GET", "HEAD", "OPTIONS"})
LEASE_NAME = "rankexp-operator"


class NotLeader(RuntimeError):
    """A write refused because this replica does not hold the Lease (its fence closed)."""


@dataclass(frozen=True)
class LeaseConfig:
    """client-go's LeaderElectionConfig: names and the three durations (seconds)."""

    namespace: str
    identity: str
    name: str = LEASE_NAME
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > 0:
            raise ValueError(
                f"need lease duration > renew deadline > 0, got {self.lease_duration} "
                f"and {self.renew_deadline}"
            )
        if not 0 < self.retry_period < self.renew_deadline:
            raise ValueError(
                f"need 0 < retry period < renew deadline, got {self.retry_period} "
                f"and {self.renew_deadline}"
            )


def default_identity() -> str:
    """``$POD_NAME`` (the chart sets it from the downward API), else host name and a UUID,
    as client-go's callers do: unique per process, readable in the Lease and audit log."""
    pod = os.environ.get("POD_NAME")
    return pod or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class Fence:
    """Open while this process may write: until ``renew_deadline`` after the start of
    the last successful renewal, on the monotonic clock. Always open when no election
    runs (a single replica without ``--leader-elect``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: float | None = None  # None: no election, always open
        self._lock = threading.Lock()

    def extend(self, until: float) -> None:
        with self._lock:
            self._until = until if self._until is None else max(self._until, until)

    def close(self) -> None:
        """Closed for good (until :meth:`extend`): writes are refused."""
        with self._lock:
            self._until = -math.inf

    def ok(self) -> bool:
        with self._lock:
            until = self._until
        return until is None or self._clock() < until

    def check(self, what: str = "write") -> None:
        if not self.ok():
            raise NotLeader(f"{what} refused: this replica does not hold the leader Lease")


#: The fence of this process; the election (``python -m rankexp --leader-elect``) sets it
#: before kopf starts, and every API client of the process checks it.
_PROCESS_FENCE = Fence()


def process_fence() -> Fence:
    return _PROCESS_FENCE


# ------------------------------------------------------------------------- the Lease


class LeaseClient(Protocol):
    """Get, create and replace one Lease as a dict (the API server's JSON)."""

    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def replace(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


class Conflict(Exception):
    """The Lease changed (409) or already exists: somebody else wrote first."""


def _micro_time(now: datetime) -> str:
    """A MicroTime as the API server writes it."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLeaseClient:
    """:class:`LeaseClient` on the kubernetes client (unfenced: it keeps the fence open)."""

    def __init__(self, api_client: Any) -> None:
        self._api = client.CoordinationV1Api(api_client)
        self._client = api_client

    def _dict(self, obj: Any) -> dict[str, Any]:
        data: dict[str, Any] = self._client.sanitize_for_serialization(obj)
        return data

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._dict(self._api.read_namespaced_lease(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._dict(self._api.create_namespaced_lease(namespace, cast(Any, dict(body))))
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            raise

    def replace(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._dict(
                self._api.replace_namespaced_lease(name, namespace, cast(Any, dict(body)))
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            raise


def _record(lease: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """Who holds the Lease, since when, and its version: any change (a renewal included)
    restarts the observers' lease_duration countdown."""
    spec = (lease or {}).get("spec") or {}
    return (
        spec.get("holderIdentity"),
        ((lease or {}).get("metadata") or {}).get("resourceVersion"),
        spec.get("leaseDurationSeconds"),
        spec.get("acquireTime"),
        spec.get("renewTime"),
        spec.get("leaseTransitions"),
    )


class Elector:
    """client-go's LeaderElector on one Lease, with the fence (see the module docstring)."""

    def __init__(
        self,
        config: LeaseConfig,
        client: LeaseClient,
        *,
        fence: Fence | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_transition: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.fence = fence if fence is not None else Fence(clock)
        self.fence.close()  # closed until this replica holds the Lease
        self._clock = clock
        self._wall = wall
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = -math.inf
        self._observed_holder: str | None = None
        self._lease: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._on_transition = on_transition
        self.leading = False

    @property
    def holder(self) -> str | None:
        """The holder this replica saw last."""
        return self._observed_holder

    def _observe(self, lease: Mapping[str, Any] | None, now: float) -> None:
        record = _record(lease)
        if record != self._observed:
            self._observed = record
            self._observed_at = now
            self._observed_holder = record[0] or None

    def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew). True when this replica holds the
        Lease afterwards; the fence is extended from the attempt's start."""
        started = self._clock()
        cfg = self.config
        wall = _micro_time(self._wall())
        duration = max(1, math.ceil(cfg.lease_duration))
        try:
            lease = self.client.get(cfg.namespace, cfg.name)
        except Exception as exc:  # the API server is unreachable: no renewal this time
            log.warning("reading Lease %s/%s failed: %s", cfg.namespace, cfg.name, exc)
            return False
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": {
                    "holderIdentity": cfg.identity,
                    "leaseDurationSeconds": duration,
                    "acquireTime": wall,
                    "renewTime": wall,
                    "leaseTransitions": 0,
                },
            }
            try:
                created = self.client.create(cfg.namespace, body)
            except Exception as exc:
                log.info("creating Lease %s/%s failed: %s", cfg.namespace, cfg.name, exc)
                return False
            return self._won(created, started)

        self._observe(lease, started)
        spec = dict(lease.get("spec") or {})
        holder = spec.get("holderIdentity") or None
        mine = holder == cfg.identity
        if holder and not mine and started < self._observed_at + cfg.lease_duration:
            return False  # somebody else holds a Lease that is still valid
        # Ours (renewing, or this pod's container restarted: the process that held it
        # is gone) keeps its term; anybody else's expired Lease starts a new one.
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec = {
            "holderIdentity": cfg.identity,
            "leaseDurationSeconds": duration,
            "acquireTime": spec.get("acquireTime") if mine else wall,
            "renewTime": wall,
            "leaseTransitions": transitions if mine else transitions + 1,
        }
        body = {**lease, "spec": new_spec}
        try:
            replaced = self.client.replace(cfg.namespace, cfg.name, body)
        except Exception as exc:
            log.info("updating Lease %s/%s failed: %s", cfg.namespace, cfg.name, exc)
            return False
        return self._won(replaced, started)

    def _won(self, lease: dict[str, Any], started: float) -> bool:
        self._lease = lease
        self._observed = _record(lease)
        self._observed_at = started
        self._observed_holder = self.config.identity
        self.fence.extend(started + self.config.renew_deadline)
        if not self.leading:
            self.leading = True
            spec = lease.get("spec") or {}
            log.info(
                "became the leader: Lease %s/%s, identity %s, term %s",
                self.config.namespace,
                self.config.name,
                self.config.identity,
                spec.get("leaseTransitions"),
            )
            if self._on_transition is not None:
                self._on_transition(True)
        return True

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Block until this replica holds the Lease (True) or ``stop`` is set (False).
        Attempts every ``retry_period`` with client-go's jitter (up to +120 %)."""
        stop = stop or self._stop
        announced = False
        while not stop.is_set():
            if self.try_acquire_or_renew():
                return True
            if not announced:
                log.info(
                    "waiting for Lease %s/%s, held by %s", self.config.namespace,
                    self.config.name, self.holder,
                )  # fmt: skip
                announced = True
            stop.wait(self.config.retry_period * (1 + 1.2 * random.random()))
        return False

    def renew_forever(self, on_lost: Callable[[], None]) -> None:
        """Renew every ``retry_period`` until stopped; when the fence closes without a
        renewal, leadership is lost: close the fence for good and call ``on_lost``."""
        while not self._stop.wait(self.config.retry_period):
            if self.try_acquire_or_renew():
                continue
            if not self.fence.ok():
                self.fence.close()
                self.leading = False
                log.error(
                    "leadership lost: no renewal of Lease %s/%s within %.1f s (now held by "
                    "%s); every write is refused from now on",
                    self.config.namespace,
                    self.config.name,
                    self.config.renew_deadline,
                    self.holder,
                )
                if self._on_transition is not None:
                    self._on_transition(False)
                on_lost()
                return

    def start_renewing(self, on_lost: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(
            target=self.renew_forever, args=(on_lost,), name="lease-renewal", daemon=True
        )
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def release(self) -> bool:
        """Give the Lease up (an empty holder) while still holding it, so a candidate
        takes over at once. False when it was not held (nothing written)."""
        self._stop.set()
        if not self.leading or not self.fence.ok() or self._lease is None:
            return False
        spec = dict(self._lease.get("spec") or {})
        wall = _micro_time(self._wall())
        spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=wall)
        try:
            self.client.replace(
                self.config.namespace, self.config.name, {**self._lease, "spec": spec}
            )
        except Exception as exc:
            log.warning("releasing the Lease failed: %s", exc)
            return False
        finally:
            self.fence.close()
            self.leading = False
        log.info("released Lease %s/%s", self.config.namespace, self.config.name)
        return True


# ------------------------------------------------------------------- fenced clients


def fenced_api_client(
    fence: Fence,
    *,
    user_agent: str | None = None,
    on_response: Callable[[str, int], None] | None = None,
) -> FencedApiClient:
    """A kubernetes ``ApiClient`` (in-cluster service account, else KUBECONFIG) whose
    every non-read request checks ``fence`` right before it is sent; ``on_response``
    gets (method, HTTP status) of every request, 0 when none came back."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    api = FencedApiClient(configuration, fence=fence, on_response=on_response)
    if user_agent:
        api.user_agent = user_agent
    return api


class FencedApiClient(client.ApiClient):
    """The kubernetes ApiClient with the fence checked before every write."""

    def __init__(
        self,
        configuration: Any = None,
        *,
        fence: Fence,
        on_response: Callable[[str, int], None] | None = None,
    ) -> None:
        super().__init__(configuration)
        self._fence = fence
        self._on_response = on_response

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() not in READS:
            self._fence.check(f"{method} {url.split('?', 1)[0]}")
        status = 0
        try:
            response = super().call_api(method, url, *args, **kwargs)
            status = int(getattr(response, "status", 0) or 0)
            return response
        except ApiException as exc:
            status = int(exc.status or 0)
            raise
        finally:
            if self._on_response is not None:
                self._on_response(method.upper(), status)


def aiohttp_fence(
    fence: Fence, on_response: Callable[[str, int], None] | None = None
) -> Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]:
    """An aiohttp client middleware for kopf's own session: the same check before every
    non-read request (kopf's finalizers, progress annotations, Events)."""

    async def middleware(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        method = str(request.method).upper()
        if method not in READS:
            fence.check(f"{method} {request.url.path}")
        status = 0
        try:
            response = await handler(request)
            status = int(response.status)
            return response
        finally:
            if on_response is not None:
                on_response(method, status)

    return middleware
