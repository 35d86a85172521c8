"""The Grafana dashboard and the Prometheus alert rules, checked against live data.

Real ranker processes (control on model v1, treatment on model v2) behind the
real router get steady traffic while two real Prometheus servers scrape them
every second: the session ``prometheus`` (no rules) answers every dashboard and
rule expression, and a second one loaded with the rules file shows the rules
evaluating with health "ok".

Every dashboard expression, with Grafana's variables substituted, must parse
and return at least one finite sample; so must each alert rule's value (the
expression with its final threshold comparison stripped). The thresholded rule
expressions must parse; they need not fire.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from rankexp.local.process import Process, free_ports, wait_for
from rankexp.local.prom import LocalPrometheus

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "charts/rankexp/dashboards/ranking.json"
RULES = REPO / "charts/rankexp/rules/ranking-alerts.yaml"

EXPERIMENT = "obs-check"
NAMESPACE = "rankexp-obs"
TARGET_LABELS = {"experiment": EXPERIMENT, "namespace": NAMESPACE}

# Grafana's variables as a dashboard query sees them: namespace "All" (.*),
# the experiment these processes are labelled with, short windows for 1 s scrapes.
GRAFANA_VARS = {
    "namespace": ".*",
    "experiment": EXPERIMENT,
    "control": "control",
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "5m",
}

# Panels left out of the live data check (title -> reason). Empty: the router
# runs here, so its panels are checked like every other one.
EXCLUDED_PANELS: dict[str, str] = {}

DEFAULT_ALERTS = {
    # name: (severity, comparison, threshold) from DESIGN.md "AlertPolicy"
    "high_latency": ("warning", ">", 0.1),
    "high_error_rate": ("critical", ">", 0.01),
    "low_cache_hit": ("warning", "<", 0.8),
    "model_drift": ("warning", ">", None),
}

METRIC_RE = re.compile(
    r"\b(ranking_[a-z_]+|model_auc|model_ndcg|router_[a-z_]+|rankexp_[a-z_]+)\b(\{[^}]*\})?"
)
THRESHOLD_RE = re.compile(
    r"\s*(?P<value>.*\S)\s*(?P<op>[<>]=?|==|!=)\s*(?P<threshold>[-+]?[0-9.]+(?:e[-+]?\d+)?)\s*",
    re.DOTALL,
)
VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


# ----------------------------------------------------------------- the files
def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # rows (collapsed or not)


@dataclass(frozen=True)
class Target:
    panel: str
    ref: str
    expr: str
    id: str = field(compare=False)


def dashboard_targets() -> list[Target]:
    out = []
    for panel in all_panels(load_dashboard()["panels"]):
        for t in panel.get("targets", []):
            out.append(Target(panel["title"], t["refId"], t["expr"],
                              f"{panel['id']}-{t['refId']}-{panel['title']}"))  # fmt: skip
    return out


def substitute(expr: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in GRAFANA_VARS:
            raise KeyError(f"dashboard variable ${name} has no test value in GRAFANA_VARS")
        return GRAFANA_VARS[name]

    return VAR_RE.sub(repl, expr)


def split_threshold(expr: str) -> tuple[str, str, float]:
    m = THRESHOLD_RE.fullmatch(expr)
    assert m, f"rule expression does not end in `<op> <number>`:\n{expr}"
    return m.group("value"), m.group("op"), float(m.group("threshold"))


# ---------------------------------------------------------------- Prometheus
def api_query(prom: LocalPrometheus, expr: str) -> dict[str, Any]:
    """The raw /api/v1/query answer (a 4xx with an error body is returned too)."""
    url = f"{prom.url}/api/v1/query?{urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            body = json.loads(exc.read() or b"{}")
    return body


def finite_samples(body: dict[str, Any]) -> list[float]:
    data = body.get("data", {})
    if data.get("resultType") == "scalar":
        values = [float(data["result"][1])]
    else:
        values = [float(s["value"][1]) for s in data.get("result", [])]
    return [v for v in values if math.isfinite(v)]


def wait_for_data(prom: LocalPrometheus, expr: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll until ``expr`` parses and returns a finite sample; the last answer either way."""
    deadline = time.monotonic() + timeout
    while True:
        body = api_query(prom, expr)
        if body.get("status") != "success" or finite_samples(body):
            return body
        if time.monotonic() >= deadline:
            return body
        time.sleep(0.5)


# ------------------------------------------------------------------ traffic
def _post(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, json.dumps(payload).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), json.loads(exc.read() or b"null")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)


