"""The experiment page's server: a read-only web page of every Experiment and its evidence.

``rankexp dashboard`` (or ``kubectl rankexp dashboard``, ``python -m rankexp.page.app``)
serves, on 127.0.0.1:8765 by default:

* ``/``: the Experiments (namespace, name, phase, traffic, winner, lift, p);
* ``/experiments/{namespace}/{name}``: the current decision, the lift and its confidence
  interval at every analysis (``?metric=`` another compared metric), the traffic over
  time, the variants' counts, sample-ratio, drift and guardrail health, and the decision
  log (last action, traffic periods, decision changes, the Experiment's Events);
* ``/healthz``.

It reads the API server (with the caller's kubeconfig, or in-cluster) and Prometheus
(the operator's ``rankexp_analysis_*`` series, see :mod:`rankexp.prom.evidence`) and
writes nothing. Without Prometheus the page still renders from status and says so.

This module is the I/O: :class:`Reader` reads, :func:`create_app` serves what
:mod:`.render` makes of it (no script, nothing fetched from elsewhere), :func:`run` and
:func:`add_arguments` are the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import web

from rankexp.page.formats import epoch
from rankexp.page.render import render_experiment, render_index, render_message
from rankexp.page.views import Evidence
from rankexp.prom.evidence import TRAFFIC, HistoryUnavailable, Point, fetch_history

GROUP, VERSION, PLURAL = "rankexp.io", "v1alpha1", "experiments"
#: What ``rankexp dashboard --help`` says.
DESCRIPTION = (
    "A read-only web page of the Experiments: phase, traffic, winner, lift and p; per "
    "Experiment the lift and its CI at every analysis, the traffic over time, sample-ratio "
    "and drift health and the decision log. Reads the API server (your kubeconfig) and "
    "Prometheus, writes nothing."
)
HEADERS = {
    # nothing but this page's own inline style and data: icons; no script at all
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# ------------------------------------------------------------------------- reading


class ClusterError(Exception):
    """The API server could not answer (status: its HTTP code, 0 without an answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Source(Protocol):
    """What the page reads; :class:`Reader` is the real one."""

    prometheus_url: str

    def list_experiments(self, namespace: str | None) -> list[dict[str, Any]]: ...
    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def events(self, namespace: str, name: str) -> list[dict[str, Any]]: ...
    def history(self, namespace: str, name: str, seconds: float) -> list[Point]: ...
    def weights(
        self, namespace: str, name: str, seconds: float
    ) -> dict[str, list[tuple[float, float]]]: ...


class Reader:
    """The API server (a kubernetes ``ApiClient``) and Prometheus' HTTP API; read only."""

    def __init__(self, api_client: Any, prometheus_url: str, timeout: float = 10.0) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.prometheus_url = prometheus_url
        self.timeout = timeout

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = method(
                *args, _preload_content=False, _request_timeout=self.timeout, **kwargs
            )
            return json.loads(response.data)
        except ApiException as exc:
            try:
                message = json.loads(exc.body or "{}").get("message") or exc.reason
            except (TypeError, ValueError):
                message = exc.reason
            raise ClusterError(int(exc.status or 0), str(message)) from None
        except (HTTPError, OSError, ValueError) as exc:
            raise ClusterError(0, f"no answer from the API server: {exc}") from None

    def list_experiments(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            found = self._call(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        else:
            found = self._call(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
            )
        return list(found.get("items") or [])

    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self._call(
                self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name},involvedObject.kind=Experiment"
        found = self._call(self.core.list_namespaced_event, namespace, field_selector=selector)
        return list(found.get("items") or [])

    def history(self, namespace: str, name: str, seconds: float) -> list[Point]:
        return fetch_history(self.prometheus_url, namespace, name, seconds, timeout=self.timeout)

    def weights(
        self, namespace: str, name: str, seconds: float
    ) -> dict[str, list[tuple[float, float]]]:
        """The scraped weights over the last ``seconds``, about 240 points per variant (a
        subquery, so an instant query as the history's)."""
        step = max(math.ceil(seconds / 240), 1)
        ns, exp = json.dumps(namespace), json.dumps(name)
        query = f"{TRAFFIC}{{namespace={ns},experiment={exp}}}[{math.ceil(seconds)}s:{step}s]"
        url = f"{self.prometheus_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode(
            {"query": query}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            exc.close()
            raise HistoryUnavailable(f"Prometheus answered {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise HistoryUnavailable(f"no Prometheus at {self.prometheus_url}: {exc}") from None
        out: dict[str, list[tuple[float, float]]] = {}
        for series in (answer.get("data") or {}).get("result") or []:
            variant = str((series.get("metric") or {}).get("variant"))
            out[variant] = [(float(t), float(v)) for t, v in series.get("values") or []]
        return out


# ------------------------------------------------------------------------- the server


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


def create_app(source: Source, scope: str | None, refresh: int = 0) -> web.Application:
    """The page server over ``source``; ``scope`` is the one namespace shown (None: all)."""

    async def index(_request: web.Request) -> web.Response:
        try:
            items = await asyncio.to_thread(source.list_experiments, scope)
        except ClusterError as exc:
            return _html(
                render_message("The API server said no", str(exc)),
                502 if exc.status in (0, 500) else exc.status,
            )
        return _html(render_index(items, scope, refresh))

    async def experiment(request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        missing = render_message("Not found", f"No Experiment {ns}/{name}.")
        if scope is not None and ns != scope:
            return _html(missing, 404)
        try:
            obj = await asyncio.to_thread(source.get_experiment, ns, name)
        except ClusterError as exc:
            return _html(
                render_message("The API server said no", str(exc)),
                502 if exc.status in (0, 500) else exc.status,
            )
        if obj is None:
            return _html(missing, 404)
        now = time.time()
        started = epoch((obj.get("status") or {}).get("startedAt"))
        evidence = Evidence(url=source.prometheus_url)

        async def read_events() -> tuple[list[dict[str, Any]], str | None]:
            try:
                return await asyncio.to_thread(source.events, ns, name), None
            except ClusterError as exc:
                return [], str(exc)

        async def read_prometheus() -> None:
            if started is None:
                return
            seconds = max(now - started, 0.0) + 120.0
            try:
                evidence.points, evidence.weights = await asyncio.gather(
                    asyncio.to_thread(source.history, ns, name, seconds),
                    asyncio.to_thread(source.weights, ns, name, seconds),
                )
            except HistoryUnavailable as exc:
                evidence.error = str(exc)

        (events, events_error), _ = await asyncio.gather(read_events(), read_prometheus())
        page = render_experiment(
            obj, events, evidence, now, request.query.get("metric"), events_error, refresh
        )
        return _html(page)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/experiments/{namespace}/{name}", experiment)
    app.router.add_get("/healthz", healthz)
    return app


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def connect(args: argparse.Namespace) -> tuple[Any, str | None]:
    """(ApiClient, namespace shown or None for all) as kubectl would pick them."""
    from kubernetes import client, config

    try:
        if args.in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api_client = client.ApiClient(configuration)
            scope = None if args.all_namespaces else args.namespace
        else:
            api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=args.kubeconfig, context=args.context
            )
            scope = args.namespace
            if scope is None and not args.all_namespaces:
                _, current = config.list_kube_config_contexts(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
                scope = (current or {}).get("context", {}).get("namespace") or "default"
            if args.all_namespaces:
                scope = None
    except (config.ConfigException, OSError, TypeError) as exc:
        what = "not in a cluster" if args.in_cluster else "no usable kubeconfig"
        raise ValueError(f"{what}: {exc}") from None
    return api_client, scope


def run(args: argparse.Namespace) -> int:
    """``rankexp dashboard``: serve until interrupted."""
    prog = getattr(args, "prog", "rankexp")
    try:
        host, port = parse_listen(args.listen)
        api_client, scope = connect(args)
    except ValueError as exc:
        sys.stderr.write(f"{prog} dashboard: {exc}\n")
        return 2
    app = create_app(Reader(api_client, args.prometheus_url), scope, args.refresh)

    async def announce(_app: web.Application) -> None:
        where = "all namespaces" if scope is None else f"namespace {scope}"
        shown = f"[{host}]" if ":" in host else host
        sys.stdout.write(
            f"{prog} dashboard: http://{shown}:{port}/ ({where}; Prometheus "
            f"{args.prometheus_url}); Ctrl-C stops it\n"
        )
        sys.stdout.flush()

    app.on_startup.append(announce)
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None)
    finally:
        api_client.close()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The page's flags: ``rankexp dashboard`` and ``python -m rankexp.page`` share them."""
    p.add_argument("-n", "--namespace", default=None, help="default: the context's namespace")
    p.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG or ~/.kube/config")
    p.add_argument("--context", default=None, help="kubeconfig context")
    p.add_argument(
        "--prometheus-url",
        default=os.environ.get("RANKEXP_PROMETHEUS_URL", "http://127.0.0.1:9090"),
        help="Prometheus that scrapes the operator (default: $RANKEXP_PROMETHEUS_URL or "
        "http://127.0.0.1:9090, e.g. after kubectl port-forward)",
    )
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("--listen", default="127.0.0.1:8765", metavar="HOST:PORT",
                   help="where to serve (default 127.0.0.1:8765)")  # fmt: skip
    p.add_argument("--in-cluster", action="store_true",
                   help="the pod's service account, not a kubeconfig (all namespaces "
                   "unless -n)")  # fmt: skip
    p.add_argument("--refresh", type=int, default=30, metavar="SECONDS",
                   help="the pages reload themselves every SECONDS (0: never)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rankexp.page ARGS`` is ``rankexp dashboard ARGS``."""
    parser = argparse.ArgumentParser(prog="rankexp dashboard", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(prog="rankexp")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
