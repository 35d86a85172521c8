"""An AlertPolicy as a prometheus-operator PrometheusRule (``rankexp render-rules``), for
teams that route alerts through Alertmanager instead of the operator's receivers.

``expr`` rules keep their PromQL; named-metric rules become the PromQL of
:func:`rankexp.prom.metrics.alert_query` compared with their threshold. ``drift_psi`` has no
PromQL form (PSI needs the histograms' bins, which the operator reads and compares
itself), so it is left out with a comment saying so. ``experimentSelector`` needs the
API server, so a rendered policy covers every experiment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from rankexp.api import AlertPolicySpec
from rankexp.prom.alerts import alert_query


def render(policy: Mapping[str, Any]) -> str:
    """PrometheusRule YAML for an AlertPolicy manifest (raises pydantic's ValidationError
    on an invalid spec)."""
    spec = AlertPolicySpec.model_validate(policy.get("spec") or {})
    meta = policy.get("metadata") or {}
    name = str(meta.get("name", "rankexp"))
    rules: list[dict[str, Any]] = []
    skipped: list[str] = []
    for rule in spec.rules:
        if rule.expr is not None:
            expr = rule.expr
        elif rule.metric == "drift_psi":
            skipped.append(rule.name)
            continue
        else:
            assert rule.metric is not None
            expr = f"({alert_query(rule.metric, rule.window)}) {rule.op} {rule.threshold:g}"
        rules.append(
            {
                "alert": rule.name,
                "expr": expr,
                "for": rule.for_,
                "labels": {"severity": rule.severity},
                "annotations": {"summary": rule.summary or f"{rule.name} ({rule.severity})"},
            }
        )
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": name,
            **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
            "labels": {"app.kubernetes.io/part-of": "rankexp"},
        },
        "spec": {"groups": [{"name": f"rankexp-{name}", "rules": rules}]},
    }
    header = f"# Rendered by `rankexp render-rules` from AlertPolicy {name}.\n"
    if skipped:
        header += (
            f"# Left out (no PromQL form; the operator evaluates them): {', '.join(skipped)}\n"
        )
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)
