"""The analysis decision record as the Experiment's status evidence (pure, no I/O).

Records of A/B and of interleaving experiments alike (the latter carry an
``interleaving`` block, written to ``status.analysis.interleaving``).

``rankexp.analysis.analyze`` returns a nested dict keyed by metric and variant; a CRD
status needs declared shapes, so maps become lists of named entries here and field names
become camelCase. Nothing is recomputed: every number is the record's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _pair(values: Any) -> tuple[float | None, float | None]:
    if isinstance(values, list | tuple) and len(values) == 2:
        return _num(values[0]), _num(values[1])
    return None, None


def headline(record: Mapping[str, Any]) -> tuple[str | None, float | None, float | None]:
    """(treatment, relative lift, adjusted p) shown in ``kubectl get exp``: the winner's,
    else the treatment with the largest relative lift on the primary metric. For an
    interleaving record: (treatment, preference share, its p-value)."""
    inter = record.get("interleaving")
    if isinstance(inter, Mapping):
        control = record.get("control")
        treatment = next((n for n in record.get("samples", {}) if n != control), None)
        delta = _num(inter.get("delta"))
        if treatment is None or delta is None:
            return None, None, None
        return treatment, delta, _num(inter.get("p_value"))
    primary = record.get("metrics", {}).get(record.get("primary_metric", ""), {})
    control = record.get("control")
    candidates = {
        name: entry
        for name, entry in primary.items()
        if name != control and _num(entry.get("relative_lift")) is not None
    }
    if not candidates:
        return None, None, None
    winner = record.get("winner")
    name = (
        winner
        if winner in candidates
        else max(candidates, key=lambda n: _num(candidates[n]["relative_lift"]) or 0.0)
    )
    entry = candidates[name]
    p = _num(entry.get("p_value_adjusted"))
    return name, _num(entry.get("relative_lift")), p


def analysis_status(
    record: Mapping[str, Any],
    *,
    time: str,
    window: tuple[str, str],
    expected_share: Mapping[str, float],
    pre_window: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """``status.analysis`` from a decision record. ``expected_share`` is the share of
    exposures (0..1) that the weights in force over the window imply per variant."""
    metrics: Mapping[str, Mapping[str, Mapping[str, Any]]] = record.get("metrics", {})
    control = record.get("control")
    samples: Mapping[str, Any] = record.get("samples", {})
    checked: Mapping[str, Any] = (record.get("srm") or {}).get("observed") or {}
    variants = []
    for name in samples:
        estimates = [
            {
                "metric": metric,
                "value": _num(per.get(name, {}).get("estimate")),
                "stdError": _num(per.get(name, {}).get("std_error")),
            }
            for metric, per in metrics.items()
        ]
        variants.append(
            {
                "name": name,
                "exposures": _num(samples.get(name)),
                "expectedShare": _num(expected_share.get(name)),
                "srmExposures": _num(checked.get(name)),
                "estimates": estimates,
            }
        )
    comparisons = []
    for metric, per in metrics.items():
        for name, entry in per.items():
            if name == control:
                continue
            lo, hi = _pair(entry.get("ci"))
            rlo, rhi = _pair(entry.get("relative_ci"))
            comparisons.append(
                {
                    "variant": name,
                    "metric": metric,
                    "lift": _num(entry.get("lift")),
                    "relativeLift": _num(entry.get("relative_lift")),
                    "ciLow": lo,
                    "ciHigh": hi,
                    "relativeCiLow": rlo,
                    "relativeCiHigh": rhi,
                    "pValue": _num(entry.get("p_value")),
                    "pValueAdjusted": _num(entry.get("p_value_adjusted")),
                    "significant": bool(entry.get("significant")),
                    "test": entry.get("test"),
                }
            )
    drift = [
        {
            "histogram": histogram,
            "variant": name,
            "psi": _num(entry.get("psi")),
            "ksStatistic": _num(entry.get("ks_statistic")),
            "ksPValue": _num(entry.get("ks_p_value")),
            "ok": entry.get("ok"),
            "gating": bool(entry.get("gating", True)),
        }
        for histogram, per in record.get("drift", {}).items()
        for name, entry in per.items()
    ]
    guardrails = [
        {
            "metric": g.get("metric"),
            "variant": g.get("variant"),
            "value": _num(g.get("value")),
            "limit": _num(g.get("limit")),
            "ok": g.get("ok"),
            "kind": g.get("kind"),
            **(
                {"ciLow": _num(g.get("ci_low")), "ciHigh": _num(g.get("ci_high"))}
                if g.get("kind") == "latency_non_inferiority"
                else {}
            ),
        }
        for g in record.get("guardrails", [])
    ]
    power = record.get("power") or {}
    progress = power.get("progress") or {}
    observed = power.get("observed") or {}
    _, lift, p_value = headline(record)
    out = {
        "time": time,
        "window": {"start": window[0], "end": window[1]},
        "decision": record.get("decision"),
        "reasonCode": record.get("reason_code"),
        "reason": str(record.get("reason", ""))[:4096],
        "winner": record.get("winner"),
        "primaryMetric": record.get("primary_metric"),
        "method": record.get("method"),
        "lift": lift,
        "pValue": p_value,
        "srmPValue": _num((record.get("srm") or {}).get("p_value")),
        "variants": variants,
        "comparisons": comparisons,
        "drift": drift,
        "guardrails": guardrails,
        "requiredSamples": {
            "metric": power.get("metric"),
            "unit": power.get("unit", ""),
            "mde": _num(power.get("mde")),
            "power": _num(power.get("power")),
            "baseline": _num(power.get("baseline")),
            "designEffect": _num(power.get("design_effect")),
            "requiredPerVariant": _num(power.get("required_per_variant")),
            "variants": [
                {
                    "variant": name,
                    "observed": _num(observed.get(name)),
                    "required": _num(power.get("required_per_variant")),
                    "progressPercent": _num(progress.get(name)),
                }
                for name in samples
            ],
        }
        if power
        else None,
    }
    inter = record.get("interleaving")
    if isinstance(inter, Mapping):
        out["interleaving"] = interleaving_status(inter)
    cuped = record.get("cuped")
    if isinstance(cuped, Mapping):
        out["cuped"] = cuped_status(cuped, pre_window)
    return out


def cuped_status(
    cuped: Mapping[str, Any], pre_window: tuple[str, str] | None = None
) -> dict[str, Any]:
    """``status.analysis.cuped`` from a record's ``cuped`` block."""
    return {
        "applied": bool(cuped.get("applied")),
        "metric": cuped.get("metric"),
        "reason": str(cuped.get("reason", ""))[:1024],
        "preWindow": {"start": pre_window[0], "end": pre_window[1]} if pre_window else None,
        "theta": _num(cuped.get("theta")),
        "rho": _num(cuped.get("rho")),
        "varianceReduction": [
            {"variant": name, "value": _num(value)}
            for name, value in (cuped.get("variance_reduction") or {}).items()
        ],
    }


