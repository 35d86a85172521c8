"""The experiment page's rendering (pure functions) and its server over a fake source."""

from __future__ import annotations

import asyncio
import copy
from html.parser import HTMLParser
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rankexp.page.app import ClusterError, create_app, parse_listen
from rankexp.page.charts import LiftPoint, LiftSeries, Period, lift_range, nice_ticks
from rankexp.page.formats import count, epoch, experiment_href, iso, pct
from rankexp.page.health import served_split
from rankexp.page.render import lift_chart_svg, render_experiment, render_index, render_message
from rankexp.page.views import Evidence
from rankexp.prom.evidence import HistoryUnavailable, Point

T0 = 1_796_000_000.0  # 2026-11-30T...Z
HOSTILE = '<img src=x onerror="alert(1)">&'


def when(t: float) -> str:
    return iso(t)


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


class Cells(HTMLParser):
    """The text of every cell, row by row, of the first table whose class is ``cls``."""

    def __init__(self, page: str, cls: str) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.titles: dict[str, str] = {}  # header text -> its title (tooltip)
        self.cell: list[str] | None = None
        self.title = ""
        start = page.index(f'<table class="{cls}"')
        self.feed(page[start : page.index("</table>", start)])
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell, self.title = [], dict(attrs).get("title") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            text = "".join(self.cell)
            self.rows[-1].append(text)
            if self.title:
                self.titles[text] = self.title
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


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
    page = render_index([running, experiment(), {"metadata": {"namespace": "x", "name": "bare"}}],
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
    page = render_index([], "team-a")
    assert "No Experiments in namespace team-a." in page


def test_user_text_is_escaped_everywhere() -> None:
    obj = experiment()
    obj["status"]["analysis"]["reason"] = HOSTILE
    obj["status"]["lastAction"]["reason"] = HOSTILE
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True", "reason": "X",
                                    "message": HOSTILE}]  # fmt: skip
    obj["status"]["traffic"][0]["variant"] = HOSTILE
    for page in (
        render_index([obj], HOSTILE),
        render_experiment(obj, EVENTS, Evidence(history(3), url=HOSTILE), T0 + 60, HOSTILE),
        render_message(HOSTILE, HOSTILE),
    ):
        assert "<img" not in page and 'onerror="' not in page
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in page
        Elements(page)  # parses


# --------------------------------------------------------------------------- one Experiment


@pytest.mark.parametrize("n", [1, 2, 7])
def test_the_chart_draws_one_point_per_analysis_with_its_interval(n: int) -> None:
    points = history(n)
    page = render_experiment(experiment(), EVENTS, Evidence(points), T0 + 60)
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
    page = render_experiment(experiment(), [], Evidence(history(3)), T0 + 60, "engagement_rate")
    parsed = Elements(page)
    assert {p["data-metric"] for p in parsed.having("ci-point")} == {"engagement_rate"}
    links = {a["href"] for t, a in parsed.tags if t == "a" and "metric=" in a.get("href", "")}
    assert links == {"/experiments/team-a/feed?metric=ctr",
                     "/experiments/team-a/feed?metric=engagement_rate"}  # fmt: skip
    # an unknown metric falls back to the primary one
    page = render_experiment(experiment(), [], Evidence(history(3)), T0 + 60, "nope")
    assert {p["data-metric"] for p in Elements(page).having("ci-point")} == {"ctr"}


def test_the_decision_is_shown() -> None:
    page = render_experiment(experiment(), EVENTS, Evidence(history(2)), T0 + 60)
    text = element_text(page, "decision")
    assert "Promoted" in text and "treatment" in text and "beats control" in text
    running = experiment(phase="Running", winner=None)
    running["status"]["analysis"].update(decision="Continue", reasonCode="NoSignificantDifference",
                                         winner=None, reason="not yet")  # fmt: skip
    text = element_text(render_experiment(running, [], Evidence(), T0 + 60), "decision")
    assert "Continue (NoSignificantDifference)" in text and "not yet" in text


def test_health_and_the_decision_log() -> None:
    page = render_experiment(experiment(), EVENTS, Evidence(history(2)), T0 + 60)
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
    text = "".join(Elements(render_experiment(srm_bad, [], Evidence(), T0)).text)
    assert "Sample-ratio check: Mismatch" in text


