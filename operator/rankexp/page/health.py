"""The health part of an Experiment's page as data: the variants' counts, the
sample-ratio check, drift and guardrails. Pure: spec and status in, display strings out.

The operator's sample-ratio check (``rankexp.experiment``: ``rollout.srm_segments``,
``rollout.expected_weights``) counts only the traffic each weight period served after
every router had it (``settledAt`` and a margin) and compares those counts with the
weights of the settled periods, each weighted by the exposures it served. Status keeps
that expectation (``analysis.variants[].expectedShare``), the counts it tested
(``analysis.variants[].srmExposures``) and the p-value; ``analysis.variants[].exposures``
are the whole window's. So the table shows exactly what the check tested: its counts,
their shares and its expectation. A status written before ``srmExposures`` existed has
only the expectation: then, when a ramp makes the two differ, the whole window's exposures
are shown next to the split the routers served over the window (time-weighted), which is
what those exposures should follow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rankexp.page.charts import Period
from rankexp.page.formats import count, epoch, finite, iso, num, pct

DEFAULT_SRM_P_VALUE = 0.001  # spec.analysis.srmPValue's default


@dataclass(frozen=True)
class VariantRow:
    """status.variants[]: the counts rounded."""

    name: str
    ready: str
    exposures: str
    impressions: str
    clicks: str
    ctr: str


@dataclass(frozen=True)
class SrmRow:
    variant: str
    expected: str  # the check's expectation (status)
    exposures: str  # the whole window's, rounded
    share: str  # of the whole window's exposures
    served: str  # the time-weighted split the routers served over the window


@dataclass(frozen=True)
class SrmView:
    state: str
    tone: str
    p: str
    threshold: str
    rows: list[SrmRow]
    ramped: bool  # the window's split differs from the check's expectation
    window: str
    #: the counts the check tested are in status (srmExposures): the rows show them
    tested: bool = False
    tested_total: str = "-"
    window_total: str = "-"


@dataclass(frozen=True)
class DriftRow:
    histogram: str
    variant: str
    psi: str
    ks_statistic: str
    ks_p: str
    state: str
    tone: str
    gating: str


@dataclass(frozen=True)
class GuardrailRow:
    metric: str
    variant: str
    value: str
    limit: str
    kind: str
    state: str
    tone: str


@dataclass(frozen=True)
class Health:
    variants: list[VariantRow]
    srm: SrmView
    drift_psi: str
    drift_ks: str
    drift: list[DriftRow]
    guardrails: list[GuardrailRow]


def served_split(periods: Sequence[Period], start: float, end: float) -> dict[str, float] | None:
    """The share of traffic (0..1) each variant should have had over ``[start, end]``:
    the split of each period weighted by how long the routers served it, from its
    ``settled`` time (every router had it) to the next settled period's. A period never
    settled was never served; None when nothing was served in the window."""
    served = sorted(
        ((p.settled, p.weights) for p in periods if p.settled is not None), key=lambda s: s[0]
    )
    totals: dict[str, float] = {}
    for i, (since, weights) in enumerate(served):
        lo = max(since, start)
        hi = min(served[i + 1][0] if i + 1 < len(served) else end, end)
        if hi <= lo:
            continue
        for variant, weight in weights.items():
            totals[variant] = totals.get(variant, 0.0) + weight * (hi - lo)
    whole = sum(totals.values())
    return {k: v / whole for k, v in totals.items()} if whole > 0 else None


def _window(status: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The analysis' window: status.analysis.window, else startedAt to the analysis."""
    analysis = status.get("analysis") or {}
    window = analysis.get("window") or {}
    start = epoch(window.get("start")) or epoch(status.get("startedAt"))
    end = epoch(window.get("end")) or epoch(analysis.get("time"))
    return start, end


def srm_view(
    spec: Mapping[str, Any], status: Mapping[str, Any], periods: Sequence[Period]
) -> SrmView:
    analysis = status.get("analysis") or {}
    threshold = finite((spec.get("analysis") or {}).get("srmPValue")) or DEFAULT_SRM_P_VALUE
    p = finite(analysis.get("srmPValue"))
    if p is None:
        state, shade = "unknown", "neutral"
    elif p >= threshold:
        state, shade = "OK", "good"
    else:
        state, shade = "Mismatch", "bad"
    variants = analysis.get("variants") or []
    total = sum(finite(v.get("exposures")) or 0.0 for v in variants)
    start, end = _window(status)
    window = f"{iso(start)} to {iso(end)}"
    if variants and all(finite(v.get("srmExposures")) is not None for v in variants):
        tested = sum(finite(v.get("srmExposures")) or 0.0 for v in variants)
        rows = [
            SrmRow(str(v.get("name")), pct(v.get("expectedShare"), False),
                   count(finite(v.get("srmExposures"))),
                   pct((finite(v.get("srmExposures")) or 0.0) / tested, False) if tested else "-",
                   "-")
            for v in variants
        ]  # fmt: skip
        return SrmView(state, shade, num(p), num(threshold), rows,
                       count(tested) != count(total), window, tested=True,
                       tested_total=count(tested), window_total=count(total))  # fmt: skip
    served = served_split(periods, start, end) if start is not None and end is not None else None
    rows = []
    for v in variants:
        name = str(v.get("name"))
        exposures = finite(v.get("exposures"))
        rows.append(
            SrmRow(name, pct(v.get("expectedShare"), False), count(exposures),
                   pct((exposures or 0.0) / total, False) if total else "-",
                   pct(served.get(name, 0.0), False) if served is not None else "-")
        )  # fmt: skip
    ramped = served is not None and any(r.served != r.expected for r in rows)
    return SrmView(state, shade, num(p), num(threshold), rows, ramped, window)


def variant_rows(status: Mapping[str, Any]) -> list[VariantRow]:
    return [
        VariantRow(str(v.get("name")), num(v.get("readyReplicas")), count(v.get("exposures")),
                   count(v.get("impressions")), count(v.get("clicks")), pct(v.get("ctr"), False))
        for v in status.get("variants") or []
    ]  # fmt: skip


def _state(ok: Any, bad: str) -> tuple[str, str]:
    return {True: ("OK", "good"), False: (bad, "bad")}.get(ok, ("unknown", "neutral"))


def health(spec: Mapping[str, Any], status: Mapping[str, Any], periods: Sequence[Period]) -> Health:
    analysis = status.get("analysis") or {}
    drift_spec = (spec.get("analysis") or {}).get("drift") or {}
    drift = [
        DriftRow(str(d.get("histogram")), str(d.get("variant")), num(d.get("psi")),
                 num(d.get("ksStatistic")), num(d.get("ksPValue")), *_state(d.get("ok"), "Drift"),
                 "yes" if d.get("gating", True) else "no")
        for d in analysis.get("drift") or []
    ]  # fmt: skip
    guardrails = [
        GuardrailRow(str(g.get("metric")), str(g.get("variant")), num(g.get("value"), 4),
                     num(g.get("limit"), 4), str(g.get("kind")), *_state(g.get("ok"), "Breached"))
        for g in analysis.get("guardrails") or []
    ]  # fmt: skip
    return Health(variant_rows(status), srm_view(spec, status, periods),
                  num(drift_spec.get("psi", 0.2)), num(drift_spec.get("ksPValue", 0.05)), drift,
                  guardrails)  # fmt: skip
