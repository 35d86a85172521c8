"""The experiment page's rendering (pure functions) and its server over a fake source."""

from __future__ import annotations

import asyncio
import copy
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rankexp.page import app as d
from rankexp.prom.evidence import HistoryUnavailable, Point

T0 = 1_796_000_000.0  # 2026-11-30T...Z
HOSTILE = '<img src=x onerror="alert(1)">&'


def when(t: float) -> str:
    return d.iso(t)


class Elements(HTMLParser):
    """Every start tag with its attributes; fails on a stray '<' in text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, cls: str) -> list[dict[str, str]]:
        return [a for _, a in self.tags if cls in a.get("class", "").split()]

    def by_id(self, ident: str) -> dict[str, str]:
        (found,) = [a for _, a in self.tags if a.get("id") == ident]
        return found


def element_text(page: str, ident: str) -> str:
    """The text inside the element with id ``ident`` (a div without nested divs' ends)."""
    start = page.index(f'id="{ident}"')
    start = page.index(">", start) + 1
    depth, i = 1, start
    while depth:
        nxt_open, nxt_close = page.find("<div", i), page.find("</div>", i)
        if nxt_open != -1 and nxt_open < nxt_close:
            depth, i = depth + 1, nxt_open + 4
        else:
            depth, i = depth - 1, nxt_close + 6
    return "".join(Elements(page[start : i - 6]).text)


def table_rows(page: str, cls: str) -> int:
    """Rows (with the header) of the table of class ``cls``."""
    start = page.index(f'<table class="{cls}"')
    return page.count("<tr>", start, page.index("</table>", start))


def experiment(**status: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "rankexp.io/v1alpha1",
        "kind": "Experiment",
        "metadata": {"namespace": "team-a", "name": "feed", "generation": 1},
        "spec": {
            "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}],
            "control": "control",
            "analysis": {"primaryMetric": "ctr", "srmPValue": 0.001},
        },
        "status": {
            "phase": "Promoted",
            "winner": "treatment",
            "startedAt": when(T0),
            "traffic": [
                {"variant": "control", "weight": 0},
                {"variant": "treatment", "weight": 100},
            ],
            "trafficHistory": [
                {
                    "since": when(T0),
                    "settledAt": when(T0 + 2),
                    "weights": [
                        {"variant": "control", "weight": 50},
                        {"variant": "treatment", "weight": 50},
                    ],
                },
                {
                    "since": when(T0 + 30),
                    "settledAt": when(T0 + 31),
                    "weights": [
                        {"variant": "control", "weight": 0},
                        {"variant": "treatment", "weight": 100},
                    ],
                },
            ],  # fmt: skip
            "lastAction": {
                "seq": 2,
                "type": "Promote",
                "time": when(T0 + 30),
                "design": "x",
                "step": 0,
                "stages": 1,
                "weights": [{"variant": "treatment", "weight": 100}],
                "scaledDown": ["control"],
                "outcome": "Promoted",
                "winner": "treatment",
                "reason": "treatment beats control on ctr",
            },  # fmt: skip
            "analysis": {
                "time": when(T0 + 27),
                "decision": "Promote",
                "reasonCode": "Significant",
                "reason": "significant",
                "winner": "treatment",
                "primaryMetric": "ctr",
                "method": "sequential",
                "lift": 0.31,
                "pValue": 0.0004,
                "srmPValue": 0.52,
                "variants": [
                    {"name": "control", "exposures": 600, "expectedShare": 0.5},
                    {"name": "treatment", "exposures": 610, "expectedShare": 0.5},
                ],
                "comparisons": [
                    {
                        "variant": "treatment",
                        "metric": "ctr",
                        "lift": 0.01,
                        "relativeLift": 0.31,
                        "relativeCiLow": 0.12,
                        "relativeCiHigh": 0.5,
                        "pValue": 0.0002,
                        "pValueAdjusted": 0.0004,
                        "significant": True,
                        "test": "msprt",
                    },
                ],  # fmt: skip
                "drift": [
                    {
                        "histogram": "score",
                        "variant": "treatment",
                        "psi": 0.03,
                        "ksPValue": 0.4,
                        "ok": True,
                        "gating": False,
                    },
                    {
                        "histogram": "like_rate",
                        "variant": "treatment",
                        "psi": 0.5,
                        "ksPValue": 0.001,
                        "ok": False,
                        "gating": True,
                    },
                ],  # fmt: skip
                "guardrails": [
                    {
                        "metric": "error_rate",
                        "variant": "treatment",
                        "value": 0.0,
                        "limit": 0.01,
                        "ok": True,
                        "kind": "absolute",
                    },
                ],  # fmt: skip
            },
        },
    }
    base["status"].update(status)
    return base


def history(n: int) -> list[Point]:
    """``n`` analyses 3 s apart; the first one holds (no comparison)."""
    out = [Point(T0 + 3, "Hold", 0.5, {"control": 10, "treatment": 11}, {})]
    for i in range(n):
        lift = 0.05 * (i + 1)
        figures = {"relative_lift": lift, "relative_ci_low": lift - 0.2,
                   "relative_ci_high": lift + 0.2, "p_value": 0.5 / (i + 1),
                   "lift": lift / 30}  # fmt: skip
        decision = "Promote" if i == n - 1 else "Continue"
        out.append(
            Point(T0 + 6 + 3 * i, decision, 0.4, {"control": 100.0 * i, "treatment": 101.0 * i},
                  {("treatment", "ctr"): figures, ("treatment", "engagement_rate"): figures})
        )  # fmt: skip
    return out


EVENTS = [
    {"type": "Normal", "reason": "RunStarted", "message": "run started",
     "lastTimestamp": when(T0), "count": 1},
    {"type": "Normal", "reason": "Promoted", "message": f"promoted {HOSTILE}",
     "lastTimestamp": when(T0 + 30), "count": 1},
    {"type": "Warning", "reason": "Held", "message": "held",
     "eventTime": "2026-11-30T12:00:00.123456Z", "count": 3},
]  # fmt: skip


# --------------------------------------------------------------------------- the list


def test_the_list_has_one_row_per_experiment_with_its_figures() -> None:
    running = experiment(phase="Running", winner=None)
    running["metadata"]["name"] = "another"
    running["status"]["traffic"] = [{"variant": "control", "weight": 50},
                                    {"variant": "treatment", "weight": 50}]  # fmt: skip
    page = d.render_index([running, experiment(), {"metadata": {"namespace": "x", "name": "bare"}}],
                          None)  # fmt: skip
    parsed = Elements(page)
    rows = parsed.having("experiment")
    assert [(r["data-namespace"], r["data-name"]) for r in rows] == [
        ("team-a", "another"), ("team-a", "feed"), ("x", "bare")]  # fmt: skip
    text = " ".join(parsed.text)
    assert "control=0 treatment=100" in text and "control=50 treatment=50" in text
    assert "+31.00%" in text and "0.0004" in text and "Promoted" in text
    assert ("a", {"href": "/experiments/team-a/feed"}) in parsed.tags
    assert "all namespaces" in text


def test_an_empty_list_says_so() -> None:
    page = d.render_index([], "team-a")
    assert "No Experiments in namespace team-a." in page


def test_user_text_is_escaped_everywhere() -> None:
    obj = experiment()
    obj["status"]["analysis"]["reason"] = HOSTILE
    obj["status"]["lastAction"]["reason"] = HOSTILE
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True", "reason": "X",
                                    "message": HOSTILE}]  # fmt: skip
    obj["status"]["traffic"][0]["variant"] = HOSTILE
    for page in (
        d.render_index([obj], HOSTILE),
        d.render_experiment(obj, EVENTS, d.Evidence(history(3), url=HOSTILE), T0 + 60, HOSTILE),
        d.render_message(HOSTILE, HOSTILE),
    ):
        assert "<img" not in page and 'onerror="' not in page
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in page
        Elements(page)  # parses


