"""A local experiment data path: one ranker process per variant, a router, optionally Prometheus.

For the demo, `make load` and tests: everything on 127.0.0.1, free ports,
stopped on exit. ``python -m rankexp.local.stack [options] -- CMD ...`` starts
the stack, runs CMD with ``{router}`` in its arguments replaced by the router's
URL (also in the environment as RANKEXP_ROUTER_URL), then stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rankexp.local.probe import is_ready
from rankexp.local.process import Process, free_ports, wait_for
from rankexp.local.prom import LocalPrometheus


@dataclass(frozen=True)
class VariantSpec:
    name: str
    model: str
    weight: int


class LocalStack:
    """Rankers for each variant behind one router; control is the first variant."""

    def __init__(
        self,
        variants: Sequence[VariantSpec],
        *,
        experiment: str = "local",
        salt: str = "local",
        prometheus: LocalPrometheus | None = None,
        workdir: Path | None = None,
        namespace: str = "default",
    ) -> None:
        if sum(v.weight for v in variants) != 100:
            raise ValueError("variant weights must sum to 100")
        self.variants = list(variants)
        self.experiment = experiment
        self.salt = salt
        self.prometheus = prometheus
        self.namespace = namespace
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="rankexp-stack-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.processes: list[Process] = []
        self.ranker_urls: dict[str, str] = {}
        self.router_url = ""
        self.config_path = self.workdir / "routing.json"

    def routing_config(self, weights: dict[str, int] | None = None) -> dict[str, object]:
        return {
            "experiment": self.experiment,
            "salt": self.salt,
            "control": self.variants[0].name,
            "variants": [
                {
                    "name": v.name,
                    "weight": (weights or {}).get(v.name, v.weight),
                    "endpoints": [self.ranker_urls[v.name]],
                }
                for v in self.variants
            ],
        }

    def set_weights(self, weights: dict[str, int]) -> None:
        """Rewrite routing.json atomically; the router picks it up within a poll."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.routing_config(weights)))
        tmp.replace(self.config_path)

    def start(self) -> LocalStack:
        try:
            ports = free_ports(len(self.variants) + 1)
            for v, port in zip(self.variants, ports, strict=False):
                proc = Process(
                    f"ranker-{v.name}",
                    [sys.executable, "-m", "ranker.cli", "serve", "--model", v.model,
                     "--variant", v.name, "--host", "127.0.0.1", "--port", str(port),
                     "--log-level", "warning"],
                    log_path=self.workdir / f"ranker-{v.name}.log",
                )  # fmt: skip
                proc.start()
                self.processes.append(proc)
                self.ranker_urls[v.name] = f"http://127.0.0.1:{port}"
            self.set_weights({})
            router_port = ports[-1]
            router = Process(
                "router",
                [sys.executable, "-m", "ranker.cli", "route", "--config", str(self.config_path),
                 "--host", "127.0.0.1", "--port", str(router_port), "--poll-interval", "0.2",
                 "--log-level", "warning"],
                log_path=self.workdir / "router.log",
            )  # fmt: skip
            router.start()
            self.processes.append(router)
            self.router_url = f"http://127.0.0.1:{router_port}"
            for url in [*self.ranker_urls.values(), self.router_url]:
                wait_for(lambda u=url: is_ready(u), timeout=90, what=url,  # type: ignore[misc]
                         processes=self.processes)  # fmt: skip
            if self.prometheus is not None:
                labels = {"experiment": self.experiment, "namespace": self.namespace}
                hostports = [u.removeprefix("http://") for u in self.ranker_urls.values()]
                self.prometheus.add_targets("ranker", hostports, labels)
                self.prometheus.add_targets(
                    "router", [self.router_url.removeprefix("http://")], labels
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rankexp.local.stack", description=__doc__)
    p.add_argument(
        "--variant", action="append", default=[], metavar="NAME=MODEL:WEIGHT",
        help="repeatable; the first is control (default: control=models/v1:50 "
             "treatment=models/v2:50)",
    )  # fmt: skip
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ... to run against it")
    args = p.parse_args(argv)
    specs = []
    for raw in args.variant or ["control=models/v1:50", "treatment=models/v2:50"]:
        name, _, rest = raw.partition("=")
        model, _, weight = rest.rpartition(":")
        specs.append(VariantSpec(name, model, int(weight)))
    cmd = [c for c in args.command if c != "--"] if args.command else []
    with LocalStack(specs) as stack:
        sys.stderr.write(f"router {stack.router_url}; rankers {stack.ranker_urls}\n")
        if not cmd:
            return 0
        env = {**os.environ, "RANKEXP_ROUTER_URL": stack.router_url}
        cmd = [c.replace("{router}", stack.router_url) for c in cmd]
        return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
