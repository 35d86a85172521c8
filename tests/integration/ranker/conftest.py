"""A data path shared by the modules here that only send requests to it (none restarts it)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rankexp.local.probe import is_ready
from rankexp.local.process import Process, free_ports, wait_for

#: `ranker serve` / `ranker route` limits of the shared data path: the defaults but a
#: shorter client timeout (slow-client tests wait for it) and fewer connections (the
#: connection-limit tests open that many).
CLIENT_TIMEOUT = 2.0
MAX_CONNECTIONS = 48
LIMIT_ARGS = ("--client-timeout", str(CLIENT_TIMEOUT), "--max-connections", str(MAX_CONNECTIONS))


@dataclass
class DataPath:
    control: str  # ranker v1
    treatment: str  # ranker v2
    router: str  # 50/50 in front of them
    processes: list[Process] = field(default_factory=list)
    client_timeout: float = CLIENT_TIMEOUT
    max_connections: int = MAX_CONNECTIONS

    def check_alive(self) -> None:
        for proc in self.processes:
            assert proc.is_running(), f"{proc.name} exited; its log: {proc.log_path}"


@pytest.fixture(scope="package")
def data_path(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DataPath]:
    """Two rankers (control v1, treatment v2) and a router, real processes on 127.0.0.1."""
    work = tmp_path_factory.mktemp("data-path")
    ports = free_ports(3)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    processes: list[Process] = []
    try:
        for (variant, model), port in zip(
            (("control", model_dirs["v1"]), ("treatment", model_dirs["v2"])), ports, strict=False
        ):
            proc = Process(
                f"ranker-{variant}",
                [sys.executable, "-m", "ranker.cli", "serve", "--model", str(model),
                 "--variant", variant, "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "warning", *LIMIT_ARGS],
                log_path=work / f"ranker-{variant}.log",
            )  # fmt: skip
            proc.start()
            processes.append(proc)
        config = {
            "experiment": "hostile", "salt": "hostile", "control": "control",
            "variants": [
                {"name": "control", "weight": 50, "endpoints": [urls[0]]},
                {"name": "treatment", "weight": 50, "endpoints": [urls[1]]},
            ],
        }  # fmt: skip
        (work / "routing.json").write_text(json.dumps(config))
        router = Process(
            "router",
            [sys.executable, "-m", "ranker.cli", "route", "--config", str(work / "routing.json"),
             "--host", "127.0.0.1", "--port", str(ports[2]), "--log-level", "warning",
             *LIMIT_ARGS],
            log_path=work / "router.log",
        )  # fmt: skip
        router.start()
        processes.append(router)
        for url in urls:
            wait_for(lambda u=url: is_ready(u), timeout=90, what=url, processes=processes)  # type: ignore[misc]
        yield DataPath(urls[0], urls[1], urls[2], processes)
    finally:
        for proc in reversed(processes):
            proc.stop()
