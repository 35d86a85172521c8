"""kube-apiserver, kubectl and etcd from ``make envtest`` (``tools/envtest.sh``), cached in
``${XDG_CACHE_HOME:-~/.cache}/rankexp/<k8s-version>/bin`` outside the clone.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

log = logging.getLogger("rankexp.local.binaries")

#: The Kubernetes release tools/envtest/go.mod builds. When the module runs from a
#: source tree, that go.mod is read instead; a test keeps the two equal.
K8S_VERSION = "v1.36.3"
BINARIES = ("kube-apiserver", "kubectl", "etcd")
#: Points at a directory holding the three binaries, instead of the cache.
BIN_DIR_ENV = "RANKEXP_ENVTEST_BIN_DIR"

_REPO_ROOT = Path(__file__).resolve().parents[3]
_ENVTEST_SCRIPT = _REPO_ROOT / "tools" / "envtest.sh"
_ENVTEST_GOMOD = _REPO_ROOT / "tools" / "envtest" / "go.mod"

# --------------------------------------------------------------------------- binaries


class BinariesMissingError(FileNotFoundError):
    """The control-plane binaries are not in the cache: run ``make envtest``."""


def envtest_version() -> str:
    """The Kubernetes version of the binaries: from tools/envtest/go.mod when present."""
    try:
        text = _ENVTEST_GOMOD.read_text()
    except OSError:
        return K8S_VERSION
    match = re.search(r"^\s*k8s\.io/kubernetes\s+(v\d+\.\d+\.\d+)\b", text, re.MULTILINE)
    return match.group(1) if match else K8S_VERSION


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-$HOME/.cache}/rankexp``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "rankexp"


def find_binaries(version: str | None = None) -> Path:
    """The directory holding kube-apiserver, kubectl and etcd.

    ``$RANKEXP_ENVTEST_BIN_DIR`` wins when set; otherwise the ``make envtest`` cache
    for ``version`` (default: :func:`envtest_version`). Raises
    :class:`BinariesMissingError` saying to run ``make envtest`` when any is missing.
    """
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        bin_dir = Path(override)
        origin = f"${BIN_DIR_ENV}={override}"
    else:
        bin_dir = cache_root() / (version or envtest_version()) / "bin"
        origin = "the envtest cache"
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise BinariesMissingError(
            f"{', '.join(missing)} not found in {bin_dir} ({origin}). Run `make envtest` "
            "(bash tools/envtest.sh) to build kube-apiserver, kubectl and etcd from the Go "
            "module proxy into the cache; a cold build takes several minutes."
        )
    return bin_dir


def build_binaries(script: Path = _ENVTEST_SCRIPT) -> Path:
    """Run tools/envtest.sh (a no-op taking seconds when the cache is good).

    Its progress goes to this process's stderr; returns the bin directory it prints.
    """
    if not script.is_file():
        raise BinariesMissingError(
            f"{script} not found: build the binaries with `make envtest` in a rankexp clone"
        )
    result = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise BinariesMissingError(
            f"bash {script} failed with exit code {result.returncode} (see its stderr above)"
        )
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise BinariesMissingError(f"bash {script} printed no bin directory")
    return Path(lines[-1])


def ensure_binaries() -> Path:
    """:func:`find_binaries`, building them with tools/envtest.sh when missing."""
    try:
        return find_binaries()
    except BinariesMissingError:
        if os.environ.get(BIN_DIR_ENV):
            raise
        log.warning("control-plane binaries missing: building them with %s", _ENVTEST_SCRIPT)
    build_binaries()
    return find_binaries()