# --------------------------------------------------------------------------- one Experiment


@pytest.mark.parametrize("n", [1, 2, 7])
def test_the_chart_draws_one_point_per_analysis_with_its_interval(n: int) -> None:
    points = history(n)
    page = d.render_experiment(experiment(), EVENTS, d.Evidence(points), T0 + 60)
    drawn = Elements(page).having("ci-point")
    assert len(drawn) == n  # the Hold without a comparison is not a point
    assert [float(p["data-value"]) for p in drawn] == [0.05 * (i + 1) for i in range(n)]
    assert [p["data-time"] for p in drawn] == [when(T0 + 6 + 3 * i) for i in range(n)]
    assert {(p["data-variant"], p["data-metric"]) for p in drawn} == {("treatment", "ctr")}
    assert float(drawn[-1]["data-ci-low"]) == pytest.approx(0.05 * n - 0.2)
    assert drawn[-1]["data-decision"] == "Promote"
    assert len(Elements(page).having("ci-bar")) == n
    assert "nan" not in page.lower().replace("nanosecond", "")
    # every analysis, in the table too (the Hold included)
    assert table_rows(page, "analyses") == n + 2  # header, the Hold, n analyses


def test_another_metric_is_one_link_away() -> None:
    page = d.render_experiment(experiment(), [], d.Evidence(history(3)), T0 + 60, "engagement_rate")
    parsed = Elements(page)
    assert {p["data-metric"] for p in parsed.having("ci-point")} == {"engagement_rate"}
    links = {a["href"] for t, a in parsed.tags if t == "a" and "metric=" in a.get("href", "")}
    assert links == {"/experiments/team-a/feed?metric=ctr",
                     "/experiments/team-a/feed?metric=engagement_rate"}  # fmt: skip
    # an unknown metric falls back to the primary one
    page = d.render_experiment(experiment(), [], d.Evidence(history(3)), T0 + 60, "nope")
    assert {p["data-metric"] for p in Elements(page).having("ci-point")} == {"ctr"}


