"""Integration fixtures: real servers on 127.0.0.1.

``kube_cluster`` is one real etcd + kube-apiserver (``rankexp.local.cluster``) for
the whole session. When the binaries are missing (a clean machine), they are built
with tools/envtest.sh once, right after collection: outside any test, so the
per-test timeout does not cut a cold build short. A failed build fails the tests
that need the cluster; they are never skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankexp.local.binaries import BinariesMissingError, ensure_binaries
from rankexp.local.cluster import LocalCluster

_build_error: list[BaseException] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if not any("kube_cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    try:
        ensure_binaries()
    except BinariesMissingError as exc:
        _build_error.append(exc)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[LocalCluster]:
    """A running local control plane (etcd + kube-apiserver), shared by the session."""
    if _build_error:
        pytest.fail(f"building the control-plane binaries failed: {_build_error[0]}")
    bin_dir = ensure_binaries()
    with LocalCluster(bin_dir) as cluster:
        yield cluster


REPO = Path(__file__).resolve().parents[2]
CRD_NAMES = ("experiments.rankexp.io", "alertpolicies.rankexp.io")


@pytest.fixture(scope="session")
def crds(kube_cluster: LocalCluster) -> Any:
    """`kubectl apply -f crds/` once per session, then wait until the CRDs are served."""
    kube_cluster.kubectl("apply", "-f", str(REPO / "crds"))
    for name in CRD_NAMES:
        kube_cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{name}")
    return kube_cluster


@pytest.fixture(scope="session")
def api_client(kube_cluster: Any) -> Iterator[Any]:
    """The official Python client for the session's cluster."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))  # type: ignore[no-untyped-call]
    yield client
    client.close()


AuditedCluster = Callable[[dict[str, Any]], tuple[LocalCluster, Path]]


@pytest.fixture(scope="module")
def audited_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedCluster]:
    """Start a kube-apiserver of the module's own whose audit log follows ``policy`` (an
    audit.k8s.io Policy); returns it and the log's path. Stopped after the module."""
    with ExitStack() as stack:

        def start(policy: dict[str, Any]) -> tuple[LocalCluster, Path]:
            workdir = tmp_path_factory.mktemp("audited")
            (workdir / "audit-policy.yaml").write_text(yaml.safe_dump(policy))
            log = workdir / "audit.log"
            args = [f"--audit-policy-file={workdir / 'audit-policy.yaml'}",
                    f"--audit-log-path={log}", "--audit-log-maxsize=0"]  # fmt: skip
            cluster = stack.enter_context(LocalCluster(extra_apiserver_args=args))
            return cluster, log

        yield start
