"""`python -m rankexp [operator flags] [kopf run flags]`.

The operator's own flags come first and are also read from the environment
(``RANKEXP_PROMETHEUS_URL``, ``RANKEXP_INTERVAL_SCALE``); every other flag passes through
to ``kopf run`` (--standalone, -A/--all-namespaces, -n/--namespace, --liveness,
--verbose, ...); the handlers module is preloaded.

``--interval-scale`` multiplies every ``spec.analysis.interval`` (0.05 turns 1m into 3s):
for tests and demos, never for real experiments.

``--serve HOST:PORT`` serves ``/metrics``, ``/healthz`` and ``/leader``
(:mod:`rankexp.runtime.telemetry`) from the start; kopf's own liveness endpoint then moves to a
loopback port behind ``/healthz`` unless ``--liveness`` is given.

``--leader-elect`` takes the ``coordination.k8s.io`` Lease (:mod:`rankexp.runtime.leader`) before
kopf starts: a replica that does not get it waits, and one that loses it exits with
:data:`LOST_LEADERSHIP` so its pod restarts as a candidate.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import socket
import sys
from collections.abc import Sequence

from rankexp.runtime.handlers import (
    IDENTITY_ENV,
    INTERVAL_SCALE_ENV,
    PROMETHEUS_URL_ENV,
    WORKERS_ENV,
)

#: Exit status of a replica that lost the Lease (client-go's users exit too).
LOST_LEADERSHIP = 3
HELP = """\
python -m rankexp [operator flags] [kopf run flags]
  --prometheus-url URL    Prometheus the analysis reads ($RANKEXP_PROMETHEUS_URL)
  --interval-scale X      multiply every analysis interval (tests and demos only;
                          $RANKEXP_INTERVAL_SCALE)
  --workers N             threads for handlers and timers (16; $RANKEXP_WORKERS)
  --serve HOST:PORT       serve /metrics, /healthz and /leader
  --leader-elect          take the leader Lease before running (several replicas)
  --lease-namespace NS    the Lease's namespace ($POD_NAMESPACE)
  --lease-name NAME       the Lease's name (rankexp-operator)
  --lease-duration S      seconds a candidate waits for an unrenewed Lease (15)
  --renew-deadline S      seconds the leader may go without a renewal (10)
  --retry-period S        seconds between attempts to acquire or renew (2)
  --identity ID           this replica's name in the Lease ($POD_NAME, else host_uuid)

"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, prog="python -m rankexp")
    parser.add_argument("--prometheus-url", default=None)
    parser.add_argument("--interval-scale", type=float, default=None)
    parser.add_argument("--serve", default=None)
    parser.add_argument("--leader-elect", action="store_true")
    parser.add_argument("--lease-namespace", default=None)
    parser.add_argument("--lease-name", default=None)
    parser.add_argument("--lease-duration", type=float, default=15.0)
    parser.add_argument("--renew-deadline", type=float, default=10.0)
    parser.add_argument("--retry-period", type=float, default=2.0)
    parser.add_argument("--identity", default=None)
    return parser