class TrafficPump:
    """Users request feeds through the router and click, like and dwell on them.

    Runs in a thread until stopped so rate windows always hold fresh samples.
    40 recurring users, so the user-embedding cache both misses and hits.
    """

    def __init__(self, router_url: str) -> None:
        self.router_url = router_url
        self.rng = random.Random(7)
        self.feeds = 0
        self.codes: dict[int, int] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic-pump", daemon=True)

    def one_user(self) -> None:
        user = self.rng.randrange(40)
        code, body = _post(self.router_url + "/rank", {"user_id": user, "num_items": 20})
        self.codes[code] = self.codes.get(code, 0) + 1
        if code != 200:
            return
        self.feeds += 1
        for item in body["items"][:5]:
            roll = self.rng.random()
            event: dict[str, Any] = {"user_id": user, "item_id": item["item_id"]}
            if roll < 0.3:
                event["event"] = "click"
            elif roll < 0.45:
                event["event"] = "like"
            elif roll < 0.7:
                event.update(event="dwell", dwell_seconds=round(self.rng.uniform(1, 30), 1))
            else:
                continue
            code, _ = _post(self.router_url + "/feedback", event)
            self.codes[code] = self.codes.get(code, 0) + 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.one_user()
            except Exception as exc:  # recorded and asserted on, never raised in the thread
                self.errors.append(repr(exc))
                if len(self.errors) > 50:
                    return
            self._stop.wait(0.05)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Analyses:
    """The operator's evidence exporter (its telemetry server and EvidenceCollector) with
    an analysis of synthetic counters every 2 s, as the operator's timer would write it,
    scraped as job ``rankexp-operator``: the evidence panels' series."""

    def __init__(self) -> None:
        from rankexp.runtime.telemetry import Metrics, Server

        self.metrics = Metrics()
        self.server = Server(
            "127.0.0.1", 0, metrics=self.metrics, leader=dict, kopf_liveness=lambda: None
        )
        self.rng = random.Random(11)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="analyses", daemon=True)

    def analyse(self) -> None:
        from rankexp.analysis import analyze
        from rankexp.experiment import evidence

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        variants = {}
        for name, ctr in (("control", 0.10), ("treatment", 0.11)):
            impressions = [float(self.rng.randint(900, 1100)) for _ in range(64)]
            clicks = [float(round(i * ctr * self.rng.uniform(0.9, 1.1))) for i in impressions]
            variants[name] = {
                "exposures": sum(impressions) / 20,
                "buckets": {"clicks": clicks, "impressions": impressions},
            }
        weights = {"control": 50.0, "treatment": 50.0}
        record = analyze({"weights": weights, "variants": variants, "min_samples_per_variant": 1})
        status = evidence.analysis_status(
            record, time=now, window=(now, now), expected_share={"control": 0.5, "treatment": 0.5}
        )
        self.metrics.evidence.observe({
            "metadata": {"namespace": NAMESPACE, "name": EXPERIMENT},
            "spec": {"control": "control"},
            "status": {"analysis": status,
                       "traffic": [{"variant": v, "weight": 50} for v in weights]},
        })  # fmt: skip

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            self.analyse()

    def start(self) -> str:
        self.analyse()
        self.server.start()
        self._thread.start()
        return f"127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.server.stop()


@dataclass
class Live:
    prometheus: LocalPrometheus
    rules_prometheus: LocalPrometheus
    pump: TrafficPump
    ranker_urls: dict[str, str]
    router_url: str


@pytest.fixture(scope="module")
def rules_prometheus() -> Iterator[LocalPrometheus]:
    """A second Prometheus with the alert rules loaded, scraping the same processes."""
    with LocalPrometheus(rule_files=[RULES]) as prom:
        yield prom


