"""Session fixtures shared by every test layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ranker.model.network import METADATA_FILE
from rankexp.local.probe import http_status
from rankexp.local.process import Process, free_ports, wait_for
from rankexp.local.prom import LocalPrometheus

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """models/v1 and models/v2 from `make models`; trained into a temp dir if absent."""
    root = Path(os.environ.get("RANKEXP_MODELS", REPO / "models"))
    out: dict[str, Path] = {}
    for profile in ("v1", "v2"):
        path = root / profile
        if not (path / METADATA_FILE).is_file():
            from ranker.model.train import train

            path = tmp_path_factory.mktemp("models") / profile
            train(profile, path)
        out[profile] = path
    return out


StartRanker = Callable[..., tuple[Process, str]]


@pytest.fixture
def start_ranker(tmp_path: Path) -> Iterator[StartRanker]:
    """Start `ranker serve` as a real process on 127.0.0.1; stopped after the test."""
    started: list[Process] = []

    def start(model: Path | str, variant: str, *extra: str, wait_ready: bool = True
              ) -> tuple[Process, str]:  # fmt: skip
        (port,) = free_ports(1)
        proc = Process(
            f"ranker-{variant}",
            [sys.executable, "-m", "ranker.cli", "serve", "--model", str(model),
             "--variant", variant, "--host", "127.0.0.1", "--port", str(port), *extra],
            log_path=tmp_path / f"ranker-{variant}-{port}.log",
        )  # fmt: skip
        proc.start()
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        probe = "/ready" if wait_ready else "/health"
        wait_for(lambda: http_status(url + probe) == 200, timeout=60, what=f"{url}{probe}",
                 processes=[proc])  # fmt: skip
        return proc, url

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture(scope="session")
def prometheus() -> Iterator[LocalPrometheus]:
    """Debian's prometheus on 127.0.0.1, scraping jobs `ranker`, `router` and
    `rankexp-operator` (the operator's /metrics) every second.

    Tests point it at their processes with ``set_targets``/``add_targets``.
    """
    with LocalPrometheus(("ranker", "router", "rankexp-operator")) as prom:
        yield prom


StartRouter = Callable[..., tuple[Process, str, Path]]


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[StartRouter]:
    """Start `ranker route` on 127.0.0.1 with a routing.json written from ``config``."""
    started: list[Process] = []

    def start(
        config: dict[str, object], port: int | None = None, *extra: str
    ) -> tuple[Process, str, Path]:
        import json

        port = port or free_ports(1)[0]
        cfg = tmp_path / f"routing-{port}.json"
        cfg.write_text(json.dumps(config))
        proc = Process(
            f"router-{port}",
            [sys.executable, "-m", "ranker.cli", "route", "--config", str(cfg),
             "--host", "127.0.0.1", "--port", str(port), "--poll-interval", "0.2", *extra],
            log_path=tmp_path / f"router-{port}.log",
        )  # fmt: skip
        proc.start()
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_status(url + "/ready") == 200, timeout=30, what=url,
                 processes=[proc])  # fmt: skip
        return proc, url, cfg

    yield start
    for proc in reversed(started):
        proc.stop()


class GitopsHealth:
    """tools/gitops-health: Argo CD's Lua engine and Flux's CEL status reader (Go packages
    from the module proxy), on the customizations in gitops/."""

    ARGOCD = REPO / "gitops" / "argocd" / "resource_customizations"
    FLUX_EXPRS = REPO / "gitops" / "flux" / "health-check-exprs.yaml"

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), *args], input=input, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip

    def kind_dir(self, obj: dict[str, Any]) -> Path:
        group = obj["apiVersion"].split("/")[0]
        return self.ARGOCD / group / obj["kind"]

    def argocd_health(self, obj: dict[str, Any]) -> dict[str, str]:
        """Argo CD's health of one object, as its controller computes it (libs as an
        argocd-cm entry without useOpenLibs gets them)."""
        out = self.run("argocd-health", "-libs", "cm", str(self.kind_dir(obj)), "-",
                       input=json.dumps(obj))  # fmt: skip
        assert out.returncode == 0, out.stderr
        health: dict[str, str] = json.loads(out.stdout)
        return health

    def flux_status(self, obj: dict[str, Any]) -> str:
        out = self.run("flux-status", str(self.FLUX_EXPRS), "-", input=json.dumps(obj))
        assert out.returncode in (0, 3), out.stderr  # 3: an expression erred (Unknown)
        status: str = json.loads(out.stdout)["status"]
        return status

    def argocd_action(self, obj: dict[str, Any], action: str) -> dict[str, Any]:
        out = self.run("argocd-action", "-libs", "cm", "-o", "json", str(self.kind_dir(obj)),
                       action, "-", input=json.dumps(obj))  # fmt: skip
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result


@pytest.fixture(scope="session")
def gitops_health() -> GitopsHealth:
    """The tool, built by `bash tools/gitops-health.sh` (make test builds it first, outside
    any test's timeout; here it is found in the cache in a fraction of a second)."""
    built = subprocess.run(["bash", str(REPO / "tools" / "gitops-health.sh")],
                           capture_output=True, text=True, timeout=1800, check=False)  # fmt: skip
    assert built.returncode == 0, f"building tools/gitops-health failed:\n{built.stderr[-3000:]}"
    return GitopsHealth(Path(built.stdout.strip().splitlines()[-1]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``: ``--dist loadgroup``) tests are spread one by one
    over the workers, except that tests sharing a module- or package-scoped fixture stay on
    one worker (one ``xdist_group`` per module or package), so each such fixture starts
    once, as it does without xdist."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        scopes = {defs[-1].scope for defs in info.name2fixturedefs.values() if defs}
        if "package" in scopes:
            item.add_marker(pytest.mark.xdist_group(str(item.path.parent)))
        elif "module" in scopes:
            item.add_marker(pytest.mark.xdist_group(str(item.path)))