def _own_flags(args: list[str]) -> list[str]:
    """Consume the operator's environment flags into the environment; return the rest."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--prometheus-url", default=None)
    parser.add_argument("--interval-scale", type=float, default=None)
    parser.add_argument("--workers", type=int, default=None)
    known, rest = parser.parse_known_args(args)
    if known.workers is not None:
        if known.workers < 1:
            parser.error("--workers must be at least 1")
        os.environ[WORKERS_ENV] = str(known.workers)
    if known.prometheus_url is not None:
        os.environ[PROMETHEUS_URL_ENV] = known.prometheus_url
    if known.interval_scale is not None:
        if not known.interval_scale > 0:
            parser.error("--interval-scale must be a positive number")
        os.environ[INTERVAL_SCALE_ENV] = repr(known.interval_scale)
    return rest


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--serve takes HOST:PORT, got {text!r}")
    return host, int(port)


#: kopf's internal liveness port is chosen at start but bound only once this replica
#: leads, maybe minutes later: from below the kernel's ephemeral range (32768-60999 by
#: default), which outgoing connections and bind(0) never take in the meantime.
LOOPBACK_PORTS = range(20000, 32000)


def _loopback_port() -> int:
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(LOOPBACK_PORTS)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:  # everything taken: any free port
        probe.bind(("127.0.0.1", 0))
        found: int = probe.getsockname()[1]
        return found


def _warm_up() -> None:
    """Import now what the handlers import on first use (the kubernetes client loads each
    API module lazily, seconds apiece): a replica that takes the Lease over then starts
    working at once instead of importing."""
    from kubernetes import client

    for api in ("AppsV1Api", "CoreV1Api", "CustomObjectsApi", "CoordinationV1Api"):
        getattr(client, api)
    import rankexp.alerting.receivers  # noqa: F401
    import rankexp.prom.metrics  # noqa: F401


def _kopf(args: list[str]) -> int:
    from kopf import cli

    try:
        cli.main.main(
            args=["run", "--module", "rankexp.runtime.handlers", *args],
            prog_name="python -m rankexp",
            standalone_mode=True,
        )
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":
        args = args[1:]
    if "--help" in args or "-h" in args:
        sys.stdout.write(HELP)
        return _kopf(args)
    try:
        args = _own_flags(args)
        known, rest = _parser().parse_known_args(args)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2

    import kopf

    from rankexp.runtime import leader, telemetry

    # kopf's log format from the start (kopf run sets the same up again, without doubling)
    kopf.configure(debug="--debug" in rest, verbose="--verbose" in rest or "-v" in rest)
    identity = known.identity or leader.default_identity()
    os.environ[IDENTITY_ENV] = identity
    metrics = telemetry.process_metrics()
    elector: leader.Elector | None = None

    kopf_liveness: str | None = None
    if known.serve and not any(a.startswith("--liveness") for a in rest):
        kopf_liveness = f"http://127.0.0.1:{_loopback_port()}/healthz"
        rest = [*rest, f"--liveness={kopf_liveness}"]

    def state() -> dict[str, object]:
        leading = elector.leading if elector is not None else True
        holder = elector.holder if elector is not None else identity
        return {"identity": identity, "leading": leading, "holder": holder}

    server = None
    if known.serve:
        host, port = _address(known.serve)
        server = telemetry.Server(
            host, port, metrics=metrics, leader=state, kopf_liveness=lambda: kopf_liveness
        ).start()

    _warm_up()
    try:
        if known.leader_elect:
            namespace = known.lease_namespace or os.environ.get("POD_NAMESPACE")
            if not namespace:
                sys.stderr.write("--leader-elect needs --lease-namespace or $POD_NAMESPACE\n")
                return 2
            try:
                config = leader.LeaseConfig(
                    namespace=namespace,
                    identity=identity,
                    name=known.lease_name or leader.LEASE_NAME,
                    lease_duration=known.lease_duration,
                    renew_deadline=known.renew_deadline,
                    retry_period=known.retry_period,
                )
            except ValueError as exc:
                sys.stderr.write(f"{exc}\n")
                return 2
            lease_api = leader.fenced_api_client(
                leader.Fence(),  # Lease writes keep the fence open: never fenced
                user_agent=f"rankexp-operator/lease ({identity})",
                on_response=metrics.counter_for("lease"),
            )
            elector = leader.Elector(
                config,
                leader.KubeLeaseClient(lease_api),
                fence=leader.process_fence(),
                on_transition=lambda leading: metrics.leader.set(1 if leading else 0),
            )
            if not elector.acquire():
                return 0

            def lost() -> None:
                logging.shutdown()
                os._exit(LOST_LEADERSHIP)

            elector.start_renewing(on_lost=lost)
        else:
            metrics.leader.set(1)
        return _kopf(rest)
    finally:
        if elector is not None:
            elector.release()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