def test_the_traffic_chart_stacks_the_split_of_every_period() -> None:
    scraped = {"control": [(T0 + 1, 50.0), (T0 + 33, 0.0)],
               "treatment": [(T0 + 1, 50.0), (T0 + 33, 100.0)]}  # fmt: skip
    page = render_experiment(experiment(), [], Evidence(history(2), scraped), T0 + 60)
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
        LiftPoint(T0 + i, v, v - h, v + h, 0.1, "Continue")
        for i, (v, h) in enumerate([(0.5, 5.0), (0.3, 0.4), (0.32, 0.2), (0.31, 0.1)])
    ]
    lo, hi = lift_range(points)
    assert (lo, hi) == pytest.approx((-0.8, 1.3))  # 2 x the median half-width (0.4)
    svg = lift_chart_svg(LiftSeries("treatment", "ctr", True, points))
    parsed = Elements(svg)
    assert len(parsed.having("ci-point")) == 4
    assert len(parsed.having("clipped")) == 1 and len(parsed.having("ci-cap")) == 6
    assert float(parsed.having("ci-point")[0]["data-ci-high"]) == 5.5  # the figure is kept


def test_without_prometheus_the_page_renders_from_status_and_says_so() -> None:
    evidence = Evidence(error="no Prometheus at http://127.0.0.1:1: refused",
                          url="http://127.0.0.1:1")  # fmt: skip
    page = render_experiment(experiment(), EVENTS, evidence, T0 + 60)
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
    page = render_experiment(obj, [], Evidence(), T0)
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
    page = render_experiment(obj, [], Evidence(points), T0 + 60)
    drawn = Elements(page).having("ci-point")
    assert [p["data-metric"] for p in drawn] == ["preference"] * 3
    assert "treatment vs control: lift and confidence interval" in page


