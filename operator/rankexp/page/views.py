"""What each page shows, as plain data for the templates: the list of Experiments and one
Experiment (facts, decision, lift panels, traffic, health, decision log). Pure: the
Experiment object, its Events and what Prometheus said in; dataclasses of display
strings and chart geometry out. The sample-ratio and count figures are in
:mod:`.health`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankexp.page import charts
from rankexp.page.charts import LiftChart, LiftPoint, LiftSeries, Period, TrafficChart
from rankexp.page.formats import (
    PALETTE,
    colours,
    count,
    duration,
    epoch,
    experiment_href,
    finite,
    iso,
    num,
    pct,
    split_text,
    tone,
    weights_text,
)
from rankexp.page.health import Health, health
from rankexp.prom.evidence import PREFERENCE, Point

CONCLUDED = ("Promoted", "RolledBack", "Inconclusive")


@dataclass
class Evidence:
    """What Prometheus said about one Experiment (or why it could not)."""

    points: list[Point] = field(default_factory=list)
    weights: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    error: str | None = None
    url: str = ""


# ------------------------------------------------------------------------- the list


@dataclass(frozen=True)
class IndexRow:
    namespace: str
    name: str
    href: str
    phase: str
    traffic: str
    winner: str
    lift: str
    p: str
    decision: str
    time: str


@dataclass(frozen=True)
class IndexView:
    where: str
    rows: list[IndexRow]


def index_view(experiments: Sequence[Mapping[str, Any]], scope: str | None) -> IndexView:
    """One row per Experiment, by namespace and name."""
    rows = []
    for obj in experiments:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        analysis = status.get("analysis") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        rows.append(
            IndexRow(ns, name, experiment_href(ns, name), str(status.get("phase") or "Pending"),
                     weights_text(status.get("traffic")), str(status.get("winner") or "-"),
                     pct(analysis.get("lift")), num(analysis.get("pValue")),
                     str(analysis.get("decision") or "-"), str(analysis.get("time") or "-"))
        )  # fmt: skip
    rows.sort(key=lambda r: (r.namespace, r.name))
    return IndexView("all namespaces" if scope is None else f"namespace {scope}", rows)


# ------------------------------------------------------------------------- evidence


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
        value = finite(c.get(key))
        if value is None:
            continue
        out.append(LiftPoint(time=p.time, value=value, low=finite(c.get(low)),
                             high=finite(c.get(high)),
                             p=finite(c.get("p_value_adjusted", c.get("p_value"))),
                             decision=p.decision))  # fmt: skip
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
        figures = {k: v for k, src in fields.items() if (v := finite(c.get(src))) is not None}
        comparisons[(str(c.get("variant")), str(c.get("metric")))] = figures
    inter = analysis.get("interleaving")
    if isinstance(inter, Mapping) and metric == PREFERENCE:
        src = {"lift": "delta", "ci_low": "ciLow", "ci_high": "ciHigh", "p_value": "pValue"}
        figures = {k: v for k, s in src.items() if (v := finite(inter.get(s))) is not None}
        comparisons[(variant, PREFERENCE)] = figures
    exposures = {
        str(v.get("name")): e
        for v in analysis.get("variants") or []
        if (e := finite(v.get("exposures"))) is not None
    }
    return Point(time=t, decision=analysis.get("decision"),
                 srm_p_value=finite(analysis.get("srmPValue")), exposures=exposures,
                 comparisons=comparisons)  # fmt: skip


def traffic_periods(status: Mapping[str, Any]) -> list[Period]:
    """status.trafficHistory as periods, oldest first."""
    out = []
    for h in status.get("trafficHistory") or []:
        since = epoch(h.get("since"))
        if since is None:
            continue
        weights = {
            str(w.get("variant")): f
            for w in h.get("weights") or []
            if (f := finite(w.get("weight"))) is not None
        }
        out.append(Period(since, epoch(h.get("settledAt")), weights))
    return sorted(out, key=lambda p: p.since)


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


# ------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class DecisionView:
    verdict: str
    winner: str
    why: str
    tone: str


def decision_view(status: Mapping[str, Any]) -> DecisionView:
    """The current decision: the outcome once concluded, else the last analysis'."""
    phase = status.get("phase") or "Pending"
    action = status.get("lastAction") or {}
    analysis = status.get("analysis") or {}
    if phase in CONCLUDED:
        winner = status.get("winner") or action.get("winner") or ""
        why = action.get("reason") or analysis.get("reason") or ""
        return DecisionView(str(phase), str(winner), str(why), tone(phase))
    if phase == "Failed":
        degraded: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Degraded"), {}
        )
        return DecisionView("Failed", "", str(degraded.get("message") or ""), "bad")
    decision = analysis.get("decision")
    if not decision:
        return DecisionView(str(phase), "", "No analysis yet.", "neutral")
    code = analysis.get("reasonCode")
    verdict = f"{decision} ({code})" if code else str(decision)
    return DecisionView(verdict, str(analysis.get("winner") or ""),
                        str(analysis.get("reason") or ""), tone(decision))  # fmt: skip


