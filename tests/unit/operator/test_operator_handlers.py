"""Kopf wiring: startup settings and the `python -m rankexp` entry point.

The reconcile handler's error handling (a rejected child, a transient API error) is tested
against a real kube-apiserver in tests/integration/operator/test_reconcile_real.py.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from rankexp.runtime import handlers
from rankexp.runtime import main as entry


def test_startup_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "new_api_client", lambda: object())
    monkeypatch.setattr(handlers, "KubeChildStore", lambda api: ("store", api))
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


def test_operator_flags_go_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # set first, so monkeypatch restores the environment after _own_flags writes it
    monkeypatch.setenv(handlers.PROMETHEUS_URL_ENV, "unset")
    monkeypatch.setenv(handlers.INTERVAL_SCALE_ENV, "1")
    rest = entry._own_flags(
        ["--prometheus-url", "http://127.0.0.1:9", "--interval-scale", "0.05", "-A"]
    )
    assert rest == ["-A"]
    settings = handlers.loop_settings()
    assert settings.prometheus_url == "http://127.0.0.1:9"
    assert settings.interval_scale == 0.05


def test_bad_interval_scale_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(handlers.INTERVAL_SCALE_ENV, "1")
    with pytest.raises(SystemExit):
        entry._own_flags(["--interval-scale", "0"])
    monkeypatch.setenv(handlers.INTERVAL_SCALE_ENV, "-1")
    with pytest.raises(ValueError, match="positive"):
        handlers.loop_settings()


def test_kubectl_plugin_names_itself(capsys: pytest.CaptureFixture[str]) -> None:
    from rankexp.cli.commands import kubectl_main

    with pytest.raises(SystemExit):
        kubectl_main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: kubectl rankexp") and "promote" in out and "status" in out


def test_workers_flag_sizes_kopfs_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(handlers.WORKERS_ENV, "1")
    assert entry._own_flags(["--workers", "32", "-A"]) == ["-A"]
    monkeypatch.setattr(handlers, "new_api_client", lambda: object())
    monkeypatch.setattr(handlers, "KubeChildStore", lambda api: ("store", api))
    settings = kopf.OperatorSettings()
    configure: Any = handlers.configure
    configure(settings=settings, memo=kopf.Memo())
    assert settings.execution.max_workers == 32
    with pytest.raises(SystemExit):
        entry._own_flags(["--workers", "0"])
