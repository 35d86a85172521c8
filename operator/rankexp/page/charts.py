"""The geometry of the page's two SVG charts, as plain data the templates draw
(``templates/charts.html``): the lift of a treatment at every analysis with its
confidence interval, and the traffic split over time. Pure: numbers in, coordinates,
paths and tooltips out; no markup here."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rankexp.page.formats import PALETTE, colours, iso, num, pct, tone

#: the fill of a lift point by the tone of the decision taken at that analysis
DECISION_FILL = {"good": "#1a7f37", "bad": "#cf222e", "warn": "#bf8700"}


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


@dataclass(frozen=True)
class Tick:
    """A tick at ``at`` (y of a value tick, x of a time tick) with its label."""

    at: float
    label: str
    anchor: str = "end"


@dataclass(frozen=True)
class Frame:
    """Plot area and linear scales of one chart: time ``t0..t1`` on x, ``y0..y1`` on y."""

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

    @property
    def x_end(self) -> int:
        return self.width - self.right

    @property
    def base(self) -> int:
        """The y of the time axis."""
        return self.height - self.bottom

    def x(self, t: float) -> float:
        span = self.t1 - self.t0 or 1.0
        return round(self.left + (t - self.t0) / span * (self.width - self.left - self.right), 2)

    def y(self, v: float) -> float:
        span = self.y1 - self.y0 or 1.0
        inner = self.height - self.top - self.bottom
        return round(self.top + (self.y1 - v) / span * inner, 2)

    def value_ticks(self, label: Callable[[float], str]) -> list[Tick]:
        """Grid lines at round values, labelled ``label(value)``."""
        return [Tick(self.y(v), label(v)) for v in nice_ticks(self.y0, self.y1, 6)]

    def time_ticks(self) -> list[Tick]:
        """Five times from ``t0`` to ``t1`` (UTC), to the second on short charts."""
        span = self.t1 - self.t0
        fmt = "%H:%M:%S" if span < 3 * 3600 else ("%H:%M" if span < 86400 else "%m-%d %H:%M")
        out = []
        for i in range(5):
            t = self.t0 + span * i / 4
            anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
            out.append(Tick(self.x(t), datetime.fromtimestamp(t, UTC).strftime(fmt), anchor))
        return out


@dataclass(frozen=True)
class Axes:
    frame: Frame
    values: list[Tick]
    times: list[Tick]


def axes(frame: Frame, label: Callable[[float], str]) -> Axes:
    return Axes(frame, frame.value_ticks(label), frame.time_ticks())


# ------------------------------------------------------------------------- the lift


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


@dataclass(frozen=True)
class Interval:
    """A confidence interval drawn as a vertical bar from ``y_low`` to ``y_high``; a
    bound beyond the plotted range ends at its edge (``clipped``, dashed) without a cap."""

    y_low: float
    y_high: float
    clipped: bool
    caps: list[float]


@dataclass(frozen=True)
class LiftMark:
    """One analysis as drawn: its point, interval, fill and tooltip."""

    point: LiftPoint
    x: float
    y: float
    fill: str
    tip: str
    interval: Interval | None


@dataclass(frozen=True)
class LiftChart:
    series: LiftSeries
    label: str
    axes: Axes
    zero: float
    line: str  # polyline points through the lifts ("" for a single point)
    marks: list[LiftMark]
    colour: str


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


def lift_label(series: LiftSeries) -> str:
    what = "relative lift" if series.relative else "lift"
    return f"{what} of {series.variant} on {series.metric} at every analysis, with its CI"


def _interval(frame: Frame, p: LiftPoint) -> Interval | None:
    if p.low is None or p.high is None:
        return None
    low, high = max(p.low, frame.y0), min(p.high, frame.y1)
    y_lo, y_hi = frame.y(low), frame.y(high)
    caps = [y for y, cut in ((y_lo, low != p.low), (y_hi, high != p.high)) if not cut]
    return Interval(y_lo, y_hi, (low, high) != (p.low, p.high), caps)


def lift_chart(series: LiftSeries, colour: str = PALETTE[1]) -> LiftChart | None:
    """The lift at every analysis with its confidence interval as a vertical bar (None
    without a point)."""
    pts = series.points
    if not pts:
        return None
    lo, hi = lift_range(pts)
    pad = (hi - lo) * 0.08 or (0.01 if series.relative else abs(hi) * 0.1 or 0.01)
    t0, t1 = min(p.time for p in pts), max(p.time for p in pts)
    tpad = (t1 - t0) * 0.04 or 30.0
    frame = Frame(t0 - tpad, t1 + tpad, lo - pad, hi + pad)
    fmt = pct if series.relative else num
    what = "relative lift" if series.relative else "lift"
    marks = []
    for p in pts:
        ci = f" [{fmt(p.low)}, {fmt(p.high)}]" if p.low is not None and p.high is not None else ""
        tip = f"{iso(p.time)}: {what} {fmt(p.value)}{ci}, p {num(p.p)}, {p.decision or '-'}"
        fill = DECISION_FILL.get(tone(p.decision), colour)
        marks.append(LiftMark(p, frame.x(p.time), frame.y(p.value), fill, tip, _interval(frame, p)))
    line = " ".join(f"{m.x},{m.y}" for m in marks) if len(marks) > 1 else ""
    return LiftChart(series, lift_label(series), axes(frame, fmt), frame.y(0.0), line, marks,
                     colour)  # fmt: skip


# ------------------------------------------------------------------------- the traffic


@dataclass(frozen=True)
class Period:
    """The weights the operator set at ``since``; every router served them from
    ``settled`` (None: not yet)."""

    since: float
    settled: float | None
    weights: dict[str, float]


@dataclass(frozen=True)
class Band:
    """One variant's share of one period: a rectangle."""

    x: float
    y: float
    width: float
    height: float
    tip: str