def interleaving_status(inter: Mapping[str, Any]) -> dict[str, Any]:
    """``status.analysis.interleaving`` from a record's ``interleaving`` block: the
    preference share (treatment wins - control wins) / (wins + ties), its interval and
    p-value, and the counts behind it."""
    return {
        "delta": _num(inter.get("delta")),
        "ciLow": _num(inter.get("ci_low")),
        "ciHigh": _num(inter.get("ci_high")),
        "pValue": _num(inter.get("p_value")),
        "winsControl": _num(inter.get("wins_control")),
        "winsTreatment": _num(inter.get("wins_treatment")),
        "ties": _num(inter.get("ties")),
        "clickingUsers": _num(inter.get("clicking_users")),
    }


def variant_observations(
    data: Mapping[str, Mapping[str, Any]], record: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per-variant figures for ``status.variants`` (merged with readyReplicas)."""
    out: dict[str, dict[str, Any]] = {}
    ctr = (record.get("metrics") or {}).get("ctr", {})
    for name, v in data.items():
        buckets = v.get("buckets") or {}
        impressions = sum(buckets.get("impressions", [])) if "impressions" in buckets else None
        clicks = sum(buckets.get("clicks", [])) if "clicks" in buckets else None
        requests, errors = _num(v.get("requests")), _num(v.get("errors"))
        out[name] = {
            "exposures": _num(v.get("exposures")),
            "impressions": _num(impressions),
            "clicks": _num(clicks),
            "ctr": _num(ctr.get(name, {}).get("estimate"))
            if ctr
            else (_num(clicks / impressions) if clicks is not None and impressions else None),
            "latencyP95Ms": _num(v.get("latency_p95_ms")),
            "errorRate": (errors / requests) if requests and errors is not None else None,
        }
    return out