@pytest.fixture(scope="module")
def live(
    request: pytest.FixtureRequest,
    model_dirs: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    """Control (v1) and treatment (v2) rankers behind the router, with traffic, scraped.

    Scraped by the session ``prometheus`` and by ``rules_prometheus``.
    """
    prometheus = request.getfixturevalue("prometheus")
    rules_prometheus = request.getfixturevalue("rules_prometheus")
    work = tmp_path_factory.mktemp("observability")
    procs: list[Process] = []
    pump: TrafficPump | None = None
    analyses: Analyses | None = None
    try:
        ranker_urls: dict[str, str] = {}
        for variant, model in (("control", "v1"), ("treatment", "v2")):
            (port,) = free_ports(1)
            proc = Process(
                f"ranker-{variant}",
                [sys.executable, "-m", "ranker.cli", "serve", "--model", str(model_dirs[model]),
                 "--variant", variant, "--host", "127.0.0.1", "--port", str(port)],
                log_path=work / f"ranker-{variant}.log",
            )  # fmt: skip
            proc.start()
            procs.append(proc)
            ranker_urls[variant] = f"http://127.0.0.1:{port}"
        for (variant, url), proc in zip(ranker_urls.items(), procs, strict=True):
            ready = f"{url}/ready"
            wait_for(lambda: _status(ready) == 200, timeout=90,  # noqa: B023 (called at once)
                     what=f"ranker {variant} /ready", processes=[proc])  # fmt: skip

        config = work / "routing.json"
        config.write_text(json.dumps({
            "experiment": EXPERIMENT,
            "salt": "obs",
            "control": "control",
            "variants": [{"name": v, "weight": 50, "endpoints": [u]}
                         for v, u in ranker_urls.items()],
        }))  # fmt: skip
        (router_port,) = free_ports(1)
        router = Process(
            "router",
            [sys.executable, "-m", "ranker.cli", "route", "--config", str(config),
             "--host", "127.0.0.1", "--port", str(router_port)],
            log_path=work / "router.log",
        )  # fmt: skip
        router.start()
        procs.append(router)
        router_url = f"http://127.0.0.1:{router_port}"
        wait_for(lambda: _status(router_url + "/ready") == 200, timeout=60,
                 what="router /ready", processes=[router])  # fmt: skip

        for prom in (prometheus, rules_prometheus):
            prom.set_targets("ranker", [u.removeprefix("http://") for u in ranker_urls.values()],
                             TARGET_LABELS)  # fmt: skip
            prom.set_targets("router", [router_url.removeprefix("http://")], TARGET_LABELS)
        for prom in (prometheus, rules_prometheus):
            prom.wait_scraped("ranker", 2)
            prom.wait_scraped("router", 1)

        # A client error the ranker itself rejects (num_items out of range): code="422".
        code, _ = _post(router_url + "/rank", {"user_id": 1, "num_items": 0})
        assert code == 422

        analyses = Analyses()
        # no target labels: the series carry their own namespace and experiment
        prometheus.set_targets("rankexp-operator", [analyses.start()])

        pump = TrafficPump(router_url)
        pump.start()
        # Both variants served, with feedback, and scraped: the drift rule's guard
        # wants > 500 scored items per variant in 5 minutes (20 per feed).
        wait_for(
            lambda: len(prometheus.query(
                f'sum by (variant) (ranking_score_count{{experiment="{EXPERIMENT}"}}) > 600'
                f' and on (variant) sum by (variant) (ranking_dwell_events_total) > 0'
            )) == 2,
            timeout=120, what="scraped traffic on both variants", processes=procs,
        )  # fmt: skip
        yield Live(prometheus, rules_prometheus, pump, ranker_urls, router_url)
    finally:
        if pump is not None:
            pump.stop()
        if analyses is not None:
            prometheus.set_targets("rankexp-operator", [])
            analyses.stop()
        for prom in (prometheus, rules_prometheus):
            if prom.process is not None:
                prom.set_targets("ranker", [])
                prom.set_targets("router", [])
        for proc in reversed(procs):
            proc.stop()


# ------------------------------------------------------------- static checks
def test_rules_file_passes_promtool() -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_rules_are_the_four_default_alerts() -> None:
    rules = {r["alert"]: r for r in load_rules()}
    assert set(rules) == set(DEFAULT_ALERTS)
    for name, (severity, op, threshold) in DEFAULT_ALERTS.items():
        rule = rules[name]
        assert rule["labels"]["severity"] == severity, name
        for key in ("summary", "description"):
            assert "{{ $labels.variant }}" in rule["annotations"][key], (name, key)
        assert rule.get("for"), name
        _, got_op, got_threshold = split_threshold(rule["expr"])
        assert got_op == op, name
        if threshold is not None:
            assert got_threshold == threshold, name
    assert rules["high_latency"]["for"] == "5m"


def test_dashboard_shape() -> None:
    dash = load_dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "experiment"):
        assert variables[name]["type"] == "query"
        assert variables[name]["definition"].startswith("label_values(")
        assert variables[name]["allValue"] == ".*"
    panels = list(all_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert "gridPos" in p, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], p["title"]
    assert EXCLUDED_PANELS.keys() <= {p["title"] for p in panels}


def test_every_dashboard_selector_filters_namespace_and_experiment() -> None:
    seen: set[str] = set()
    for t in dashboard_targets():
        for m in METRIC_RE.finditer(t.expr):
            metric, matchers = m.group(1), m.group(2) or ""
            seen.add(metric)
            assert 'namespace=~"$namespace"' in matchers, (t.panel, metric)
            assert 'experiment=~"$experiment"' in matchers, (t.panel, metric)
    required = {
        "ranking_latency_seconds_bucket", "ranking_requests_total", "ranking_errors_total",
        "ranking_clicks_total", "ranking_impressions_total", "ranking_engagements_total",
        "router_exposures_total", "ranking_score_sum", "ranking_score_count",
        "ranking_score_bucket", "ranking_cache_hits_total", "ranking_cache_requests_total",
        "model_auc", "model_ndcg", "ranking_catalog_coverage", "ranking_category_entropy_sum",
        "rankexp_analysis_relative_lift", "rankexp_analysis_relative_ci_low",
        "rankexp_analysis_relative_ci_high", "rankexp_experiment_traffic_weight",
    }  # fmt: skip
    assert required <= seen, required - seen