@dataclass(frozen=True)
class Layer:
    """One variant's bands, stacked on the variants before it."""

    variant: str
    colour: str
    bands: list[Band]


@dataclass(frozen=True)
class ScrapedLine:
    """The scraped split: the top of ``variant``'s band as Prometheus saw it."""

    variant: str
    points: str


@dataclass(frozen=True)
class TrafficChart:
    axes: Axes
    layers: list[Layer]
    lines: list[ScrapedLine]
    legend: list[tuple[str, str]]  # (variant, colour)


def variant_order(variants: Sequence[str], periods: Sequence[Period]) -> list[str]:
    """spec.variants, then any other variant a period names (sorted)."""
    return list(variants) + sorted({v for p in periods for v in p.weights} - set(variants))


def traffic_chart(
    periods: Sequence[Period],
    variants: Sequence[str],
    scraped: Mapping[str, Sequence[tuple[float, float]]],
    end: float,
) -> TrafficChart | None:
    """The split over time: the weights the operator set (status.trafficHistory) as
    stacked bands, one layer per variant in the order of ``variants``, each period as wide
    as it lasted (the last one up to ``end``), and the split Prometheus scraped
    (``rankexp_experiment_traffic_weight``) as lines between the bands. None without a
    period."""
    if not periods:
        return None
    t0 = periods[0].since
    t1 = max(end, periods[-1].since + 1.0)
    frame = Frame(t0, t1, 0.0, 100.0, height=220)
    names = variant_order(variants, periods)
    palette = colours(names)
    below = [0.0] * len(periods)
    layers = []
    for variant, colour in zip(names, palette, strict=True):
        bands = []
        for j, p in enumerate(periods):
            w = p.weights.get(variant, 0.0)
            stop = periods[j + 1].since if j + 1 < len(periods) else t1
            if w > 0:
                x, top = frame.x(p.since), frame.y(below[j] + w)
                tip = f"{variant} {num(w)}% from {iso(p.since)}"
                bands.append(Band(x, top, round(frame.x(stop) - x, 2),
                                  round(frame.y(below[j]) - top, 2), tip))  # fmt: skip
            below[j] += w
        layers.append(Layer(variant, colour, bands))
    at: dict[float, dict[str, float]] = {}
    for variant, samples in scraped.items():
        for t, v in samples:
            if t0 <= t <= t1 and math.isfinite(v):
                at.setdefault(t, {})[variant] = v
    lines = []
    for i, variant in enumerate(names[:-1]):
        line = " ".join(
            f"{frame.x(t)},{frame.y(sum(split.get(n, 0.0) for n in names[: i + 1]))}"
            for t, split in sorted(at.items())
        )
        if line:
            lines.append(ScrapedLine(variant, line))
    return TrafficChart(axes(frame, lambda v: f"{v:g}%"), layers, lines,
                        list(zip(names, palette, strict=True)))  # fmt: skip