def test_the_decision_is_shown() -> None:
    page = d.render_experiment(experiment(), EVENTS, d.Evidence(history(2)), T0 + 60)
    text = element_text(page, "decision")
    assert "Promoted" in text and "treatment" in text and "beats control" in text
    running = experiment(phase="Running", winner=None)
    running["status"]["analysis"].update(decision="Continue", reasonCode="NoSignificantDifference",
                                         winner=None, reason="not yet")  # fmt: skip
    text = element_text(d.render_experiment(running, [], d.Evidence(), T0 + 60), "decision")
    assert "Continue (NoSignificantDifference)" in text and "not yet" in text


def test_health_and_the_decision_log() -> None:
    page = d.render_experiment(experiment(), EVENTS, d.Evidence(history(2)), T0 + 60)
    parsed = Elements(page)
    text = "".join(parsed.text)
    assert "Sample-ratio check: OK p = 0.52" in text
    assert "Drift" in text and "like_rate" in text and "0.5" in text
    log = page[page.index('class="decision-log"') :]
    # newest first
    order = [log.index(s) for s in ("Held", "Promoted", "RunStarted")]
    assert order == sorted(order)
    assert "(×3)" in log and "#2 Promote: Promoted, winner treatment" in log
    assert "served by every router after 2s" in log
    srm_bad = experiment()
    srm_bad["status"]["analysis"]["srmPValue"] = 0.0001
    text = "".join(Elements(d.render_experiment(srm_bad, [], d.Evidence(), T0)).text)
    assert "Sample-ratio check: Mismatch" in text


def test_the_traffic_chart_stacks_the_split_of_every_period() -> None:
    scraped = {"control": [(T0 + 1, 50.0), (T0 + 33, 0.0)],
               "treatment": [(T0 + 1, 50.0), (T0 + 33, 100.0)]}  # fmt: skip
    page = d.render_experiment(experiment(), [], d.Evidence(history(2), scraped), T0 + 60)
    chart = page[page.index('<svg class="chart traffic-chart"') : page.index("</svg>", page.index(
        'class="chart traffic-chart"'))]  # fmt: skip
    bands = {}
    for group in chart.split('<g class="traffic-step"')[1:]:
        tags = Elements("<g" + group[: group.index("</g>") + 4]).tags
        variant = tags[0][1]["data-variant"]
        bands[variant] = [a for t, a in tags if t == "rect"]
    assert [len(bands["control"]), len(bands["treatment"])] == [1, 2]  # control 0 after 30 s
    (control,) = bands["control"]
    first, second = bands["treatment"]
    # 50/50: equal halves, stacked; then treatment alone fills the height
    assert float(control["height"]) == pytest.approx(float(first["height"]))
    assert float(first["y"]) + float(first["height"]) == pytest.approx(float(control["y"]))
    assert float(second["height"]) == pytest.approx(2 * float(first["height"]))
    assert float(second["x"]) == pytest.approx(float(first["x"]) + float(first["width"]))
    (line,) = Elements(chart).having("weight-series")  # the boundary between the two bands
    assert line["data-variant"] == "control" and len(line["points"].split()) == 2
    assert table_rows(page, "traffic-history") == 3  # header + 2


