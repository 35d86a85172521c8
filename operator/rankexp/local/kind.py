"""A kind cluster with rankexp's images, for `make e2e` and `make demo` (not the product).

:func:`prepare` runs the build recipes in order, each a cached step that says when it
was cached: a Docker engine (tools/docker/ensure-docker.sh), kind and helm
(tools/kind/tools.sh), kubectl (`make envtest`), the kind node image
(tools/kind/node-image.sh) and rankexp's images (images/build.sh).
:class:`KindCluster` creates the cluster from that node image, loads the images into it
(`kind load docker-image`) and runs kubectl and helm against it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankexp.local.binaries import ensure_binaries

REPO = Path(__file__).resolve().parents[3]
CLUSTER_CONFIG = REPO / "tools" / "kind" / "cluster.yaml"


class DockerUnavailable(RuntimeError):
    """No Docker engine runs here and none can be started (the e2e tests skip on this)."""


def _say(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


def _run_script(argv: Sequence[str], what: str, progress: Callable[[str], None] | None) -> str:
    """Run a build script; its stderr lines are progress, its last stdout line the result."""
    start = time.monotonic()
    lines: list[str] = []
    with (
        tempfile.TemporaryFile("w+") as stdout,
        subprocess.Popen(
            list(argv), cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True
        ) as proc,
    ):
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip())
            _say(progress, f"  {line.rstrip()}")
        code = proc.wait()
        stdout.seek(0)
        out = stdout.read()
    if code != 0:
        tail = "\n".join(lines[-20:])
        raise RuntimeError(f"{what} failed (exit {code}):\n{tail}")
    _say(progress, f"{what}: done in {time.monotonic() - start:.0f} s")
    results = [line for line in out.splitlines() if line.strip()]
    return "\n".join(results)


@dataclass
class Prepared:
    tools_bin: Path
    kubectl: Path
    node_image: str
    images: list[str] = field(default_factory=list)

    def image(self, name: str) -> str:
        return next(i for i in self.images if i.split(":")[0].endswith("/" + name))


def ensure_docker(progress: Callable[[str], None] | None = None) -> None:
    """Raise :class:`DockerUnavailable` with the reason where no engine can be had."""
    try:
        _run_script(["bash", "tools/docker/ensure-docker.sh"], "docker engine", progress)
    except RuntimeError as exc:
        raise DockerUnavailable(str(exc)) from exc


def prepare(models: Path | None = None, progress: Callable[[str], None] | None = None) -> Prepared:
    """Every prerequisite of a kind cluster running rankexp, built or found cached."""
    ensure_docker(progress)
    tools_bin = Path(_run_script(["bash", "tools/kind/tools.sh"], "kind and helm", progress))
    kubectl = ensure_binaries() / "kubectl"
    node = _run_script(["bash", "tools/kind/node-image.sh"], "kind node image", progress)
    images = _run_script(
        ["bash", "images/build.sh", str(models or REPO / "models")], "rankexp images", progress
    ).splitlines()
    return Prepared(tools_bin.resolve(), kubectl, node.splitlines()[-1], images)


class KindCluster:
    """One kind cluster; ``create()`` then ``delete()`` (also as a context manager)."""

    def __init__(
        self,
        prepared: Prepared,
        name: str = "rankexp",
        workdir: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.prepared = prepared
        self.name = name
        self.progress = progress
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"rankexp-kind-{name}-"))
        self.kubeconfig = self.workdir / "kubeconfig"

    @property
    def env(self) -> dict[str, str]:
        path = f"{self.prepared.tools_bin}{os.pathsep}{Path(sys.executable).parent}"
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{path}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _kind(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kind = str(self.prepared.tools_bin / "kind")
        return subprocess.run(
            [kind, *args], env=self.env, capture_output=True, text=True, check=check, timeout=900
        )

    def exists(self) -> bool:
        listed = self._kind("get", "clusters", check=False).stdout.split()
        return self.name in listed

    def create(self, *, reuse: bool = False) -> KindCluster:
        start = time.monotonic()
        if reuse and self.exists():
            self._kind("export", "kubeconfig", "--name", self.name)
            _say(self.progress, f"kind cluster {self.name}: exists, reused")
        else:
            if self.exists():
                self._kind("delete", "cluster", "--name", self.name)
            result = self._kind(
                "create", "cluster", "--name", self.name, "--image", self.prepared.node_image,
                "--config", str(CLUSTER_CONFIG), "--wait", "180s", check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise RuntimeError(f"kind create cluster failed:\n{result.stderr[-3000:]}")
            _say(self.progress, f"kind cluster {self.name}: up in {time.monotonic() - start:.0f} s")
        start = time.monotonic()
        self._kind("load", "docker-image", "--name", self.name, *self.prepared.images)
        _say(self.progress, f"images loaded into the node in {time.monotonic() - start:.0f} s")
        return self

    def delete(self) -> None:
        self._kind("delete", "cluster", "--name", self.name, check=False)

    def __enter__(self) -> KindCluster:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.prepared.kubectl), *args], input=input, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.prepared.tools_bin / "helm"), *args], env=self.env,
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)}: {result.stderr.strip()}")
        return result

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        import json

        result = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        obj: dict[str, Any] = json.loads(result.stdout)
        return obj
