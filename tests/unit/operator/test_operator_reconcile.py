"""reconcile.failed(): the Outcome for a rejected child, built without any API call.

Everything that reads or writes children (idempotency, weight changes, removal, pause,
unsupported model URIs, readiness) runs against a real kube-apiserver in
tests/integration/operator/test_reconcile_real.py.
"""

from __future__ import annotations

from typing import Any

from rankexp.api import conditions as cond
from rankexp.experiment import reconcile as rec


def test_failed_outcome_for_a_rejected_child(experiment_body: Any) -> None:
    outcome = rec.failed(experiment_body, "ChildRejected", "422 Unprocessable Entity: nope")
    assert outcome.status["phase"] == "Failed"
    degraded = cond.find(outcome.status["conditions"], "Degraded")
    assert degraded is not None and degraded["reason"] == "ChildRejected"
    assert outcome.permanent_error == "422 Unprocessable Entity: nope"
