"""The evidence over time as Prometheus series: exported by the operator, read back by
``rankexp status NAME --history`` and the experiment page.

Every analysis writes ``status.analysis``; the operator's ``/metrics`` carries the latest
one of each Experiment as ``rankexp_analysis_*`` gauges stamped with the analysis time
(``status.analysis.time``) as the sample's own timestamp. Prometheus scrapes the same
sample again and again until the next analysis replaces it and keeps it once (a repeated
timestamp with the same value is not a new sample), so the range vector
``rankexp_analysis_relative_lift{experiment="x"}[3h]`` holds exactly one sample per
analysis, equal to what status said then. (An analysis replaced before the next scrape
is not seen: keep the scrape interval below ``spec.analysis.interval``.)

Series (labels ``namespace``, ``experiment`` plus):

* per treatment and metric (``variant``, ``metric``): ``lift``, ``relative_lift``,
  ``ci_low``, ``ci_high``, ``relative_ci_low``, ``relative_ci_high``, ``p_value``
  (the sequential test's), ``p_value_adjusted`` (Holm); an interleaving experiment's
  preference share under ``metric="preference"``;
* per variant (``variant``): ``exposures``;
* per experiment: ``srm_p_value``, ``decision`` (``decision`` label, 1 for the decision
  taken and 0 for the others, as kube-state-metrics spells an enum);
* ``rankexp_experiment_traffic_weight{variant}``: the weights in force (percent), an
  ordinary gauge stamped at scrape time.

Only the leader exports (the others run no handlers); a deleted Experiment's series end.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "rankexp_analysis_"
TRAFFIC = "rankexp_experiment_traffic_weight"
DECISIONS = ("Hold", "Continue", "Promote", "Rollback", "Inconclusive")

#: comparison series: (name suffix, status.analysis.comparisons field, help)
COMPARISON_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("lift", "lift", "Treatment minus control on the metric (absolute)."),
    ("relative_lift", "relativeLift", "Treatment / control - 1 on the metric."),
    ("ci_low", "ciLow", "Lower bound of the confidence interval (sequence) of the lift."),
    ("ci_high", "ciHigh", "Upper bound of the confidence interval (sequence) of the lift."),
    ("relative_ci_low", "relativeCiLow", "Lower bound of the relative lift's interval."),
    ("relative_ci_high", "relativeCiHigh", "Upper bound of the relative lift's interval."),
    ("p_value", "pValue", "The test's p-value (always valid when sequential)."),
    ("p_value_adjusted", "pValueAdjusted", "The p-value after Holm's correction."),
)
#: interleaving block field -> comparison series
PREFERENCE_FIELDS = {
    "lift": "delta",
    "ci_low": "ciLow",
    "ci_high": "ciHigh",
    "p_value": "pValue",
}
PREFERENCE = "preference"
COMPARISON_LABELS = ("namespace", "experiment", "variant", "metric")


@dataclass(frozen=True)
class Sample:
    """One exported sample: series name, labels, value, timestamp (Unix seconds or None)."""

    name: str
    labels: Mapping[str, str]
    value: float
    timestamp: float | None


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def parse_time(text: str) -> float:
    """Unix seconds of a status timestamp (``2026-12-04T19:00:00Z``)."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def samples(
    namespace: str, name: str, status: Mapping[str, Any] | None, control: str = "control"
) -> list[Sample]:
    """Every sample the Experiment's status exports now (pure)."""
    status = status or {}
    base = {"namespace": namespace, "experiment": name}
    out: list[Sample] = []
    for t in status.get("traffic") or []:
        weight = _num(t.get("weight"))
        if weight is not None:
            out.append(Sample(TRAFFIC, {**base, "variant": str(t.get("variant"))}, weight, None))
    analysis = status.get("analysis") or {}
    stamp = analysis.get("time")
    if not isinstance(stamp, str):
        return out
    try:
        at = parse_time(stamp)
    except ValueError:
        return out
    decision = analysis.get("decision")
    if decision in DECISIONS:
        for d in DECISIONS:
            out.append(
                Sample(PREFIX + "decision", {**base, "decision": d}, float(d == decision), at)
            )
    srm = _num(analysis.get("srmPValue"))
    if srm is not None:
        out.append(Sample(PREFIX + "srm_p_value", dict(base), srm, at))
    for v in analysis.get("variants") or []:
        exposures = _num(v.get("exposures"))
        if exposures is not None:
            labels = {**base, "variant": str(v.get("name"))}
            out.append(Sample(PREFIX + "exposures", labels, exposures, at))
    for c in analysis.get("comparisons") or []:
        labels = {**base, "variant": str(c.get("variant")), "metric": str(c.get("metric"))}
        for suffix, key, _ in COMPARISON_FIELDS:
            value = _num(c.get(key))
            if value is not None:
                out.append(Sample(PREFIX + suffix, labels, value, at))
    inter = analysis.get("interleaving")
    names = [str(v.get("name")) for v in analysis.get("variants") or []]
    treatment = next((v for v in names if v != control), None)
    if isinstance(inter, Mapping) and treatment is not None:
        labels = {**base, "variant": treatment, "metric": PREFERENCE}
        for suffix, key in PREFERENCE_FIELDS.items():
            value = _num(inter.get(key))
            if value is not None:
                out.append(Sample(PREFIX + suffix, labels, value, at))
    return out


