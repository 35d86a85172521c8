"""The operator with 100, 300 and 1,000 Experiments: tick latency, lag, memory, API load.

Everything real on 127.0.0.1: etcd + kube-apiserver (``make envtest``), Debian's
Prometheus, and the operator as ``python -m rankexp --all-namespaces --serve`` with the
chart's defaults (timer tick 10 s) and the CRD's default analysis interval (1m), unscaled.
The operator creates every Experiment's children itself (7 objects each); there is no
kubelet, so a thread here plays the Deployment controller: it marks each Deployment's
replicas ready, as ``rankexp.local.kubelet`` does, without running processes.

The series come from a generator (:class:`Series`): one HTTP target per ranker variant
and per router, scraped by Prometheus with the series contract's target labels
(``namespace``, ``experiment``), serving every series the analysis reads (5 x 64 bucket
counters, the score, feature and latency histograms, requests, exposures) as counters
that grow linearly in time: an A/A world, so no Experiment ends during the run.

Per size, after the Experiments are Running and a warm-up of one interval, for
``--minutes`` it reads the operator's own metrics (``rankexp_operator_*``, see
:mod:`rankexp.runtime.telemetry`) at the start and end of the window and prints:

* reconcile and tick latency p50/p99 (the histograms' deltas, interpolated as
  ``histogram_quantile`` does), analysis ticks separately;
* the analysis lag p50/p99: how late each analysis ran after it was due;
* operator RSS (and per Experiment, against the empty operator) and CPU (cores);
* API requests per second by the operator, and 429s: the operator's own count and the
  API server's ``apiserver_request_total{code="429"}``.

``make bench-scale`` (about 25 minutes: the intervals are real). ``--sizes 100`` for a
quick look.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from ranker.serve.metrics import FEATURE_BUCKETS, LATENCY_BUCKETS, SCORE_BUCKETS
from rankexp.api import GROUP, VERSION
from rankexp.local.binaries import ensure_binaries
from rankexp.local.cluster import LocalCluster
from rankexp.local.process import Process, free_ports
from rankexp.local.prom import LocalPrometheus

REPO = Path(__file__).resolve().parents[1]
NAMESPACES = 10
VARIANTS = ("control", "treatment")
FEATURES = ("age", "like_rate", "total_interactions")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ----------------------------------------------------------------------- the series


def _le(x: float) -> str:
    return repr(float(x)) if not math.isinf(x) else "+Inf"


class Series:
    """Generated series of the series contract, one target per ranker variant and router.

    Every counter is ``rate * seconds since the target was added``; per-bucket rates
    differ by a fixed pseudo-random factor (the same for both variants: an A/A world),
    so the analysis sees real variance across user buckets and no effect.
    """

    def __init__(self, feeds_per_second: float = 2.0) -> None:
        rng = np.random.default_rng(7)
        self.rate = feeds_per_second
        self.bucket_share = rng.dirichlet(np.full(64, 50.0))  # exposures per user bucket
        self.ctr = 0.05 * rng.uniform(0.8, 1.2, 64)
        self.targets: dict[str, tuple[float, str, list[tuple[str, float]]]] = {}
        self.dropped = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _ranker_lines(self, variant: str) -> list[tuple[str, float]]:
        """(series text, rate per second) of one ranker variant."""
        v = f'variant="{variant}"'
        impressions = self.rate * 10 * self.bucket_share  # 10 items per feed
        per_bucket = {
            "impressions": impressions,
            "clicks": impressions * self.ctr,
            "engagements": impressions * self.ctr * 0.3,
            "dwell_seconds": impressions * self.ctr * 20.0,
            "dwell_events": impressions * self.ctr,
        }
        lines: list[tuple[str, float]] = []
        for name, rates in per_bucket.items():
            for b in range(64):
                lines.append((f'ranking_{name}_total{{{v},bucket="{b}"}}', float(rates[b])))
        items = self.rate * 10

        def histogram(name: str, labels: str, bounds: Iterable[float], total: float,
                      cdf: Any) -> None:  # fmt: skip
            for bound in [*bounds, math.inf]:
                share = 1.0 if math.isinf(bound) else float(cdf(bound))
                lines.append((f'{name}_bucket{{{labels},le="{_le(bound)}"}}', total * share))
            lines.append((f"{name}_count{{{labels}}}", total))

        histogram("ranking_score", v, SCORE_BUCKETS, items, lambda x: min(x, 1.0))
        for feature in FEATURES:
            scale = {"age": 40.0, "like_rate": 0.3, "total_interactions": 80.0}[feature]
            histogram("ranking_feature_value", f'{v},feature="{feature}"', FEATURE_BUCKETS,
                      self.rate, lambda x, s=scale: 1 - math.exp(-max(x, 0) / s))  # fmt: skip
        mv = f'{v},model_version="bench"'
        histogram("ranking_latency_seconds", mv, LATENCY_BUCKETS, self.rate,
                  lambda x: 1 - math.exp(-x / 0.004))  # fmt: skip
        lines.append((f'ranking_requests_total{{{mv},endpoint="rank",code="200"}}', self.rate))
        return lines

    def _router_lines(self, experiment: str) -> list[tuple[str, float]]:
        return [
            (f'router_exposures_total{{experiment="{experiment}",variant="{v}"}}', self.rate / 2)
            for v in VARIANTS
        ]

    def add(self, namespace: str, experiment: str) -> list[tuple[list[str], dict[str, str]]]:
        """Targets for one Experiment: (targets, labels) with the contract's labels."""
        now = time.time()
        groups = []
        with self._lock:
            for part in (*VARIANTS, "router"):
                path = f"/metrics/{namespace}/{experiment}/{part}"
                lines = self._router_lines(experiment) if part == "router" else \
                    self._ranker_lines(part)  # fmt: skip
                self.targets[path] = (now, part, lines)
                labels = {"__metrics_path__": path, "namespace": namespace,
                          "experiment": experiment}  # fmt: skip
                if part != "router":
                    labels["variant"] = part
                groups.append(([f"127.0.0.1:{self.port}"], labels))
        return groups

    def render(self, path: str) -> bytes | None:
        target = self.targets.get(path)
        if target is None:
            return None
        start, _, lines = target
        elapsed = time.time() - start
        return "".join(f"{s} {r * elapsed:.3f}\n" for s, r in lines).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = outer.render(self.path)
                try:
                    self.send_response(200 if body is not None else 404)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(body or b"")))
                    self.end_headers()
                    self.wfile.write(body or b"")
                except OSError:
                    outer.dropped += 1  # Prometheus gave up on this scrape (timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ the cluster side


