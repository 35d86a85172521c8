"""The geometry of the experiment page's charts (rankexp.page.charts): pure numbers, no
markup."""

from __future__ import annotations

import math

import pytest

from rankexp.page.charts import (
    Frame,
    LiftPoint,
    LiftSeries,
    Period,
    lift_chart,
    nice_ticks,
    traffic_chart,
)
from rankexp.page.formats import PALETTE, colours

T0 = 1_796_000_000.0


def step_of(ticks: list[float]) -> float:
    steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1, ticks  # evenly spaced
    return steps.pop()


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(-0.03, 0.42), (0, 100), (-0.8, 1.3), (0.0012, 0.0047), (-250.0, -3.0), (17.0, 23500.0)],
)
def test_nice_ticks_cover_the_range_with_round_steps(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    step = step_of(ticks)
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 9) in (1.0, 2.0, 5.0)
    assert lo <= ticks[0] < lo + step and hi - step < ticks[-1] <= hi + 1e-12
    assert 3 <= len(ticks) <= 11
    # every tick is a whole multiple of the step
    assert all(abs(t / step - round(t / step)) < 1e-6 for t in ticks)


def test_a_frame_maps_values_and_times_linearly() -> None:
    frame = Frame(T0, T0 + 600, -0.2, 0.6)
    assert frame.y(0.6) == frame.top and frame.y(-0.2) == frame.height - frame.bottom
    assert frame.x(T0) == frame.left and frame.x(T0 + 600) == frame.width - frame.right
    ys = [frame.y(v) for v in (-0.2, 0.0, 0.2, 0.4)]
    gaps = [b - a for a, b in zip(ys, ys[1:], strict=False)]
    assert gaps == pytest.approx([gaps[0]] * 3, abs=0.02) and gaps[0] < 0  # up is smaller y
    times = frame.time_ticks()
    assert [t.at for t in times] == pytest.approx(
        [frame.left + i * (frame.width - frame.left - frame.right) / 4 for i in range(5)]
    )
    assert [t.anchor for t in times] == ["start", "middle", "middle", "middle", "end"]
    labels = frame.value_ticks(str)
    assert [t.label for t in labels] == [str(v) for v in nice_ticks(-0.2, 0.6, 6)]


def series(values: list[tuple[float, float | None, float | None]]) -> LiftSeries:
    return LiftSeries(
        "treatment",
        "ctr",
        True,
        [LiftPoint(T0 + 60 * i, v, lo, hi, 0.1, "Continue") for i, (v, lo, hi) in
         enumerate(values)],
    )  # fmt: skip


def test_a_lift_point_lies_where_its_value_maps_and_zero_on_the_zero_line() -> None:
    chart = lift_chart(series([(0.0, -0.1, 0.1), (0.1, 0.0, 0.2), (0.2, 0.1, 0.3),
                               (0.3, 0.25, 0.35)]))  # fmt: skip
    assert chart is not None
    frame = chart.axes.frame
    assert [m.y for m in chart.marks] == [frame.y(m.point.value) for m in chart.marks]
    assert chart.marks[0].y == chart.zero == frame.y(0.0)
    # equal steps of lift are equal steps on the chart, up the page
    ys = [m.y for m in chart.marks]
    assert [b - a for a, b in zip(ys, ys[1:], strict=False)] == pytest.approx(
        [ys[1] - ys[0]] * 3, abs=0.02
    )
    assert ys[1] < ys[0]
    xs = [m.x for m in chart.marks]
    assert xs == sorted(xs) and frame.left < xs[0] and xs[-1] < frame.width - frame.right
    assert chart.line.split() == [f"{m.x},{m.y}" for m in chart.marks]


def test_the_interval_bar_contains_its_point_and_stays_in_the_frame() -> None:
    chart = lift_chart(series([(0.5, -4.5, 5.5), (0.3, -0.1, 0.7), (0.32, 0.12, 0.52),
                               (0.31, 0.21, 0.41), (0.2, None, None)]))  # fmt: skip
    assert chart is not None
    frame = chart.axes.frame
    top, bottom = frame.y(frame.y1), frame.y(frame.y0)
    for m in chart.marks[:4]:
        bar = m.interval
        assert bar is not None
        assert top <= bar.y_high <= m.y <= bar.y_low <= bottom
        if not bar.clipped:
            assert (bar.y_low, bar.y_high) == (
                frame.y(m.point.low or 0),
                frame.y(m.point.high or 0),
            )
            assert bar.caps == [bar.y_low, bar.y_high]
    first = chart.marks[0].interval
    assert first is not None and first.clipped and first.caps == []  # cut at both edges
    assert [m.interval is None for m in chart.marks] == [False] * 4 + [True]