_HELP = {
    **{PREFIX + suffix: text for suffix, _, text in COMPARISON_FIELDS},
    PREFIX + "exposures": "Router exposures of the variant over the analysis window.",
    PREFIX + "srm_p_value": "Sample-ratio mismatch test p-value of the analysis.",
    PREFIX + "decision": "1 for the analysis' decision, 0 for the others.",
    TRAFFIC: "Traffic weight of the variant in force (percent).",
}


class EvidenceCollector(Collector):
    """The latest analysis of every Experiment the operator watches, as gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_experiment: dict[tuple[str, str], list[Sample]] = {}

    def observe(self, body: Mapping[str, Any]) -> None:
        """Export what the Experiment's status says now (called for every watch event)."""
        meta = body.get("metadata") or {}
        control = str((body.get("spec") or {}).get("control") or "control")
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        found = samples(namespace, name, body.get("status"), control)
        with self._lock:
            self._by_experiment[(namespace, name)] = found

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._by_experiment.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            everything = [s for found in self._by_experiment.values() for s in found]
        families: dict[str, GaugeMetricFamily] = {}
        for s in everything:
            family = families.get(s.name)
            if family is None:
                family = GaugeMetricFamily(s.name, _HELP[s.name], labels=list(s.labels))
                families[s.name] = family
            family.add_metric(list(s.labels.values()), s.value, timestamp=s.timestamp)
        yield from families.values()


# ------------------------------------------------------------------------- reading back


def history_query(namespace: str, name: str, seconds: int) -> str:
    """PromQL (instant query) for every exported analysis sample of one Experiment over
    the last ``seconds``: a range vector, so each sample comes with its own timestamp."""
    ns, exp = _quote(namespace), _quote(name)
    return f'{{__name__=~"{PREFIX}.+",namespace={ns},experiment={exp}}}[{max(int(seconds), 1)}s]'


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True)
class Point:
    """One analysis, as read back: its time, decision, SRM p-value, exposures per
    variant and the comparison figures per (variant, metric)."""

    time: float
    decision: str | None
    srm_p_value: float | None
    exposures: Mapping[str, float]
    comparisons: Mapping[tuple[str, str], Mapping[str, float]]


def history(matrix: Iterable[Mapping[str, Any]]) -> list[Point]:
    """The analyses in a Prometheus matrix answer of :func:`history_query` (the
    ``result`` list: ``{"metric": labels, "values": [[t, "v"], ...]}``), oldest first."""
    decisions: dict[float, str] = {}
    srm: dict[float, float] = {}
    exposures: dict[float, dict[str, float]] = {}
    comparisons: dict[float, dict[tuple[str, str], dict[str, float]]] = {}
    times: set[float] = set()
    for series in matrix:
        labels = series.get("metric") or {}
        suffix = str(labels.get("__name__", "")).removeprefix(PREFIX)
        for t_raw, v_raw in series.get("values") or []:
            t, v = round(float(t_raw), 3), float(v_raw)
            times.add(t)
            if suffix == "decision":
                if v == 1.0:
                    decisions[t] = str(labels.get("decision"))
            elif suffix == "srm_p_value":
                srm[t] = v
            elif suffix == "exposures":
                exposures.setdefault(t, {})[str(labels.get("variant"))] = v
            else:
                key = (str(labels.get("variant")), str(labels.get("metric")))
                comparisons.setdefault(t, {}).setdefault(key, {})[suffix] = v
    return [
        Point(
            time=t,
            decision=decisions.get(t),
            srm_p_value=srm.get(t),
            exposures=exposures.get(t, {}),
            comparisons=comparisons.get(t, {}),
        )
        for t in sorted(times)
    ]


class HistoryUnavailable(Exception):
    """Prometheus could not answer the history query."""


def fetch_history(
    prometheus_url: str, namespace: str, name: str, seconds: float, timeout: float = 10.0
) -> list[Point]:
    """The Experiment's analyses over the last ``seconds``, from Prometheus' HTTP API."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    query = history_query(namespace, name, math.ceil(seconds))
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        exc.close()
        raise HistoryUnavailable(
            f"Prometheus at {prometheus_url} answered {exc.code}: {detail}"
        ) from None
    except (OSError, ValueError) as exc:
        raise HistoryUnavailable(f"no Prometheus at {prometheus_url}: {exc}") from None
    data = answer.get("data") or {}
    if answer.get("status") != "success" or data.get("resultType") != "matrix":
        raise HistoryUnavailable(f"unexpected answer from {prometheus_url}: {str(answer)[:300]}")
    return history(data.get("result") or [])