def test_a_wide_first_interval_does_not_flatten_the_chart() -> None:
    points = [
        d.LiftPoint(T0 + i, v, v - h, v + h, 0.1, "Continue")
        for i, (v, h) in enumerate([(0.5, 5.0), (0.3, 0.4), (0.32, 0.2), (0.31, 0.1)])
    ]
    lo, hi = d.lift_range(points)
    assert (lo, hi) == pytest.approx((-0.8, 1.3))  # 2 x the median half-width (0.4)
    svg = d.lift_chart(d.LiftSeries("treatment", "ctr", True, points))
    parsed = Elements(svg)
    assert len(parsed.having("ci-point")) == 4
    assert len(parsed.having("clipped")) == 1 and len(parsed.having("ci-cap")) == 6
    assert float(parsed.having("ci-point")[0]["data-ci-high"]) == 5.5  # the figure is kept


def test_without_prometheus_the_page_renders_from_status_and_says_so() -> None:
    evidence = d.Evidence(error="no Prometheus at http://127.0.0.1:1: refused",
                          url="http://127.0.0.1:1")  # fmt: skip
    page = d.render_experiment(experiment(), EVENTS, evidence, T0 + 60)
    parsed = Elements(page)
    assert parsed.by_id("prometheus-notice")
    assert "http://127.0.0.1:1 could not be read (no Prometheus" in " ".join(parsed.text)
    (point,) = parsed.having("ci-point")  # the latest analysis, from status
    assert float(point["data-value"]) == 0.31 and point["data-time"] == when(T0 + 27)
    assert "Promoted" in element_text(page, "decision")


@pytest.mark.parametrize(
    "obj",
    [
        {"metadata": {"namespace": "a", "name": "b"}},
        {"metadata": {"namespace": "a", "name": "b"}, "spec": {}, "status": {"phase": "Pending"}},
        experiment(analysis={}, trafficHistory=[], lastAction=None, phase="Running"),
        experiment(
            phase="Failed",
            analysis={},
            conditions=[{"type": "Degraded", "status": "True", "message": "bad spec"}],
        ),  # fmt: skip
    ],
)
def test_missing_data_renders(obj: dict[str, Any]) -> None:
    page = d.render_experiment(obj, [], d.Evidence(), T0)
    parsed = Elements(page)
    assert parsed.by_id("decision") is not None
    assert not parsed.having("ci-point")
    assert "No analysis" in page or "No traffic history" in page or "bad spec" in page


def test_interleaving_charts_the_preference_share() -> None:
    obj = experiment()
    obj["spec"]["mode"] = "interleaving"
    figures = [{"lift": 0.1 * i, "ci_low": -0.1, "ci_high": 0.4} for i in range(1, 4)]
    points = [Point(T0 + 3 * i, "Continue", None, {}, {("treatment", "preference"): f})
              for i, f in enumerate(figures, 1)]  # fmt: skip
    page = d.render_experiment(obj, [], d.Evidence(points), T0 + 60)
    drawn = Elements(page).having("ci-point")
    assert [p["data-metric"] for p in drawn] == ["preference"] * 3
    assert "treatment vs control: lift and confidence interval" in page


