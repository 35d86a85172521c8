"""Kopf wiring: startup settings and the `python -m rankexp` entry point."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import kopf
import pytest

from rankexp import __main__ as entry
from rankexp import handlers, reconcile


def test_startup_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "new_api_client", lambda: object())
    monkeypatch.setattr(reconcile, "KubeChildStore", lambda api: ("store", api))
    settings = kopf.OperatorSettings()
    memo = kopf.Memo()
    configure: Any = handlers.configure  # kopf's decorator types it as an ActivityFn
    configure(settings=settings, memo=memo)
    assert settings.persistence.finalizer == "rankexp.io/finalizer"
    progress = settings.persistence.progress_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "rankexp.io"
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert diffbase.prefix == "rankexp.io"
    assert settings.watching.server_timeout and settings.watching.client_timeout
    assert settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.posting.level == logging.INFO
    assert memo.store[0] == "store"


def test_entry_point_passes_kopf_run_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry.main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--standalone", "--all-namespaces", "--namespace", "--liveness"):
        assert flag in out


class _Raising:
    """A ChildStore whose every call fails like the API server would."""

    def __init__(self, status: int) -> None:
        self.status = status

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        exc = ApiException(status=self.status, reason="Nope")
        exc.body = json.dumps({"message": "the server said no"})
        raise exc

    def apply(self, obj: Any) -> dict[str, Any]:
        raise AssertionError("not reached")

    def delete(self, kind: str, namespace: str, name: str) -> None:
        raise AssertionError("not reached")


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(kopf, "warn", lambda body, reason, message: events.append(("W", reason)))
    monkeypatch.setattr(kopf, "info", lambda body, reason, message: events.append(("N", reason)))
    return events


def _call(body: dict[str, Any], status: int, retry: int, patch: kopf.Patch) -> None:
    fn: Any = handlers.reconcile_experiment
    memo = kopf.Memo()
    memo.store = _Raising(status)
    fn(body=kopf.Body(cast(kopf.RawBody, body)), memo=memo, patch=patch, retry=retry)


def test_rejected_child_is_a_permanent_failure(
    experiment_body: dict[str, Any], posted: list[tuple[str, str]]
) -> None:
    patch = kopf.Patch()
    with pytest.raises(kopf.PermanentError, match="the server said no"):
        _call(experiment_body, 422, retry=0, patch=patch)
    assert posted == [("W", "ChildRejected")]
    assert patch["status"]["phase"] == "Failed"
    degraded = [c for c in patch["status"]["conditions"] if c["type"] == "Degraded"]
    assert degraded[0]["reason"] == "ChildRejected" and degraded[0]["status"] == "True"


def test_transient_api_error_is_retried_with_one_warning(
    experiment_body: dict[str, Any], posted: list[tuple[str, str]]
) -> None:
    with pytest.raises(kopf.TemporaryError):
        _call(experiment_body, 503, retry=0, patch=kopf.Patch())
    patch = kopf.Patch()
    with pytest.raises(kopf.TemporaryError):
        _call(experiment_body, 503, retry=1, patch=patch)
    assert posted == [("W", "ReconcileError")]
    assert "status" not in patch
