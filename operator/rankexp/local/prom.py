"""A real Prometheus (Debian's ``prometheus`` binary) on 127.0.0.1 for tests and demos.

Targets are discovered from JSON files (``file_sd_configs``) in the work
directory, so a running Prometheus picks up new ranker or router processes as
soon as :meth:`LocalPrometheus.set_targets` rewrites their file; no restart.
Scrapes every second by default. Storage is a temporary directory removed on
exit.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from rankexp.local.probe import is_ready
from rankexp.local.process import Process, free_ports, wait_for

DEFAULT_BINARY = "prometheus"
OWNER_LABEL = "__rankexp_owner"


class PrometheusMissingError(RuntimeError):
    """The prometheus binary is not installed."""


def find_prometheus(binary: str = DEFAULT_BINARY) -> str:
    path = shutil.which(binary)
    if path is None:
        raise PrometheusMissingError(
            f"{binary!r} is not on PATH: install Debian's package (apt-get install prometheus)"
        )
    return path


class LocalPrometheus:
    """Prometheus on a free loopback port; a context manager that cleans up."""

    def __init__(
        self,
        jobs: Sequence[str] = ("ranker", "router"),
        *,
        scrape_interval: str = "1s",
        rule_files: Sequence[Path] = (),
        evaluation_interval: str = "1s",
        workdir: Path | None = None,
        binary: str = DEFAULT_BINARY,
    ) -> None:
        self.binary = find_prometheus(binary)
        self.jobs = list(jobs)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="rankexp-prom-"))
        self.port = 0
        self.url = ""
        self.process: Process | None = None
        self._targets_lock = threading.Lock()

    def _sd_file(self, job: str) -> Path:
        return self.workdir / "targets" / f"{job}.json"

    def _write_config(self) -> Path:
        (self.workdir / "targets").mkdir(parents=True, exist_ok=True)
        for job in self.jobs:
            if not self._sd_file(job).exists():
                self._sd_file(job).write_text("[]")
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "scrape_configs": [
                {
                    "job_name": job,
                    "file_sd_configs": [
                        {"files": [str(self._sd_file(job))], "refresh_interval": "1s"}
                    ],
                }
                for job in self.jobs
            ],
        }
        if self.rule_files:
            config["rule_files"] = [str(p) for p in self.rule_files]
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def set_targets(
        self, job: str, targets: Sequence[str], labels: Mapping[str, str] | None = None
    ) -> None:
        """Replace the job's targets (``host:port``) atomically; picked up within a second."""
        if job not in self.jobs:
            raise ValueError(f"unknown job {job!r}; configured jobs: {self.jobs}")
        groups = [{"targets": list(targets), "labels": dict(labels or {})}] if targets else []
        with self._targets_lock:
            tmp = self._sd_file(job).with_suffix(".tmp")
            tmp.write_text(json.dumps(groups))
            tmp.replace(self._sd_file(job))

    def add_targets(
        self, job: str, targets: Sequence[str], labels: Mapping[str, str] | None = None
    ) -> None:
        """Add a target group to the job, keeping the groups already there."""
        with self._targets_lock:
            groups = json.loads(self._sd_file(job).read_text())
            groups.append({"targets": list(targets), "labels": dict(labels or {})})
            tmp = self._sd_file(job).with_suffix(".tmp")
            tmp.write_text(json.dumps(groups))
            tmp.replace(self._sd_file(job))

    def set_owned_targets(
        self, job: str, owner: str, groups: Sequence[tuple[Sequence[str], Mapping[str, str]]]
    ) -> None:
        """Replace the target groups ``owner`` put in ``job``, keeping everyone else's.

        Groups are tagged with the label ``__rankexp_owner``; Prometheus drops labels
        starting with ``__`` after relabelling, so the tag never reaches a series."""
        with self._targets_lock:
            path = self._sd_file(job)
            current = json.loads(path.read_text()) if path.exists() else []
            kept = [g for g in current if g.get("labels", {}).get(OWNER_LABEL) != owner]
            mine = [
                {"targets": list(t), "labels": {**dict(labels), OWNER_LABEL: owner}}
                for t, labels in groups
                if t
            ]
            if kept + mine == current:
                return
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(kept + mine))
            tmp.replace(path)

    def remove_owner(self, owner: str) -> None:
        for job in self.jobs:
            self.set_owned_targets(job, owner, [])

    def start(self, port: int | None = None) -> LocalPrometheus:
        """Start on ``port`` (default: a free one). Started again after :meth:`stop` with
        the same port and a ``workdir`` of the caller's, it keeps its data: a restart."""
        config = self._write_config()
        self.port = port if port is not None else free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process(
            "prometheus",
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            log_path=self.workdir / "prometheus.log",
        )
        self.process.start()
        wait_for(self.ready, timeout=60, what="prometheus /-/ready", processes=[self.process])
        return self

    def ready(self) -> bool:
        return is_ready(self.url, "/-/ready")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list (raises on an API error)."""
        from urllib.parse import urlencode

        with urllib.request.urlopen(
            f"{self.url}/api/v1/query?{urlencode({'query': promql})}", timeout=10
        ) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def active_targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/api/v1/targets", timeout=5) as resp:
            targets: list[dict[str, Any]] = json.loads(resp.read())["data"]["activeTargets"]
            return targets

    def wait_scraped(self, job: str, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` targets of ``job`` are up (scraped at least once)."""

        def ok() -> bool:
            up = [t for t in self.active_targets() if t["labels"].get("job") == job]
            healthy: int = sum(t["health"] == "up" for t in up)
            return healthy >= count

        procs = [self.process] if self.process else []
        wait_for(ok, timeout=timeout, what=f"{count} {job} target(s) up", processes=procs)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