def test_nice_ticks_and_formats() -> None:
    assert d.nice_ticks(-0.03, 0.42) == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert d.nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert d.nice_ticks(1, 1) == [1]
    assert d.pct(0.3112) == "+31.12%" and d.pct(None) == "-" and d.pct(float("inf")) == "-"
    assert d.epoch("2026-11-30T12:00:00Z") == d.epoch("2026-11-30T12:00:00+00:00")
    assert d.epoch("garbage") is None and d.epoch(None) is None
    assert d.experiment_href("a b", "c/d", "ctr") == "/experiments/a%20b/c%2Fd?metric=ctr"
    assert d.parse_listen("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert d.parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("8765", "host:", "host:99999", ":80"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            d.parse_listen(bad)


# --------------------------------------------------------------------------- the server


class FakeSource:
    prometheus_url = "http://prometheus.invalid:9090"

    def __init__(self, prometheus_up: bool = True, api_up: bool = True) -> None:
        self.objects = [experiment()]
        self.prometheus_up = prometheus_up
        self.api_up = api_up
        self.asked: list[tuple[str, Any]] = []

    def list_experiments(self, namespace: str | None) -> list[dict[str, Any]]:
        self.asked.append(("list", namespace))
        if not self.api_up:
            raise d.ClusterError(0, "no answer from the API server")
        return [copy.deepcopy(o) for o in self.objects]

    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        if not self.api_up:
            raise d.ClusterError(403, "forbidden")
        for o in self.objects:
            if (o["metadata"]["namespace"], o["metadata"]["name"]) == (namespace, name):
                return copy.deepcopy(o)
        return None

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return list(EVENTS)

    def history(self, namespace: str, name: str, seconds: float) -> list[Point]:
        self.asked.append(("history", seconds))
        if not self.prometheus_up:
            raise HistoryUnavailable("no Prometheus at http://prometheus.invalid:9090")
        return history(4)

    def weights(
        self, namespace: str, name: str, seconds: float
    ) -> dict[str, list[tuple[float, float]]]:
        if not self.prometheus_up:
            raise HistoryUnavailable("no Prometheus")
        return {"treatment": [(T0, 50.0)]}


def fetch(source: FakeSource, scope: str | None, *paths: str) -> list[tuple[int, str, Any]]:
    async def go() -> list[tuple[int, str, Any]]:
        out = []
        async with TestClient(TestServer(d.create_app(source, scope, refresh=5))) as client:
            for path in paths:
                response = await client.get(path)
                out.append((response.status, await response.text(), response.headers))
        return out

    return asyncio.run(go())


def test_the_server_serves_the_pages() -> None:
    source = FakeSource()
    (index, page, health, missing, outside, post) = fetch(
        source, "team-a", "/", "/experiments/team-a/feed", "/healthz",
        "/experiments/team-a/nope", "/experiments/other/feed", "/nothing",
    )  # fmt: skip
    assert index[0] == 200 and 'data-name="feed"' in index[1]
    assert 'http-equiv="refresh" content="5"' in index[1]
    assert "script-src" not in index[2]["Content-Security-Policy"]
    assert index[2]["Content-Security-Policy"].startswith("default-src 'none'")
    assert page[0] == 200 and len(Elements(page[1]).having("ci-point")) == 4
    assert health == (200, "ok\n", health[2])
    assert missing[0] == 404 and "No Experiment team-a/nope" in missing[1]
    assert outside[0] == 404  # only the namespace in scope
    assert post[0] == 404
    assert ("list", "team-a") in source.asked
    (seconds,) = [s for what, s in source.asked if what == "history"]
    assert seconds > 120  # from startedAt to now, and a margin


def test_the_server_survives_prometheus_and_the_api_server_down() -> None:
    ((status, text, _),) = fetch(FakeSource(prometheus_up=False), None, "/experiments/team-a/feed")
    assert status == 200 and 'id="prometheus-notice"' in text
    assert len(Elements(text).having("ci-point")) == 1
    down = FakeSource(api_up=False)
    (index, page) = fetch(down, None, "/", "/experiments/team-a/feed")
    assert index[0] == 502 and "no answer from the API server" in index[1]
    assert page[0] == 403 and "forbidden" in page[1]


def test_the_server_only_reads() -> None:
    async def go() -> set[int]:
        async with TestClient(TestServer(d.create_app(FakeSource(), None))) as client:
            codes = set()
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                response = await client.request(method, "/experiments/team-a/feed")
                codes.add(response.status)
            return codes

    assert asyncio.run(go()) == {405}
