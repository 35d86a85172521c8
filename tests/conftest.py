"""Session fixtures shared by every test layer."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ranker.model import METADATA_FILE
from rankexp.local.cluster import Process, free_ports, wait_for
from rankexp.local.probe import http_status
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
            from ranker.train import train

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
    """Debian's prometheus on 127.0.0.1, scraping jobs `ranker` and `router` every second.

    Tests point it at their processes with ``set_targets``/``add_targets``.
    """
    with LocalPrometheus() as prom:
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