@dataclass(frozen=True)
class LogEntry:
    """A line of the decision log."""

    time: float
    what: str
    head: str
    detail: str
    tone: str


def _event_time(e: Mapping[str, Any]) -> float | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        t = epoch(e.get(key))
        if t is not None:
            return t
    return epoch((e.get("metadata") or {}).get("creationTimestamp"))


def decision_log(
    status: Mapping[str, Any], events: Sequence[Mapping[str, Any]], points: Sequence[Point]
) -> list[LogEntry]:
    """Newest first: the last action, every traffic period, every change of the
    analysis' decision and the Experiment's Events."""
    log: list[LogEntry] = []
    action = status.get("lastAction") or {}
    if (t := epoch(action.get("time"))) is not None:
        outcome = action.get("outcome")
        head = f"#{action.get('seq')} {action.get('type')}" + (f": {outcome}" if outcome else "")
        if action.get("winner"):
            head += f", winner {action.get('winner')}"
        detail = f"{action.get('reason') or ''} (weights {weights_text(action.get('weights'))})"
        log.append(LogEntry(t, "Last action", head, detail, tone(outcome or action.get("type"))))
    for period in traffic_periods(status):
        settled = (
            f"served by every router after {period.settled - period.since:.0f}s"
            if period.settled is not None
            else "not yet served by every router"
        )
        log.append(LogEntry(period.since, "Traffic", split_text(period.weights), settled,
                            "neutral"))  # fmt: skip
    previous = None
    for p in points:
        if p.decision and p.decision != previous:
            log.append(LogEntry(p.time, "Analysis", p.decision, "decision changed",
                                tone(p.decision)))  # fmt: skip
        previous = p.decision or previous
    for e in events:
        t = _event_time(e)
        if t is None:
            continue
        n = int(e.get("count") or 1)
        detail = str(e.get("message") or "") + (f" (×{n})" if n > 1 else "")
        shade = "bad" if e.get("type") == "Warning" else tone(e.get("reason"))
        log.append(LogEntry(t, f"Event ({e.get('type') or 'Normal'})", str(e.get("reason")),
                            detail, shade))  # fmt: skip
    return sorted(log, key=lambda entry: entry.time, reverse=True)


# ------------------------------------------------------------------------- one Experiment


@dataclass(frozen=True)
class AnalysisRow:
    time: str
    decision: str
    tone: str
    lift: str
    ci: str
    p: str
    holm: str
    srm: str
    exposures: str


@dataclass(frozen=True)
class LiftPanel:
    """One treatment against control: the chart and every analysis (None: from status)."""

    variant: str
    what: str
    chart: LiftChart | None
    analyses: list[AnalysisRow] | None


@dataclass(frozen=True)
class MetricLink:
    metric: str
    href: str
    current: bool


@dataclass(frozen=True)
class PeriodRow:
    since: str
    settled: str
    weights: str
    lasted: str


@dataclass(frozen=True)
class ConditionRow:
    type: str
    status: str
    reason: str
    message: str
    since: str


@dataclass(frozen=True)
class ExperimentView:
    namespace: str
    name: str
    phase: str
    facts: list[tuple[str, str]]
    decision: DecisionView
    evidence: Evidence
    control: str
    metric: str
    metric_links: list[MetricLink]
    from_status: bool
    panels: list[LiftPanel]
    traffic: TrafficChart | None
    periods: list[PeriodRow]
    health: Health
    conditions: list[ConditionRow]
    events_error: str | None
    log: list[LogEntry]