def test_no_points_no_chart() -> None:
    assert lift_chart(LiftSeries("treatment", "ctr", True, [])) is None
    assert traffic_chart([], ["control", "treatment"], {}, T0) is None


def split(**weights: float) -> dict[str, float]:
    return dict(weights)


def test_traffic_periods_are_as_wide_as_they_lasted_and_fill_the_frame() -> None:
    periods = [
        Period(T0, T0 + 2, split(control=90, treatment=10)),
        Period(T0 + 100, T0 + 101, split(control=75, treatment=25)),
        Period(T0 + 400, None, split(control=50, treatment=50)),
    ]
    chart = traffic_chart(periods, ["control", "treatment"], {}, T0 + 1000)
    assert chart is not None
    frame = chart.axes.frame
    control, treatment = chart.layers
    widths = [b.width for b in control.bands]
    assert widths == [b.width for b in treatment.bands]
    durations = [100, 300, 600]
    assert [w / d for w, d in zip(widths, durations, strict=True)] == pytest.approx(
        [widths[0] / 100] * 3, rel=1e-3
    )
    assert sum(widths) == pytest.approx(frame.width - frame.left - frame.right, abs=0.05)
    assert control.bands[0].x == frame.left
    assert [b.x for b in control.bands[1:]] == pytest.approx(
        [b.x + b.width for b in control.bands[:-1]], abs=0.02
    )
    # stacked: each column fills the height, each band as tall as its weight
    inner = frame.y(0.0) - frame.y(100.0)
    for c, t, p in zip(control.bands, treatment.bands, periods, strict=True):
        assert c.height + t.height == pytest.approx(inner, abs=0.02)
        assert c.height / inner == pytest.approx(p.weights["control"] / 100, abs=1e-3)
        assert t.y + t.height == pytest.approx(c.y, abs=0.02)  # treatment on top of control


def test_the_last_period_ends_at_the_end_given() -> None:
    periods = [Period(T0, T0 + 1, split(control=50, treatment=50))]
    short = traffic_chart(periods, ["control", "treatment"], {}, T0 + 10)
    long = traffic_chart(periods, ["control", "treatment"], {}, T0 + 1000)
    assert short is not None and long is not None
    assert short.axes.frame.t1 == T0 + 10 and long.axes.frame.t1 == T0 + 1000
    assert short.layers[0].bands[0].width == long.layers[0].bands[0].width  # the whole frame


def test_colours_follow_the_order_of_spec_variants() -> None:
    periods = [Period(T0, T0 + 1, split(a=20, b=30, c=40, z=10))]
    chart = traffic_chart(periods, ["b", "a", "c"], {}, T0 + 100)
    assert chart is not None
    # spec order first, then a variant only the history names
    assert [layer.variant for layer in chart.layers] == ["b", "a", "c", "z"]
    assert [layer.colour for layer in chart.layers] == list(PALETTE[:4])
    assert chart.legend == [("b", PALETTE[0]), ("a", PALETTE[1]), ("c", PALETTE[2]),
                            ("z", PALETTE[3])]  # fmt: skip
    # stacked in that order from the bottom: b lowest
    bottoms = [layer.bands[0].y + layer.bands[0].height for layer in chart.layers]
    assert bottoms == sorted(bottoms, reverse=True)
    assert colours([str(i) for i in range(12)])[10:] == [PALETTE[0], PALETTE[1]]


def test_the_scraped_split_lines_run_along_the_band_boundaries() -> None:
    periods = [Period(T0, T0 + 1, split(control=50, treatment=50))]
    scraped = {"control": [(T0 + 10, 50.0), (T0 + 20, 40.0), (T0 + 5000, 0.0)],
               "treatment": [(T0 + 10, 50.0), (T0 + 20, 60.0)]}  # fmt: skip
    chart = traffic_chart(periods, ["control", "treatment"], scraped, T0 + 100)
    assert chart is not None
    frame = chart.axes.frame
    (line,) = chart.lines  # one boundary between two variants
    assert line.variant == "control"
    # samples beyond the chart's end are left out; y is the top of control's band
    assert line.points.split() == [f"{frame.x(T0 + 10)},{frame.y(50.0)}",
                                   f"{frame.x(T0 + 20)},{frame.y(40.0)}"]  # fmt: skip