def test_nice_ticks_and_formats() -> None:
    assert nice_ticks(-0.03, 0.42) == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(1, 1) == [1]
    assert pct(0.3112) == "+31.12%" and pct(None) == "-" and pct(float("inf")) == "-"
    assert epoch("2026-11-30T12:00:00Z") == epoch("2026-11-30T12:00:00+00:00")
    assert epoch("garbage") is None and epoch(None) is None
    assert experiment_href("a b", "c/d", "ctr") == "/experiments/a%20b/c%2Fd?metric=ctr"
    assert parse_listen("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("8765", "host:", "host:99999", ":80"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


# --------------------------------------------------------------------------- counts and SRM


def test_counts_are_whole_numbers() -> None:
    assert [count(x) for x in (350.746, 2093.09, 0.5, 12.0, 0)] == ["351", "2093", "1", "12", "0"]
    assert count(None) == "-" and count(float("nan")) == "-" and count(True) == "-"


def test_the_page_shows_counts_rounded_and_says_so() -> None:
    obj = experiment()
    obj["status"]["analysis"]["variants"][0]["exposures"] = 350.746
    obj["status"]["analysis"]["variants"][1]["exposures"] = 2093.09
    obj["status"]["variants"] = [
        {"name": "control", "readyReplicas": 1, "exposures": 350.746, "impressions": 7014.92,
         "clicks": 210.448, "ctr": 0.03},
        {"name": "treatment", "readyReplicas": 1, "exposures": 2093.09, "impressions": 41861.8,
         "clicks": 1465.3, "ctr": 0.035},
    ]  # fmt: skip
    points = history(2)
    points[-1] = Point(points[-1].time, points[-1].decision, 0.4,
                       {"control": 100.6, "treatment": 101.4}, points[-1].comparisons)  # fmt: skip
    page = render_experiment(obj, [], Evidence(points), T0 + 60)
    for raw in ("350.746", "2093.09", "7014.92", "210.448", "41861.8", "1465.3", "100.6"):
        assert raw not in page
    variants = Cells(page, "variants")
    assert variants.rows[1:] == [["control", "1", "351", "7015", "210", "3.0%"],
                                 ["treatment", "1", "2093", "41862", "1465", "3.5%"]]  # fmt: skip
    srm = Cells(page, "srm")
    assert [r[:2] for r in srm.rows[1:]] == [["control", "351"], ["treatment", "2093"]]
    assert Cells(page, "analyses").rows[1][-1] == "control=101 treatment=101"
    # the note on the page, and the tooltip of every column of counts
    note = "counts from Prometheus increase(), rounded"
    assert note in "".join(Elements(page[page.index('id="counts-note"') :]).text)
    for table, header in (("variants", "Clicks"), ("srm", "Exposures"), ("analyses", "Exposures")):
        assert Cells(page, table).titles[header].startswith(note)


RAMP = [(0, 2, 90), (100, 103, 75), (200, 202, 50), (300, 301, 0)]  # since, settled, control %


def ramped() -> dict[str, Any]:
    """The issue's run: 90/10 -> 75/25 -> 50/50 -> 0/100; the check passed on the settled
    90/10 traffic while the whole window's exposures were 82.9 %/17.1 %."""
    obj = experiment()
    obj["status"]["trafficHistory"] = [
        {"since": when(T0 + a), "settledAt": when(T0 + b),
         "weights": [{"variant": "control", "weight": c},
                     {"variant": "treatment", "weight": 100 - c}]}
        for a, b, c in RAMP
    ]  # fmt: skip
    analysis = obj["status"]["analysis"]
    analysis["window"] = {"start": when(T0), "end": when(T0 + 298)}
    analysis["srmPValue"] = 0.192
    analysis["variants"] = [
        {"name": "control", "exposures": 2093.09, "expectedShare": 0.9},
        {"name": "treatment", "exposures": 431.6, "expectedShare": 0.1},
    ]
    return obj


def test_the_split_served_over_a_window_is_time_weighted_from_settling() -> None:
    periods = [Period(T0 + a, T0 + b, {"control": c, "treatment": 100 - c}) for a, b, c in RAMP]
    # 90/10 from 2 to 103 s, 75/25 to 202 s, 50/50 to the end at 298 s; 0/100 after it
    expected = (90 * 101 + 75 * 99 + 50 * 96) / 296 / 100
    shares = served_split(periods, T0, T0 + 298)
    assert shares == pytest.approx({"control": expected, "treatment": 1 - expected})
    # the window clips the periods; a period never settled was never served
    assert served_split(periods, T0 + 150, T0 + 250) == pytest.approx(
        {"control": (75 * 52 + 50 * 48) / 100 / 100, "treatment": (25 * 52 + 50 * 48) / 100 / 100}
    )
    unsettled = [periods[0], Period(T0 + 100, None, {"control": 0, "treatment": 100})]
    assert served_split(unsettled, T0, T0 + 298) == pytest.approx(
        {"control": 0.9, "treatment": 0.1}
    )
    assert served_split(periods, T0, T0 + 1) is None  # nothing served yet


def test_after_a_ramp_the_srm_table_shows_what_the_check_tested() -> None:
    page = render_experiment(ramped(), [], Evidence(history(2)), T0 + 400)
    text = "".join(Elements(page).text)
    assert "Sample-ratio check: OK p = 0.192" in text
    table = Cells(page, "srm ramped")
    assert table.rows[0] == ["Variant", "Expected by the check", "Exposures, whole window",
                             "Share of exposures", "Expected over the window"]  # fmt: skip
    # the check's expectation next to its name; the whole window's exposures next to the
    # split the routers served over that window
    assert table.rows[1:] == [["control", "90.0%", "2093", "82.9%", "72.0%"],
                              ["treatment", "10.0%", "432", "17.1%", "28.0%"]]  # fmt: skip
    note = "".join(Elements(page[page.index('id="srm-note"') :]).text)
    assert f"during the window ({when(T0)} to {when(T0 + 298)})" in note
    assert "p = 0.192 tests only the traffic served after each change" in note
    assert "status does not keep the counts it tested" in note
    assert "Observed share" not in page


def test_the_srm_table_shows_the_counts_the_check_tested_when_status_has_them() -> None:
    """status.analysis.variants[].srmExposures (the settled periods' exposures): the table
    shows those counts, their shares and the check's expectation, so they agree with p."""
    obj = ramped()
    tested = {"control": 1697.4, "treatment": 190.2}
    for v in obj["status"]["analysis"]["variants"]:
        v["srmExposures"] = tested[v["name"]]
    page = render_experiment(obj, [], Evidence(history(2)), T0 + 400)
    table = Cells(page, "srm tested")
    assert table.rows == [["Variant", "Exposures tested", "Observed share", "Expected share"],
                          ["control", "1697", "89.9%", "90.0%"],
                          ["treatment", "190", "10.1%", "10.0%"]]  # fmt: skip
    note = "".join(Elements(page[page.index('id="srm-note"') :]).text)
    assert "p = 0.192 tests the 1888 exposures served after each change" in note
    assert "(of 2525 in the window)" in note
    assert "srm ramped" not in page and "Expected over the window" not in page


def test_without_a_ramp_the_srm_table_has_one_expectation() -> None:
    page = render_experiment(experiment(), [], Evidence(history(2)), T0 + 60)
    table = Cells(page, "srm")
    assert table.rows == [["Variant", "Exposures", "Observed share", "Expected share"],
                          ["control", "600", "49.6%", "50.0%"],
                          ["treatment", "610", "50.4%", "50.0%"]]  # fmt: skip
    assert 'id="srm-note"' not in page and "srm ramped" not in page


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
            raise ClusterError(0, "no answer from the API server")
        return [copy.deepcopy(o) for o in self.objects]

    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        if not self.api_up:
            raise ClusterError(403, "forbidden")
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
        async with TestClient(TestServer(create_app(source, scope, refresh=5))) as client:
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
        async with TestClient(TestServer(create_app(FakeSource(), None))) as client:
            codes = set()
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                response = await client.request(method, "/experiments/team-a/feed")
                codes.add(response.status)
            return codes

    assert asyncio.run(go()) == {405}
