"""Fixtures of the chart tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def helm() -> Path:
    """helm from the Go module proxy (tools/kind/tools.sh, cached outside the clone)."""
    out = subprocess.run(
        ["bash", str(REPO / "tools/kind/tools.sh")], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip().splitlines()[-1]) / "helm"