# --------------------------------------------------------------- live checks
TARGETS = dashboard_targets()
RULE_LIST = load_rules()


def test_dashboard_variables_list_the_live_labels(live: Live) -> None:
    for var in load_dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
        assert m, var["definition"]
        selector, label = substitute(m.group(1)), m.group(2)
        url = f"{live.prometheus.url}/api/v1/label/{label}/values?" + urlencode(
            {"match[]": selector}
        )
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        assert TARGET_LABELS[label] in body["data"], (var["name"], body["data"])


@pytest.mark.parametrize("target", TARGETS, ids=[t.id for t in TARGETS])
def test_dashboard_expression_returns_live_data(live: Live, target: Target) -> None:
    if target.panel in EXCLUDED_PANELS:
        pytest.skip(f"{target.panel}: {EXCLUDED_PANELS[target.panel]}")
    expr = substitute(target.expr)
    body = wait_for_data(live.prometheus, expr)
    assert body.get("status") == "success", f"{target.panel}: {body}\n{expr}"
    assert body["data"]["result"], f"{target.panel}: no data\n{expr}"
    assert finite_samples(body), f"{target.panel}: only NaN/Inf: {body['data']}\n{expr}"


@pytest.mark.parametrize("rule", RULE_LIST, ids=[r["alert"] for r in RULE_LIST])
def test_rule_expression_parses_and_its_value_returns_live_data(
    live: Live, rule: dict[str, Any]
) -> None:
    body = api_query(live.prometheus, rule["expr"])
    assert body.get("status") == "success", f"{rule['alert']}: {body}"

    value, _, _ = split_threshold(rule["expr"])
    body = wait_for_data(live.prometheus, value)
    assert body.get("status") == "success", f"{rule['alert']}: {body}\n{value}"
    result = body["data"]["result"]
    assert result, f"{rule['alert']}: the value without its threshold has no data\n{value}"
    assert finite_samples(body), f"{rule['alert']}: only NaN/Inf: {result}"
    # Rules span every experiment; the shared Prometheus may still hold other
    # tests' series inside the 5m/1h windows, so look at this experiment's only.
    ours = [s for s in result if s["metric"].get("experiment") == EXPERIMENT]
    variants = {s["metric"].get("variant") for s in ours}
    assert variants == {"control", "treatment"}, (rule["alert"], result)
    for sample in ours:  # the labels the annotations template with
        assert sample["metric"].get("namespace") == NAMESPACE, sample
        assert math.isfinite(float(sample["value"][1])), (rule["alert"], sample)


def test_rules_load_and_evaluate_healthy(live: Live) -> None:
    prom = live.rules_prometheus
    names = set(DEFAULT_ALERTS)
    state: dict[str, dict[str, Any]] = {}

    def evaluated() -> bool:
        with urllib.request.urlopen(prom.url + "/api/v1/rules", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        state.clear()
        for group in body["data"]["groups"]:
            for rule in group["rules"]:
                state[rule["name"]] = rule
        return names <= state.keys() and all(
            state[n]["health"] == "ok" and not state[n]["lastEvaluation"].startswith("0001-")
            for n in names
        )

    try:
        assert prom.process is not None
        wait_for(evaluated, timeout=30, what="four rules evaluated", processes=[prom.process])
    except TimeoutError:
        detail = {n: (r.get("health"), r.get("lastError")) for n, r in state.items()}
        pytest.fail(f"rules not all loaded and healthy: {detail}")
    assert set(state) == names
    for name in names:
        assert state[name]["type"] == "alerting"
        assert state[name]["health"] == "ok", (name, state[name].get("lastError"))
        assert not state[name].get("lastError"), (name, state[name]["lastError"])
    # The rules Prometheus scrapes the same processes: the values behind the rules
    # exist there too (so the health above is about real data, not empty input).
    for rule in load_rules():
        value, _, _ = split_threshold(rule["expr"])
        body = wait_for_data(prom, value)
        assert body.get("status") == "success" and body["data"]["result"], (rule["alert"], body)


def test_traffic_pump_saw_no_errors(live: Live) -> None:
    assert not live.pump.errors, live.pump.errors[:5]
    assert live.pump.feeds > 0
    assert set(live.pump.codes) <= {200, 202}, live.pump.codes
