"""An Experiment's status as the text tables of ``rankexp status`` and ``--history`` (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rankexp.prom.evidence import Point


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{100.0 * value:+.2f}%"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart (as kubectl prints)."""
    text_rows = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in text_rows) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in text_rows
    )


def render(obj: Mapping[str, Any]) -> str:
    """Phase, traffic, conditions and the latest evidence of one Experiment."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    out: list[str] = []
    out.append(f"Experiment {meta.get('namespace', '')}/{meta.get('name', '')}")
    action = status.get("lastAction") or {}
    stage = (
        f" (stage {int(action.get('step', 0)) + 1}/{action.get('stages', 1)})"
        if action.get("stages", 1) > 1
        else ""
    )
    out.append(
        f"Phase: {status.get('phase') or '-'}   Winner: {status.get('winner') or '-'}   "
        f"Started: {status.get('startedAt') or '-'}"
    )
    if action:
        out.append(
            f"Last action: #{action.get('seq')} {action.get('type')} at {action.get('time')}"
            f"{stage}: {action.get('reason', '')}"
        )
    for c in status.get("conditions") or []:
        message = f": {c['message']}" if c.get("message") else ""
        out.append(f"  {c.get('type')}={c.get('status')} {c.get('reason')}{message}")

    weights = {t.get("variant"): t.get("weight") for t in status.get("traffic") or []}
    wanted = {v.get("name"): v.get("replicas", 1) for v in spec.get("variants") or []}
    scaled_down = set(action.get("scaledDown") or [])
    rows = []
    for v in status.get("variants") or []:
        name = v.get("name")
        want = 0 if name in scaled_down else wanted.get(name, 1)
        rows.append(
            [
                name + (" (control)" if name == spec.get("control") else ""),
                _fmt(weights.get(name)),
                f"{v.get('readyReplicas', 0)}/{want}",
                _fmt(v.get("exposures")),
                _fmt(v.get("impressions")),
                _fmt(v.get("ctr")),
                _fmt(v.get("latencyP95Ms"), 3),
                _fmt(v.get("errorRate"), 3),
            ]
        )
    out.append("")
    out.append(
        table(
            ["VARIANT", "WEIGHT%", "READY", "EXPOSURES", "IMPRESSIONS", "CTR", "P95-MS", "ERRORS"],
            rows,
        )
    )
    history = status.get("trafficHistory") or []
    if len(history) > 1:
        out.append("")
        out.append("Traffic history:")
        for period in history:
            split = ", ".join(f"{w['variant']}={w['weight']}" for w in period.get("weights", []))
            out.append(f"  since {period.get('since')}: {split}")

    analysis = status.get("analysis")
    if not analysis:
        out.append("")
        out.append("No analysis yet.")
        return "\n".join(out) + "\n"
    window = analysis.get("window") or {}
    out.append("")
    out.append(
        f"Analysis at {analysis.get('time')} over [{window.get('start', '-')}, "
        f"{window.get('end', '-')}]: {analysis.get('decision')} ({analysis.get('reasonCode')})"
    )
    if analysis.get("reason"):
        out.append(f"  {analysis['reason']}")
    comparisons = analysis.get("comparisons") or []
    if comparisons:
        out.append("")
        out.append(
            table(
                ["METRIC", "VARIANT", "LIFT", "REL-LIFT", "REL-CI", "P", "ADJ-P", "TEST", "SIG"],
                [
                    [
                        c.get("metric"),
                        c.get("variant"),
                        _fmt(c.get("lift")),
                        _pct(c.get("relativeLift")),
                        f"[{_pct(c.get('relativeCiLow'))}, {_pct(c.get('relativeCiHigh'))}]",
                        _fmt(c.get("pValue"), 3),
                        _fmt(c.get("pValueAdjusted"), 3),
                        _fmt(c.get("test")),
                        _fmt(c.get("significant")),
                    ]
                    for c in comparisons
                ],
            )
        )
    inter = analysis.get("interleaving")
    if inter:
        out.append("")
        out.append(
            f"Interleaving: preference share {_fmt(inter.get('delta'), 3)} "
            f"[{_fmt(inter.get('ciLow'), 3)}, {_fmt(inter.get('ciHigh'), 3)}], "
            f"p {_fmt(inter.get('pValue'), 3)}; clicked feeds won by control "
            f"{_fmt(inter.get('winsControl'))}, treatment {_fmt(inter.get('winsTreatment'))}, "
            f"ties {_fmt(inter.get('ties'))}; clicking users {_fmt(inter.get('clickingUsers'))}"
        )
    out.append("")
    out.append(f"Sample-ratio check p-value: {_fmt(analysis.get('srmPValue'), 3)}")
    shares = [
        f"{v.get('name')} {_fmt(v.get('exposures'))} (expected {100 * v['expectedShare']:.1f}%)"
        for v in analysis.get("variants") or []
        if isinstance(v.get("expectedShare"), int | float)
    ]
    if shares:
        out.append("  exposures: " + ", ".join(shares))
    guardrails = analysis.get("guardrails") or []
    if guardrails:
        out.append("")
        out.append(
            table(
                ["GUARDRAIL", "VARIANT", "KIND", "VALUE", "LIMIT", "OK"],
                [
                    [
                        g.get("metric"),
                        g.get("variant"),
                        g.get("kind"),
                        _fmt(g.get("value")),
                        _fmt(g.get("limit")),
                        _fmt(g.get("ok")),
                    ]
                    for g in guardrails
                ],
            )
        )
    drift = analysis.get("drift") or []
    if drift:
        out.append("")
        out.append(
            table(
                ["HISTOGRAM", "VARIANT", "PSI", "KS", "KS-P", "OK", "GATING"],
                [
                    [
                        d.get("histogram"),
                        d.get("variant"),
                        _fmt(d.get("psi"), 3),
                        _fmt(d.get("ksStatistic"), 3),
                        _fmt(d.get("ksPValue"), 3),
                        _fmt(d.get("ok")),
                        _fmt(d.get("gating")),
                    ]
                    for d in drift
                ],
            )
        )
    power = analysis.get("requiredSamples") or {}
    if power.get("requiredPerVariant") is not None:
        progress = ", ".join(
            f"{p.get('variant')} {_fmt(p.get('observed'))} ({_fmt(p.get('progressPercent'), 3)}%)"
            for p in power.get("variants") or []
        )
        mde = power.get("mde")
        mde_text = f"{100 * mde:g}%" if isinstance(mde, int | float) else "-"
        out.append("")
        out.append(
            f"Required samples ({power.get('metric')}, {power.get('unit')}; +{mde_text} at "
            f"{_fmt(power.get('power'))} power, fixed horizon): "
            f"{_fmt(power.get('requiredPerVariant'))} per variant; {progress}"
        )
    return "\n".join(out) + "\n"


def render_history(points: Sequence[Point], metric: str | None = None) -> str:
    """``rankexp status NAME --history``: one row per analysis and treatment (pure)."""

    def fmt(x: float | None, pct: bool = False) -> str:
        if x is None:
            return "-"
        return f"{100.0 * x:+.2f}%" if pct else f"{x:.4g}"

    rows = []
    for p in points:
        when = datetime.fromtimestamp(p.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        exposures = " ".join(f"{k}={int(v)}" for k, v in sorted(p.exposures.items()))
        keys = sorted(k for k in p.comparisons if metric is None or k[1] == metric)
        if not keys:
            rows.append(
                [when, p.decision or "-", "-", "-", "-", "-", "-", fmt(p.srm_p_value), exposures]
            )
        for variant, name in keys:
            c = p.comparisons[(variant, name)]
            lo, hi = c.get("relative_ci_low"), c.get("relative_ci_high")
            ci = (
                f"[{fmt(lo, True)}, {fmt(hi, True)}]"
                if lo is not None and hi is not None
                else (f"[{fmt(c.get('ci_low'))}, {fmt(c.get('ci_high'))}]")
            )
            lift = c.get("relative_lift")
            rows.append(
                [
                    when,
                    p.decision or "-",
                    variant,
                    name,
                    fmt(lift, True) if lift is not None else fmt(c.get("lift")),
                    ci,
                    fmt(c.get("p_value")),
                    fmt(p.srm_p_value),
                    exposures,
                ]
            )
    headers = ["TIME", "DECISION", "VARIANT", "METRIC", "LIFT", "CI", "P", "SRM-P", "EXPOSURES"]
    return table(headers, rows) + "\n"