def experiment(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {"image": "rankexp/ranker:bench"},
            "variants": [
                {"name": v, "model": {"uri": "file:///models/v1"}, "weight": 50} for v in VARIANTS
            ],
            "control": "control",
            # the CRD's defaults: interval 1m, sequential, maxDuration 24h
            "analysis": {"minSamplesPerVariant": 100},
        },
    }


class ReadyMarker:
    """Plays the Deployment controller: every rankexp Deployment's replicas are ready at
    its current generation (``rankexp.local.kubelet`` does the same, with processes)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.apps = client.AppsV1Api(api_client)
        self.stop_flag = threading.Event()
        self.marked = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_flag.wait(2.0):
            try:
                self.mark()
            except Exception as exc:  # the bench goes on; the next pass retries
                log(f"ready marker: {exc}")

    def mark(self) -> None:
        items = self.apps.list_deployment_for_all_namespaces(
            label_selector="app.kubernetes.io/managed-by=rankexp-operator"
        ).items
        todo = []
        for d in items:
            want = d.spec.replicas or 0
            status = d.status
            if (
                (status.observed_generation or 0) >= d.metadata.generation
                and (status.ready_replicas or 0) == want
                and (status.updated_replicas or 0) == want
            ):
                continue
            todo.append(d)

        def patch(d: Any) -> None:
            want = d.spec.replicas or 0
            body = {"status": {"observedGeneration": d.metadata.generation, "replicas": want,
                               "updatedReplicas": want, "readyReplicas": want,
                               "availableReplicas": want}}  # fmt: skip
            self.apps.patch_namespaced_deployment_status(
                d.metadata.name, d.metadata.namespace, body
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(patch, todo))
        self.marked += len(todo)

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(10)


# ------------------------------------------------------------------ the measurements


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A Prometheus text exposition as {name: [(labels, value)]}."""
    with OPENER.open(url, timeout=30) as response:
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    pattern = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)")
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = pattern.match(line)
        if m is None:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(4))))
    return out


def total(snap: Mapping[str, list[tuple[dict[str, str], float]]], name: str,
          **match: str) -> float:  # fmt: skip
    return sum(v for labels, v in snap.get(name, []) if all(labels.get(k) == w
               for k, w in match.items()))  # fmt: skip


def buckets(snap: Mapping[str, list[tuple[dict[str, str], float]]], name: str,
            **match: str) -> dict[float, float]:  # fmt: skip
    out: dict[float, float] = {}
    for labels, value in snap.get(name + "_bucket", []):
        if all(labels.get(k) == w for k, w in match.items()):
            le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            out[le] = out.get(le, 0.0) + value
    return out