def analysis_rows(points: Sequence[Point], variant: str, metric: str,
                  relative: bool) -> list[AnalysisRow]:  # fmt: skip
    """Every analysis, newest first; exposures rounded (see :func:`.formats.count`)."""
    fmt = pct if relative else num
    key = "relative_" if relative else ""
    rows = []
    for p in reversed(points):
        c = p.comparisons.get((variant, metric), {})
        lo, hi = c.get(f"{key}ci_low"), c.get(f"{key}ci_high")
        exposures = " ".join(f"{k}={count(v)}" for k, v in sorted(p.exposures.items()))
        rows.append(
            AnalysisRow(iso(p.time), p.decision or "-", tone(p.decision), fmt(c.get(f"{key}lift")),
                        f"[{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else "-",
                        num(c.get("p_value")), num(c.get("p_value_adjusted")),
                        num(p.srm_p_value), exposures or "-")
        )  # fmt: skip
    return rows


def _traffic_end(status: Mapping[str, Any], periods: Sequence[Period], now: float) -> float:
    """Where the traffic chart ends: now while running, a little after the last thing
    that happened once concluded."""
    if (status.get("phase") or "Pending") not in CONCLUDED:
        return now
    analysis = status.get("analysis") or {}
    times = [p.since for p in periods] + [p.settled for p in periods if p.settled is not None]
    times += [t for t in (epoch(analysis.get("time")),
                          epoch((status.get("lastAction") or {}).get("time"))) if t]  # fmt: skip
    if not times:
        return now
    end = max(times)
    return end + (max((end - periods[0].since) * 0.1, 5.0) if periods else 5.0)


def experiment_view(
    obj: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    evidence: Evidence,
    now: float,
    metric: str | None = None,
    events_error: str | None = None,
) -> ExperimentView:
    """Everything one Experiment's page shows."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    analysis = status.get("analysis") or {}
    ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    control = str(spec.get("control") or "control")
    variants = [str(v.get("name")) for v in spec.get("variants") or []]
    treatments = [v for v in variants if v != control] or ["treatment"]
    facts = [
        ("Control", control),
        ("Variants", ", ".join(variants) or "-"),
        ("Traffic", weights_text(status.get("traffic"))),
        ("Started", str(status.get("startedAt") or "-")),
        ("Last analysis", str(analysis.get("time") or "-")),
        ("Method",
         str(analysis.get("method") or (spec.get("analysis") or {}).get("method") or "-")),
        ("Lift", pct(analysis.get("lift"))),
        ("p", num(analysis.get("pValue"))),
    ]  # fmt: skip

    points = list(evidence.points)
    chosen, choices = metric_choice(spec, status, metric, points)
    from_status = False
    if not any((v, chosen) in p.comparisons for p in points for v in treatments):
        latest = status_point(analysis, treatments[0], chosen)
        if latest is not None:
            points, from_status = [latest], True
    links = [MetricLink(m, experiment_href(ns, name, m), m == chosen) for m in choices]
    palette = dict(zip(variants, colours(variants), strict=True))
    panels = []
    for variant in treatments:
        series = lift_series(points, variant, chosen)
        rows = (
            analysis_rows(points, variant, chosen, series.relative)
            if points and not from_status
            else None
        )
        panels.append(
            LiftPanel(variant, "relative lift" if series.relative else "lift",
                      charts.lift_chart(series, palette.get(variant, PALETTE[1])), rows)
        )  # fmt: skip

    periods = traffic_periods(status)
    end = _traffic_end(status, periods, now)
    period_rows = []
    for j, p in enumerate(periods):
        stop = periods[j + 1].since if j + 1 < len(periods) else None
        lasted = duration((stop if stop is not None else end) - p.since)
        period_rows.append(PeriodRow(iso(p.since), iso(p.settled), split_text(p.weights),
                                     lasted + ("" if stop else " (in force)")))  # fmt: skip

    return ExperimentView(
        namespace=ns,
        name=name,
        phase=str(status.get("phase") or "Pending"),
        facts=facts,
        decision=decision_view(status),
        evidence=evidence,
        control=control,
        metric=chosen,
        metric_links=links if len(choices) > 1 else [],
        from_status=from_status,
        panels=panels,
        traffic=charts.traffic_chart(periods, variants, evidence.weights, end),
        periods=period_rows,
        health=health(spec, status, periods),
        conditions=[
            ConditionRow(
                *(
                    str(c.get(k) or "")
                    for k in ("type", "status", "reason", "message", "lastTransitionTime")
                )
            )
            for c in status.get("conditions") or []
        ],  # fmt: skip
        events_error=events_error,
        log=decision_log(status, events, [] if from_status else points),
    )
