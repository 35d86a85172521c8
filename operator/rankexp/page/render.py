"""The pages as HTML: the view models of :mod:`.views` through the Jinja2 templates in
``templates/`` (``base.html`` and its inlined ``page.css``, ``index.html``,
``experiment.html``, ``message.html``, the SVG macros of ``charts.html``). Pure: data in,
a string out.

Every value is escaped (autoescape on; ``finalize`` escapes as :func:`html.escape` does,
quotes included, so attribute values are safe and the output reads as before); a
template that names a value the view does not have fails (``StrictUndefined``)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from rankexp.page import charts
from rankexp.page.charts import LiftSeries
from rankexp.page.formats import COUNTS_NOTE, PALETTE, iso, tone
from rankexp.page.views import Evidence, experiment_view, index_view


def _escape(value: Any) -> Any:
    """What every ``{{ }}`` prints: markup as it is, None as nothing, the rest escaped."""
    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rankexp.page", "templates"),
        autoescape=True,
        finalize=_escape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(iso=iso, tone=tone, counts_note=COUNTS_NOTE)
    return env


def render_message(title: str, message: str) -> str:
    """A page of one message (not found, forbidden, the API server unreachable)."""
    return (
        environment().get_template("message.html").render(title=title, message=message, refresh=0)
    )


def render_index(
    experiments: Sequence[Mapping[str, Any]], scope: str | None, refresh: int = 0
) -> str:
    """The table of Experiments."""
    view = index_view(experiments, scope)
    return environment().get_template("index.html").render(view=view, refresh=int(refresh))


def render_experiment(
    obj: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    evidence: Evidence,
    now: float,
    metric: str | None = None,
    events_error: str | None = None,
    refresh: int = 0,
) -> str:
    """One Experiment's page."""
    view = experiment_view(obj, events, evidence, now, metric, events_error)
    return environment().get_template("experiment.html").render(v=view, refresh=int(refresh))


def lift_chart_svg(series: LiftSeries, colour: str = PALETTE[1]) -> str:
    """The lift chart of ``series`` alone (its ``<svg>``, or the "no analysis" line)."""
    macros = environment().get_template("charts.html").module
    chart = charts.lift_chart(series, colour)
    return str(macros.lift_chart(chart, series.variant, series.metric))  # type: ignore[attr-defined]