def quantile(q: float, before: Mapping[float, float], after: Mapping[float, float]) -> float:
    """``histogram_quantile`` over the increase between two snapshots."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return math.nan
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, cum in zip(bounds, counts, strict=True):
        if cum >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cum - below, 1e-12)
        lower, below = bound, cum
    return bounds[-2] if len(bounds) > 1 else math.nan


@dataclass
class Row:
    size: int
    figures: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (clock ticks -> seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")


def measure(
    operator_url: str, apiserver_metrics: Any, seconds: float, size: int,
    pids: Mapping[str, int],
) -> Row:  # fmt: skip
    """Figures over the next ``seconds``; reconciles over the operator's whole life (its
    start-up resumes every Experiment: the burst a restart or failover costs). ``pids``:
    the processes whose CPU use is shown beside the operator's (the machine is shared)."""
    t0 = time.monotonic()
    a0, k0 = scrape(operator_url), apiserver_metrics()
    c0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    a1, k1 = scrape(operator_url), apiserver_metrics()
    window = time.monotonic() - t0
    c1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    row = Row(size)
    f = row.figures
    row.cpu = {name: (c1[name] - c0[name]) / window for name in pids}
    for q in (0.5, 0.99):
        tag = "p50" if q == 0.5 else "p99"
        f[f"reconcile_{tag}_ms"] = 1000 * quantile(
            q, {}, buckets(a1, "rankexp_operator_reconcile_duration_seconds"))  # fmt: skip
        for analyzed in ("true", "false"):
            f[f"tick_{analyzed}_{tag}_ms"] = 1000 * quantile(
                q,
                buckets(a0, "rankexp_operator_tick_duration_seconds", analyzed=analyzed),
                buckets(a1, "rankexp_operator_tick_duration_seconds", analyzed=analyzed),
            )
        f[f"lag_{tag}_s"] = quantile(
            q, buckets(a0, "rankexp_operator_analysis_lag_seconds"),
            buckets(a1, "rankexp_operator_analysis_lag_seconds"))  # fmt: skip
    f["analyses_per_min"] = (
        60
        * (
            total(a1, "rankexp_operator_tick_duration_seconds_count", analyzed="true")
            - total(a0, "rankexp_operator_tick_duration_seconds_count", analyzed="true")
        )
        / window
    )
    f["ticks_per_s"] = (
        total(a1, "rankexp_operator_tick_duration_seconds_count")
        - total(a0, "rankexp_operator_tick_duration_seconds_count")
    ) / window
    f["rss_mib"] = total(a1, "process_resident_memory_bytes") / 2**20
    f["cpu_cores"] = (total(a1, "process_cpu_seconds_total")
                      - total(a0, "process_cpu_seconds_total")) / window  # fmt: skip
    f["api_rps"] = (
        total(a1, "rankexp_operator_api_requests_total")
        - total(a0, "rankexp_operator_api_requests_total")
    ) / window
    # in the window; and the operator's since it started (a start-up 429 shows there)
    f["operator_429"] = total(a1, "rankexp_operator_api_requests_total", code="429") - total(
        a0, "rankexp_operator_api_requests_total", code="429"
    )
    f["operator_429_total"] = total(a1, "rankexp_operator_api_requests_total", code="429")
    f["apiserver_429"] = total(k1, "apiserver_request_total", code="429") - total(
        k0, "apiserver_request_total", code="429"
    )
    return row


