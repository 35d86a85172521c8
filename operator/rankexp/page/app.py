"""The experiment page: a read-only web page of every Experiment and its evidence.

``rankexp dashboard`` (or ``kubectl rankexp dashboard``, ``python -m rankexp.page.app``)
serves, on 127.0.0.1:8765 by default:

* ``/``: the Experiments (namespace, name, phase, traffic, winner, lift, p);
* ``/experiments/{namespace}/{name}``: the current decision, the lift and its confidence
  interval at every analysis (``?metric=`` another compared metric), the traffic over
  time, sample-ratio, drift and guardrail health, and the decision log (last action,
  traffic periods, decision changes, the Experiment's Events);
* ``/healthz``.

It reads the API server (with the caller's kubeconfig, or in-cluster) and Prometheus
(the operator's ``rankexp_analysis_*`` series, see :mod:`rankexp.prom.evidence`) and
writes nothing. Without Prometheus the page still renders from status and says so.

The HTML is rendered server-side by pure functions (:func:`render_index`,
:func:`render_experiment`: dicts and :class:`~rankexp.prom.evidence.Point` lists in,
a string out), with inline CSS and inline SVG charts, no script and nothing fetched from
elsewhere; the I/O is :class:`Reader`, and :func:`create_app` joins the two.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from rankexp.prom.evidence import (
    PREFERENCE,
    TRAFFIC,
    HistoryUnavailable,
    Point,
    fetch_history,
)

GROUP, VERSION, PLURAL = "rankexp.io", "v1alpha1", "experiments"
#: What ``rankexp dashboard --help`` says.
DESCRIPTION = (
    "A read-only web page of the Experiments: phase, traffic, winner, lift and p; per "
    "Experiment the lift and its CI at every analysis, the traffic over time, sample-ratio "
    "and drift health and the decision log. Reads the API server (your kubeconfig) and "
    "Prometheus, writes nothing."
)
DEFAULT_SRM_P_VALUE = 0.001  # spec.analysis.srmPValue's default
CONCLUDED = ("Promoted", "RolledBack", "Inconclusive")
#: variant colours (Tableau 10), in the order of spec.variants
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")  # fmt: skip
TONE = {
    "Promote": "good", "Promoted": "good", "Rollback": "bad", "RolledBack": "bad",
    "Failed": "bad", "Inconclusive": "warn", "Hold": "warn", "Continue": "neutral",
    "Running": "neutral", "Pending": "neutral",
}  # fmt: skip
HEADERS = {
    # nothing but this page's own inline style and data: icons; no script at all
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# ------------------------------------------------------------------------- formatting


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def epoch(text: Any) -> float | None:
    """Unix seconds of an API timestamp (``...Z``, ``+00:00``, fractions), else None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pct(x: Any, sign: bool = True) -> str:
    f = _finite(x)
    if f is None:
        return "-"
    return f"{100.0 * f:+.2f}%" if sign else f"{100.0 * f:.1f}%"


def num(x: Any, digits: int = 3) -> str:
    f = _finite(x)
    if f is None:
        return "-"
    if f.is_integer() and abs(f) >= 1:
        return str(int(f))
    return f"{f:.{digits}g}"


def weights_text(weights: Iterable[Mapping[str, Any]] | None) -> str:
    """``control=50 treatment=50``."""
    parts = [f"{w.get('variant')}={num(w.get('weight'))}" for w in weights or []]
    return " ".join(parts) or "-"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def experiment_href(namespace: str, name: str, metric: str | None = None) -> str:
    quote = urllib.parse.quote
    href = f"/experiments/{quote(namespace, safe='')}/{quote(name, safe='')}"
    return href + (f"?{urllib.parse.urlencode({'metric': metric})}" if metric else "")


def _colours(names: Sequence[str]) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(len(names))]


def _tone(word: Any) -> str:
    return TONE.get(str(word), "neutral")


def _badge(word: Any, tone: str | None = None) -> str:
    return f'<span class="badge {tone or _tone(word)}">{esc(word or "-")}</span>'