# --------------------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,300,1000")
    parser.add_argument("--minutes", type=float, default=3.0, help="measured window per size")
    parser.add_argument("--tick", default="10", help="RANKEXP_READINESS_INTERVAL (chart: 10)")
    parser.add_argument("--scrape", default="30s", help="Prometheus scrape interval")
    parser.add_argument("--operator-args", default="", help="more `python -m rankexp` flags")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="rankexp-bench-scale-"))
    series = Series()
    rows: list[Row] = []
    baseline_rss = math.nan
    # API Priority and Fairness on, as in every real cluster: its queues are where an
    # operator that asks too much gets its 429s
    apf = ["--enable-priority-and-fairness=true"]
    try:
        with (
            LocalCluster(ensure_binaries(), extra_apiserver_args=apf) as cluster,
            LocalPrometheus(
                jobs=("bench",), scrape_interval=args.scrape, workdir=workdir / "prom"
            ) as prom,
        ):
            from kubernetes import config

            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
            cluster.kubectl("apply", "-f", str(REPO / "crds"))
            cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                            "crd/experiments.rankexp.io")  # fmt: skip
            for i in range(NAMESPACES):
                cluster.kubectl("create", "namespace", f"bench-{i}")
            # the custom resources' watch caches are ready before the operator starts
            cluster.kubectl("get", "experiments,alertpolicies", "-A")
            marker = ReadyMarker(api)

            def apiserver_metrics() -> dict[str, list[tuple[dict[str, str], float]]]:
                text = cluster.kubectl("get", "--raw", "/metrics").stdout
                path = workdir / "apiserver.metrics"
                path.write_text(text)
                return scrape(path.as_uri())

            groups: list[tuple[list[str], dict[str, str]]] = []
            created = 0
            for size in sizes:
                log(f"size {size}: creating Experiments {created}..{size - 1}")
                docs = []
                for i in range(created, size):
                    ns = f"bench-{i % NAMESPACES}"
                    docs.append(experiment(f"exp-{i:04d}", ns))
                    groups.extend(series.add(ns, f"exp-{i:04d}"))
                prom.set_owned_targets("bench", "bench", groups)
                for start in range(0, len(docs), 100):
                    cluster.kubectl("apply", "-f", "-",
                                    input="\n---\n".join(json.dumps(d) for d in
                                                         docs[start:start + 100]))  # fmt: skip
                created = size

                (port,) = free_ports(1)
                env = {
                    **os.environ,
                    "KUBECONFIG": str(cluster.kubeconfig),
                    "RANKEXP_READINESS_INTERVAL": args.tick,
                    "PYTHONUNBUFFERED": "1",
                }
                operator = Process(
                    f"operator-{size}",
                    [sys.executable, "-m", "rankexp", "--standalone", "--all-namespaces",
                     "--prometheus-url", prom.url, f"--serve=127.0.0.1:{port}",
                     *args.operator_args.split()],
                    env=env, cwd=REPO, log_path=workdir / f"operator-{size}.log",
                )  # fmt: skip
                operator.start()
                url = f"http://127.0.0.1:{port}/metrics"
                try:
                    running = wait_running(api, size, operator)
                    log(f"size {size}: {running} Running; warming up one interval (60 s)")
                    time.sleep(60)
                    log(f"size {size}: measuring {args.minutes:g} min")
                    pids = {p.name: p.pid for p in [*cluster.processes, prom.process]
                            if p is not None and p.pid is not None}  # fmt: skip
                    pids["bench (series, ready marker)"] = os.getpid()
                    row = measure(url, apiserver_metrics, args.minutes * 60, size, pids)
                    if math.isnan(baseline_rss):
                        baseline_rss = row.figures["rss_mib"]
                    rows.append(row)
                    print_rows(rows)
                finally:
                    operator.stop()
            marker.stop()
    finally:
        series.stop()
        if args.keep:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_rows(rows, final=True)
    return 0


def wait_running(api: Any, size: int, operator: Process, timeout: float = 1800) -> int:
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    while True:
        operator.ensure_running()
        items = custom.list_cluster_custom_object(GROUP, VERSION, "experiments")["items"]
        running = sum((i.get("status") or {}).get("phase") == "Running" for i in items)
        if running >= size:
            return running
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {running}/{size} Running after {timeout:.0f} s")
        time.sleep(5)


def print_rows(rows: list[Row], final: bool = False) -> None:
    if not rows:
        return
    head = (
        "Experiments",
        "reconcile p50/p99 ms",
        "tick p50/p99 ms",
        "analysis tick p50/p99 ms",
        "lag p50/p99 s",
        "analyses/min",
        "RSS MiB",
        "CPU cores",
        "API req/s",
        "429s",
    )
    print("\n" + ("Result" if final else "So far") + " (interval 1m, tick 10 s):")
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    for row in rows:
        f = row.figures
        print(
            f"| {row.size} | {f['reconcile_p50_ms']:.0f} / {f['reconcile_p99_ms']:.0f} "
            f"| {f['tick_false_p50_ms']:.1f} / {f['tick_false_p99_ms']:.1f} "
            f"| {f['tick_true_p50_ms']:.0f} / {f['tick_true_p99_ms']:.0f} "
            f"| {f['lag_p50_s']:.1f} / {f['lag_p99_s']:.1f} | {f['analyses_per_min']:.0f} "
            f"| {f['rss_mib']:.0f} | {f['cpu_cores']:.2f} | {f['api_rps']:.0f} "
            f"| {f['operator_429']:.0f} / {f['apiserver_429']:.0f} "
            f"({f['operator_429_total']:.0f} since start) |"
        )
    for row in rows:
        shares = ", ".join(f"{name} {cores:.2f}" for name, cores in row.cpu.items())
        print(f"CPU cores beside the operator at {row.size}: {shares}")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        per = (b.figures["rss_mib"] - a.figures["rss_mib"]) / (b.size - a.size)
        print(f"RSS per Experiment ({a.size} -> {b.size}): {per * 1024:.0f} KiB")


if __name__ == "__main__":
    raise SystemExit(main())