def _el(tag: str, inner: str = "", **attrs: Any) -> str:
    """An element; ``class_`` is ``class``, ``data_t`` is ``data-t``; values escaped."""
    text = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
    return f"<{tag}{text}>{inner}</{tag}>" if inner else f"<{tag}{text}/>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ------------------------------------------------------------------------- page frame

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#fff;--panel:#f6f8fa;
--good:#1a7f37;--bad:#cf222e;--warn:#9a6700;--neutral:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{padding:10px 24px;background:#24292f;color:#fff}
header a{color:#fff;text-decoration:none;font-weight:600}
header .crumb{color:#d0d7de}
main{padding:16px 24px;max-width:1200px}
h1{font-size:22px;margin:4px 0 12px}h2{font-size:17px;margin:24px 0 8px;
border-bottom:1px solid var(--line);padding-bottom:4px}h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;margin:4px 0 8px}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600;white-space:nowrap}
td:first-child,.conditions td:last-child{white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;
border:1px solid currentColor}
.good{color:var(--good)}.bad{color:var(--bad)}.warn{color:var(--warn)}
.neutral{color:var(--neutral)}
.decision{border:1px solid var(--line);border-left:6px solid var(--neutral);padding:10px 14px;
background:var(--panel);margin:8px 0 12px;max-width:900px}
.decision.good{border-left-color:var(--good)}.decision.bad{border-left-color:var(--bad)}
.decision.warn{border-left-color:var(--warn)}
.decision .verdict{font-size:18px;font-weight:700;color:var(--fg)}
.decision .why{color:var(--muted)}
.facts{display:flex;flex-wrap:wrap;gap:6px 28px;color:var(--muted)}
.facts b{color:var(--fg);font-weight:600}
.notice{border:1px solid #d4a72c;background:#fff8c5;padding:6px 12px;margin:8px 0;
max-width:900px}
.muted,.empty{color:var(--muted)}
nav.metrics a{margin-right:10px}nav.metrics a.current{font-weight:700;color:var(--fg)}
svg.chart{background:#fff;border:1px solid var(--line);max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#59636e}
svg .grid{stroke:#eaeef2}svg .zero{stroke:#8c959f;stroke-dasharray:4 3}
svg .axis{stroke:#8c959f}
svg .lift-line{fill:none;stroke:#8c959f;stroke-width:1}
svg .ci-bar,svg .ci-cap{stroke-width:2}
svg .traffic-step rect{stroke:#fff;stroke-width:0.5}
svg .weight-series{fill:none;stroke-width:1.5;stroke-dasharray:3 3}
svg .ci-bar.clipped{stroke-dasharray:4 2}
.decision-log td:nth-child(3){white-space:nowrap}
.legend span{margin-right:14px;white-space:nowrap}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
""".strip()


def _page(title: str, crumb: str, body: str, refresh: int = 0) -> str:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh > 0 else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,">{meta}<title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body>"
        f'<header><a href="/">rankexp experiments</a>{crumb}</header>'
        f"<main>{body}</main></body></html>"
    )


def render_message(title: str, message: str) -> str:
    """A page of one message (not found, forbidden, the API server unreachable)."""
    body = (
        f'<h1>{esc(title)}</h1><p class="notice">{esc(message)}</p>'
        '<p><a href="/">All Experiments</a></p>'
    )
    return _page(f"{title} · rankexp", "", body)


# ------------------------------------------------------------------------- the list


def render_index(
    experiments: Sequence[Mapping[str, Any]], scope: str | None, refresh: int = 0
) -> str:
    """The table of Experiments (pure)."""
    where = "all namespaces" if scope is None else f"namespace {scope}"
    rows = []
    for obj in sorted(
        experiments,
        key=lambda o: (
            (o.get("metadata") or {}).get("namespace", ""),
            (o.get("metadata") or {}).get("name", ""),
        ),
    ):
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        analysis = status.get("analysis") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        rows.append(
            f'<tr class="experiment" data-namespace="{esc(ns)}" data-name="{esc(name)}">'
            f"<td>{esc(ns)}</td>"
            f'<td><a href="{esc(experiment_href(ns, name))}">{esc(name)}</a></td>'
            f"<td>{_badge(status.get('phase') or 'Pending')}</td>"
            f"<td>{esc(weights_text(status.get('traffic')))}</td>"
            f"<td>{esc(status.get('winner') or '-')}</td>"
            f'<td class="num">{esc(pct(analysis.get("lift")))}</td>'
            f'<td class="num">{esc(num(analysis.get("pValue")))}</td>'
            f"<td>{esc(analysis.get('decision') or '-')}</td>"
            f"<td>{esc(analysis.get('time') or '-')}</td></tr>"
        )
    if rows:
        head = "".join(
            f'<th class="{"num" if h in ("Lift", "p") else ""}">{h}</th>'
            for h in (
                "Namespace",
                "Name",
                "Phase",
                "Traffic %",
                "Winner",
                "Lift",
                "p",
                "Last decision",
                "Analysed at",
            )  # fmt: skip
        )
        table = (
            f'<table id="experiments"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            '<p class="muted">Lift: relative lift of the winner (else the best treatment) on '
            "the primary metric; p: its Holm-adjusted p-value (interleaving: the preference "
            "share and its p-value).</p>"
        )
    else:
        table = f'<p class="empty" id="experiments">No Experiments in {esc(where)}.</p>'
    body = f'<h1>Experiments <small class="muted">({esc(where)})</small></h1>{table}'
    return _page("Experiments · rankexp", "", body, refresh)


# ------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class LiftPoint:
    """One analysis on the lift chart."""

    time: float
    value: float
    low: float | None
    high: float | None
    p: float | None
    decision: str | None


@dataclass(frozen=True)
class LiftSeries:
    variant: str
    metric: str
    relative: bool
    points: list[LiftPoint]


def lift_series(points: Sequence[Point], variant: str, metric: str) -> LiftSeries:
    """The (relative, when the series has it) lift of ``variant`` on ``metric`` at every
    analysis that compared them: one point per ``rankexp_analysis_*lift`` sample."""
    found = [
        (p, p.comparisons[(variant, metric)]) for p in points if (variant, metric) in p.comparisons
    ]
    relative = any("relative_lift" in c for _, c in found)
    key, low, high = (
        ("relative_lift", "relative_ci_low", "relative_ci_high")
        if relative
        else ("lift", "ci_low", "ci_high")
    )
    out = []
    for p, c in found:
        value = _finite(c.get(key))
        if value is None:
            continue
        out.append(
            LiftPoint(
                time=p.time,
                value=value,
                low=_finite(c.get(low)),
                high=_finite(c.get(high)),
                p=_finite(c.get("p_value_adjusted", c.get("p_value"))),
                decision=p.decision,
            )
        )
    return LiftSeries(variant, metric, relative, out)


def status_point(analysis: Mapping[str, Any], variant: str, metric: str) -> Point | None:
    """The latest analysis in status as a history point (when Prometheus has none)."""
    t = epoch(analysis.get("time"))
    if t is None:
        return None
    fields = {
        "lift": "lift", "relative_lift": "relativeLift", "ci_low": "ciLow", "ci_high": "ciHigh",
        "relative_ci_low": "relativeCiLow", "relative_ci_high": "relativeCiHigh",
        "p_value": "pValue", "p_value_adjusted": "pValueAdjusted",
    }  # fmt: skip
    comparisons: dict[tuple[str, str], dict[str, float]] = {}
    for c in analysis.get("comparisons") or []:
        figures = {k: v for k, src in fields.items() if (v := _finite(c.get(src))) is not None}
        comparisons[(str(c.get("variant")), str(c.get("metric")))] = figures
    inter = analysis.get("interleaving")
    if isinstance(inter, Mapping) and metric == PREFERENCE:
        src = {"lift": "delta", "ci_low": "ciLow", "ci_high": "ciHigh", "p_value": "pValue"}
        figures = {k: v for k, s in src.items() if (v := _finite(inter.get(s))) is not None}
        comparisons[(variant, PREFERENCE)] = figures
    exposures = {
        str(v.get("name")): e
        for v in analysis.get("variants") or []
        if (e := _finite(v.get("exposures"))) is not None
    }
    return Point(
        time=t,
        decision=analysis.get("decision"),
        srm_p_value=_finite(analysis.get("srmPValue")),
        exposures=exposures,
        comparisons=comparisons,
    )


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2, 5 x 10^k)."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


@dataclass
class _Frame:
    """Plot area and linear scales of one SVG chart."""

    t0: float
    t1: float
    y0: float
    y1: float
    width: int = 960
    height: int = 260
    left: int = 64
    right: int = 16
    top: int = 14
    bottom: int = 40
    parts: list[str] = field(default_factory=list)

    def x(self, t: float) -> float:
        span = self.t1 - self.t0 or 1.0
        return round(self.left + (t - self.t0) / span * (self.width - self.left - self.right), 2)

    def y(self, v: float) -> float:
        span = self.y1 - self.y0 or 1.0
        inner = self.height - self.top - self.bottom
        return round(self.top + (self.y1 - v) / span * inner, 2)

    def axes(self, label: Any) -> None:
        """Grid, y ticks (``label(value)``), time ticks."""
        x_end = self.width - self.right
        for v in nice_ticks(self.y0, self.y1, 6):
            y = self.y(v)
            self.parts.append(
                f'<line class="grid" x1="{self.left}" x2="{x_end}" y1="{y}" y2="{y}"/>'
            )
            self.parts.append(
                f'<text x="{self.left - 6}" y="{y + 4}" text-anchor="end">{esc(label(v))}</text>'
            )
        base = self.height - self.bottom
        self.parts.append(
            f'<line class="axis" x1="{self.left}" x2="{x_end}" y1="{base}" y2="{base}"/>'
        )
        span = self.t1 - self.t0
        fmt = "%H:%M:%S" if span < 3 * 3600 else ("%H:%M" if span < 86400 else "%m-%d %H:%M")
        for i in range(5):
            t = self.t0 + span * i / 4
            x = self.x(t)
            anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
            text = datetime.fromtimestamp(t, UTC).strftime(fmt)
            self.parts.append(f'<line class="axis" x1="{x}" x2="{x}" y1="{base}" y2="{base + 4}"/>')
            self.parts.append(
                f'<text x="{x}" y="{base + 17}" text-anchor="{anchor}">{esc(text)}</text>'
            )
        self.parts.append(
            f'<text x="{x_end}" y="{self.height - 4}" text-anchor="end">time (UTC)</text>'
        )

    def svg(self, cls: str, label: str) -> str:
        return (
            f'<svg class="chart {cls}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
            f'height="{self.height}" aria-label="{esc(label)}"><title>{esc(label)}</title>'
            + "".join(self.parts)
            + "</svg>"
        )


def lift_range(pts: Sequence[LiftPoint]) -> tuple[float, float]:
    """The values shown: every lift and 0, and the intervals up to twice the median
    interval's half-width beyond them, so that the wide intervals of the first analyses do
    not flatten the later ones (those bars are cut at the edge)."""
    core = [p.value for p in pts] + [0.0]
    bounds = [v for p in pts for v in (p.low, p.high) if v is not None]
    lo, hi = min(core + bounds), max(core + bounds)
    halves = sorted((p.high - p.low) / 2 for p in pts if p.low is not None and p.high is not None)
    if halves:
        reach = 2 * halves[len(halves) // 2]
        lo, hi = max(lo, min(core) - reach), min(hi, max(core) + reach)
    return lo, hi


def lift_chart(series: LiftSeries, colour: str = PALETTE[1]) -> str:
    """The lift at every analysis with its confidence interval as a vertical bar; every
    point is a ``<g class="ci-point">`` carrying its figures as data attributes."""
    what = "relative lift" if series.relative else "lift"
    label = f"{what} of {series.variant} on {series.metric} at every analysis, with its CI"
    pts = series.points
    if not pts:
        what = f"{esc(series.variant)} on {esc(series.metric)}"
        return f'<p class="empty">No analysis of {what} yet.</p>'
    lo, hi = lift_range(pts)
    pad = (hi - lo) * 0.08 or (0.01 if series.relative else abs(hi) * 0.1 or 0.01)
    t0, t1 = min(p.time for p in pts), max(p.time for p in pts)
    tpad = (t1 - t0) * 0.04 or 30.0
    frame = _Frame(t0 - tpad, t1 + tpad, lo - pad, hi + pad)
    frame.axes(lambda v: pct(v) if series.relative else num(v))
    zero = frame.y(0.0)
    x_end = frame.width - frame.right
    frame.parts.append(_el("line", class_="zero", x1=frame.left, x2=x_end, y1=zero, y2=zero))
    if len(pts) > 1:
        line = " ".join(f"{frame.x(p.time)},{frame.y(p.value)}" for p in pts)
        frame.parts.append(f'<polyline class="lift-line" points="{line}"/>')
    fmt = pct if series.relative else num
    for p in pts:
        x, y = frame.x(p.time), frame.y(p.value)
        ci = f" [{fmt(p.low)}, {fmt(p.high)}]" if p.low is not None and p.high is not None else ""
        tip = f"{iso(p.time)}: {what} {fmt(p.value)}{ci}, p {num(p.p)}, {p.decision or '-'}"
        bar = ""
        if p.low is not None and p.high is not None:
            # a bound beyond the plotted range ends at its edge, dashed and without a cap
            low, high = max(p.low, frame.y0), min(p.high, frame.y1)
            clipped = " clipped" if (low, high) != (p.low, p.high) else ""
            y_lo, y_hi = frame.y(low), frame.y(high)
            bar = _el("line", class_="ci-bar" + clipped, x1=x, x2=x, y1=y_lo, y2=y_hi,
                      stroke=colour)  # fmt: skip
            for cap, edge in ((y_lo, low != p.low), (y_hi, high != p.high)):
                if not edge:
                    bar += _el("line", class_="ci-cap", x1=x - 4, x2=x + 4, y1=cap, y2=cap,
                               stroke=colour)  # fmt: skip
        fill = {"good": "#1a7f37", "bad": "#cf222e", "warn": "#bf8700"}.get(
            _tone(p.decision), colour
        )
        frame.parts.append(
            f'<g class="ci-point" data-variant="{esc(series.variant)}" '
            f'data-metric="{esc(series.metric)}" data-time="{esc(iso(p.time))}" '
            f'data-t="{p.time:g}" data-value="{p.value!r}" '
            f'data-ci-low="{"" if p.low is None else repr(p.low)}" '
            f'data-ci-high="{"" if p.high is None else repr(p.high)}" '
            f'data-decision="{esc(p.decision or "")}"><title>{esc(tip)}</title>{bar}'
            f'<circle cx="{x}" cy="{y}" r="4.5" fill="{fill}" stroke="#fff" stroke-width="1"/></g>'
        )
    return frame.svg("lift-chart", label)


@dataclass(frozen=True)
class Period:
    since: float
    settled: float | None
    weights: dict[str, float]


def traffic_periods(status: Mapping[str, Any]) -> list[Period]:
    out = []
    for h in status.get("trafficHistory") or []:
        since = epoch(h.get("since"))
        if since is None:
            continue
        weights = {
            str(w.get("variant")): f
            for w in h.get("weights") or []
            if (f := _finite(w.get("weight"))) is not None
        }
        out.append(Period(since, epoch(h.get("settledAt")), weights))
    return sorted(out, key=lambda p: p.since)


def traffic_chart(
    periods: Sequence[Period],
    variants: Sequence[str],
    scraped: Mapping[str, Sequence[tuple[float, float]]],
    end: float,
) -> str:
    """The split over time: the weights the operator set (status.trafficHistory) as
    stacked bands, one ``<g class="traffic-step">`` per variant, and the split Prometheus
    scraped (``rankexp_experiment_traffic_weight``) as dotted lines between the bands."""
    if not periods:
        return '<p class="empty">No traffic history yet (the run has not started).</p>'
    t0 = periods[0].since
    t1 = max(end, periods[-1].since + 1.0)
    frame = _Frame(t0, t1, 0.0, 100.0, height=220)
    frame.axes(lambda v: f"{v:g}%")
    names = list(variants) + sorted({v for p in periods for v in p.weights} - set(variants))
    colours = _colours(names)
    below = [0.0] * len(periods)
    for variant, colour in zip(names, colours, strict=True):
        rects = []
        for j, p in enumerate(periods):
            w = p.weights.get(variant, 0.0)
            stop = periods[j + 1].since if j + 1 < len(periods) else t1
            if w > 0:
                x, top = frame.x(p.since), frame.y(below[j] + w)
                tip = f"{variant} {num(w)}% from {iso(p.since)}"
                rects.append(
                    _el(
                        "rect",
                        _el("title", esc(tip)),
                        x=x,
                        y=top,
                        width=round(frame.x(stop) - x, 2),
                        height=round(frame.y(below[j]) - top, 2),
                    )  # fmt: skip
                )
            below[j] += w
        frame.parts.append(
            f'<g class="traffic-step" data-variant="{esc(variant)}" fill="{colour}" '
            f'fill-opacity="0.8">{"".join(rects)}</g>'
        )
    at: dict[float, dict[str, float]] = {}
    for variant, samples in scraped.items():
        for t, v in samples:
            if t0 <= t <= t1 and math.isfinite(v):
                at.setdefault(t, {})[variant] = v
    for i, variant in enumerate(names[:-1]):
        line = " ".join(
            f"{frame.x(t)},{frame.y(sum(split.get(n, 0.0) for n in names[: i + 1]))}"
            for t, split in sorted(at.items())
        )
        if line:
            frame.parts.append(
                _el(
                    "polyline",
                    class_="weight-series",
                    data_variant=variant,
                    stroke="#24292f",
                    points=line,
                )  # fmt: skip
            )
    legend = "".join(
        f'<span><i class="swatch" style="background:{colour}"></i>{esc(v)}</span>'
        for v, colour in zip(names, colours, strict=True)
    )
    note = (
        '<span class="muted">bands: the split the operator set (status.trafficHistory); '
        "dotted: the split Prometheus scraped (rankexp_experiment_traffic_weight)</span>"
    )
    return frame.svg("traffic-chart", "traffic split over time") + (
        f'<div class="legend">{legend}{note}</div>'
    )


# ------------------------------------------------------------------------- the Experiment


@dataclass
class Evidence:
    """What Prometheus said about one Experiment (or why it could not)."""

    points: list[Point] = field(default_factory=list)
    weights: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    error: str | None = None
    url: str = ""


def decision_view(status: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(verdict, winner, why, tone) of the current decision."""
    phase = status.get("phase") or "Pending"
    action = status.get("lastAction") or {}
    analysis = status.get("analysis") or {}
    if phase in CONCLUDED:
        winner = status.get("winner") or action.get("winner") or ""
        why = action.get("reason") or analysis.get("reason") or ""
        return str(phase), str(winner), str(why), _tone(phase)
    if phase == "Failed":
        degraded: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Degraded"), {}
        )
        return "Failed", "", str(degraded.get("message") or ""), "bad"
    decision = analysis.get("decision")
    if not decision:
        return str(phase), "", "No analysis yet.", "neutral"
    code = analysis.get("reasonCode")
    verdict = f"{decision} ({code})" if code else str(decision)
    return (
        verdict,
        str(analysis.get("winner") or ""),
        str(analysis.get("reason") or ""),
        _tone(decision),
    )


def _decision_box(status: Mapping[str, Any]) -> str:
    verdict, winner, why, tone = decision_view(status)
    win = f' · winner <b class="winner">{esc(winner)}</b>' if winner else ""
    return (
        f'<div id="decision" class="decision {tone}"><span class="verdict">{esc(verdict)}</span>'
        f'{win}<div class="why">{esc(why)}</div></div>'
    )


def _analyses_table(points: Sequence[Point], variant: str, metric: str, relative: bool) -> str:
    fmt = pct if relative else num
    key = "relative_" if relative else ""
    rows = []
    for p in reversed(points):
        c = p.comparisons.get((variant, metric), {})
        lo, hi = c.get(f"{key}ci_low"), c.get(f"{key}ci_high")
        exposures = " ".join(f"{k}={int(v)}" for k, v in sorted(p.exposures.items()))
        rows.append(
            [
                esc(iso(p.time)),
                f'<span class="{_tone(p.decision)}">{esc(p.decision or "-")}</span>',
                esc(fmt(c.get(f"{key}lift"))),
                esc(f"[{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else "-"),
                esc(num(c.get("p_value"))),
                esc(num(c.get("p_value_adjusted"))),
                esc(num(p.srm_p_value)),
                esc(exposures or "-"),
            ]
        )
    return _table(
        ["Time", "Decision", "Lift", "CI", "p", "Holm p", "SRM p", "Exposures"], rows, "analyses"
    )


def _health(spec: Mapping[str, Any], analysis: Mapping[str, Any]) -> str:
    out = []
    threshold = _finite((spec.get("analysis") or {}).get("srmPValue")) or DEFAULT_SRM_P_VALUE
    srm = _finite(analysis.get("srmPValue"))
    if srm is None:
        srm_state, tone = "unknown", "neutral"
    elif srm >= threshold:
        srm_state, tone = "OK", "good"
    else:
        srm_state, tone = "Mismatch", "bad"
    out.append(
        f'<h3>Sample ratio</h3><p id="srm">Sample-ratio check: <span class="badge {tone}">'
        f"{esc(srm_state)}</span> p = {esc(num(srm))} (mismatch below {esc(num(threshold))})</p>"
    )
    variants = analysis.get("variants") or []
    total = sum(_finite(v.get("exposures")) or 0.0 for v in variants)
    if variants:
        out.append(
            _table(
                ["Variant", "Exposures", "Observed share", "Expected share"],
                (
                    [
                        esc(v.get("name")),
                        esc(num(v.get("exposures"), 6)),
                        esc(
                            pct((_finite(v.get("exposures")) or 0.0) / total, False)
                            if total
                            else "-"
                        ),
                        esc(pct(v.get("expectedShare"), False)),
                    ]
                    for v in variants
                ),
                "srm",
            )
        )
    drift_spec = (spec.get("analysis") or {}).get("drift") or {}
    limits = (
        f" (drift when PSI above {esc(num(drift_spec.get('psi', 0.2)))} or KS p below "
        f"{esc(num(drift_spec.get('ksPValue', 0.05)))})"
    )
    out.append(f"<h3>Drift{limits}</h3>")
    drift = analysis.get("drift") or []
    if drift:
        out.append(
            _table(
                [
                    "Histogram",
                    "Variant",
                    "PSI",
                    "KS statistic",
                    "KS p",
                    "State",
                    "Gates the decision",
                ],
                (
                    [
                        esc(d.get("histogram")),
                        esc(d.get("variant")),
                        esc(num(d.get("psi"))),
                        esc(num(d.get("ksStatistic"))),
                        esc(num(d.get("ksPValue"))),
                        _badge(
                            {True: "OK", False: "Drift"}.get(d.get("ok"), "unknown"),
                            {True: "good", False: "bad"}.get(d.get("ok"), "neutral"),
                        ),
                        esc("yes" if d.get("gating", True) else "no"),
                    ]
                    for d in drift
                ),
                "drift",
            )
        )
    else:
        out.append('<p class="empty">No drift check in the last analysis.</p>')
    guardrails = analysis.get("guardrails") or []
    if guardrails:
        out.append("<h3>Guardrails</h3>")
        out.append(
            _table(
                ["Metric", "Variant", "Value", "Limit", "Kind", "State"],
                (
                    [
                        esc(g.get("metric")),
                        esc(g.get("variant")),
                        esc(num(g.get("value"), 4)),
                        esc(num(g.get("limit"), 4)),
                        esc(g.get("kind")),
                        _badge(
                            {True: "OK", False: "Breached"}.get(g.get("ok"), "unknown"),
                            {True: "good", False: "bad"}.get(g.get("ok"), "neutral"),
                        ),
                    ]
                    for g in guardrails
                ),
                "guardrails",
            )
        )
    return "".join(out)


def _event_time(e: Mapping[str, Any]) -> float | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        t = epoch(e.get(key))
        if t is not None:
            return t
    return epoch((e.get("metadata") or {}).get("creationTimestamp"))


def decision_log(
    status: Mapping[str, Any], events: Sequence[Mapping[str, Any]], points: Sequence[Point]
) -> list[tuple[float, str, str, str, str]]:
    """(time, what, headline, detail, tone) entries, newest first: the last action, every
    traffic period, every change of the analysis' decision and the Experiment's Events."""
    log: list[tuple[float, str, str, str, str]] = []
    action = status.get("lastAction") or {}
    if (t := epoch(action.get("time"))) is not None:
        outcome = action.get("outcome")
        head = f"#{action.get('seq')} {action.get('type')}" + (f": {outcome}" if outcome else "")
        if action.get("winner"):
            head += f", winner {action.get('winner')}"
        detail = f"{action.get('reason') or ''} (weights {weights_text(action.get('weights'))})"
        log.append((t, "Last action", head, detail, _tone(outcome or action.get("type"))))
    for period in traffic_periods(status):
        weights = " ".join(f"{k}={num(v)}" for k, v in period.weights.items())
        settled = (
            f"served by every router after {period.settled - period.since:.0f}s"
            if period.settled is not None
            else "not yet served by every router"
        )
        log.append((period.since, "Traffic", weights, settled, "neutral"))
    previous = None
    for p in points:
        if p.decision and p.decision != previous:
            log.append((p.time, "Analysis", p.decision, "decision changed", _tone(p.decision)))
        previous = p.decision or previous
    for e in events:
        t = _event_time(e)
        if t is None:
            continue
        count = int(e.get("count") or 1)
        detail = str(e.get("message") or "") + (f" (×{count})" if count > 1 else "")
        tone = "bad" if e.get("type") == "Warning" else _tone(e.get("reason"))
        log.append((t, f"Event ({e.get('type') or 'Normal'})", str(e.get("reason")), detail, tone))
    return sorted(log, key=lambda entry: entry[0], reverse=True)


def metric_choice(spec: Mapping[str, Any], status: Mapping[str, Any], asked: str | None,
                  points: Sequence[Point]) -> tuple[str, list[str]]:  # fmt: skip
    """(the metric to chart, every metric that can be): ``asked`` if compared, else the
    primary metric (interleaving: the preference share)."""
    analysis = status.get("analysis") or {}
    interleaving = spec.get("mode") == "interleaving" or bool(analysis.get("interleaving"))
    primary = (
        PREFERENCE
        if interleaving
        else str(
            analysis.get("primaryMetric")
            or (spec.get("analysis") or {}).get("primaryMetric")
            or "ctr"
        )
    )
    known = {m for p in points for _, m in p.comparisons}
    known |= {str(c.get("metric")) for c in analysis.get("comparisons") or []}
    choices = [primary] + sorted(known - {primary})
    return (asked if asked in choices else primary), choices


def render_experiment(
    obj: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    evidence: Evidence,
    now: float,
    metric: str | None = None,
    events_error: str | None = None,
    refresh: int = 0,
) -> str:
    """One Experiment's page (pure)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    analysis = status.get("analysis") or {}
    ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    control = str(spec.get("control") or "control")
    variants = [str(v.get("name")) for v in spec.get("variants") or []]
    treatments = [v for v in variants if v != control] or ["treatment"]
    phase = status.get("phase") or "Pending"
    body: list[str] = [f"<h1>{esc(ns)}/{esc(name)} {_badge(phase)}</h1>"]
    facts = [
        ("Control", control),
        ("Variants", ", ".join(variants) or "-"),
        ("Traffic", weights_text(status.get("traffic"))),
        ("Started", status.get("startedAt") or "-"),
        ("Last analysis", analysis.get("time") or "-"),
        ("Method", analysis.get("method") or (spec.get("analysis") or {}).get("method") or "-"),
        ("Lift", pct(analysis.get("lift"))),
        ("p", num(analysis.get("pValue"))),
    ]
    body.append(
        '<div class="facts">'
        + "".join(f"<span>{esc(k)} <b>{esc(v)}</b></span>" for k, v in facts)
        + "</div>"
    )
    body.append(_decision_box(status))

    points = list(evidence.points)
    if evidence.error:
        body.append(
            f'<p class="notice" id="prometheus-notice">Prometheus at {esc(evidence.url)} '
            f"could not be read ({esc(evidence.error)}): the charts show what status holds "
            "(the latest analysis only).</p>"
        )
    chosen, choices = metric_choice(spec, status, metric, points)
    from_status = False
    if not any((v, chosen) in p.comparisons for p in points for v in treatments):
        latest = status_point(analysis, treatments[0], chosen)
        if latest is not None:
            points, from_status = [latest], True

    body.append(f"<h2>Lift over time: {esc(chosen)}</h2>")
    if len(choices) > 1:
        links = "".join(
            _el(
                "a",
                esc(m),
                class_="current" if m == chosen else "",
                href=experiment_href(ns, name, m),
            )  # fmt: skip
            for m in choices
        )
        body.append(f'<nav class="metrics">Metric: {links}</nav>')
    if from_status and not evidence.error:
        body.append(
            '<p class="notice">No rankexp_analysis_* series for this Experiment in '
            f"Prometheus at {esc(evidence.url)} (does it scrape the operator's /metrics?): "
            "the latest analysis from status only.</p>"
        )
    colours = dict(zip(variants, _colours(variants), strict=True))
    for variant in treatments:
        series = lift_series(points, variant, chosen)
        body.append(
            f"<h3>{esc(variant)} vs {esc(control)}: "
            f"{'relative lift' if series.relative else 'lift'} and confidence interval</h3>"
        )
        body.append(lift_chart(series, colours.get(variant, PALETTE[1])))
        if points and not from_status:
            body.append(
                f"<details><summary>Every analysis ({len(points)})</summary>"
                f"{_analyses_table(points, variant, chosen, series.relative)}</details>"
            )

    body.append("<h2>Traffic</h2>")
    periods = traffic_periods(status)
    times = [p.since for p in periods] + [p.settled for p in periods if p.settled is not None]
    times += [
        t
        for t in (epoch(analysis.get("time")), epoch((status.get("lastAction") or {}).get("time")))
        if t
    ]
    if phase in CONCLUDED and times:
        end = max(times)
        end += max((end - periods[0].since) * 0.1, 5.0) if periods else 5.0
    else:
        end = now
    body.append(traffic_chart(periods, variants, evidence.weights, end))
    if periods:
        rows = []
        for j, p in enumerate(periods):
            stop = periods[j + 1].since if j + 1 < len(periods) else None
            rows.append(
                [
                    esc(iso(p.since)),
                    esc(iso(p.settled)),
                    esc(" ".join(f"{k}={num(v)}" for k, v in p.weights.items())),
                    esc(
                        _duration((stop if stop is not None else end) - p.since)
                        + ("" if stop else " (in force)")
                    ),
                ]
            )
        body.append(
            _table(
                ["Since", "Served by every router", "Weights %", "Lasted"], rows, "traffic-history"
            )
        )

    body.append("<h2>Health</h2>")
    body.append(_health(spec, analysis))
    conditions = status.get("conditions") or []
    if conditions:
        body.append("<h3>Conditions</h3>")
        body.append(
            _table(
                ["Type", "Status", "Reason", "Message", "Since"],
                (
                    [
                        esc(c.get("type")),
                        esc(c.get("status")),
                        esc(c.get("reason")),
                        esc(c.get("message")),
                        esc(c.get("lastTransitionTime")),
                    ]  # fmt: skip
                    for c in conditions
                ),
                "conditions",
            )
        )

    body.append("<h2>Decision log</h2>")
    if events_error:
        body.append(f'<p class="notice">Events could not be read: {esc(events_error)}</p>')
    log = decision_log(status, events, [] if from_status else points)
    if log:
        body.append(
            _table(
                ["Time", "What", "", "Detail"],
                (
                    [
                        esc(iso(t)),
                        esc(what),
                        f'<span class="{tone}">{esc(head)}</span>',
                        esc(detail),
                    ]
                    for t, what, head, detail, tone in log
                ),
                "decision-log",
            )
        )
    else:
        body.append('<p class="empty">Nothing happened yet.</p>')
    crumb = f' <span class="crumb">› {esc(ns)}/{esc(name)}</span>'
    return _page(f"{ns}/{name} · rankexp", crumb, "".join(body), refresh)


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
