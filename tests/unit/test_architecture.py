"""The architecture contracts of pyproject.toml ([tool.importlinter]) hold, and each fails
when broken: a copy of the packages with one forbidden import added must make
``lint-imports`` name that contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _tree(tmp: Path) -> Path:
    """A copy of both packages laid out as importable top-level packages, and the config."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "ranker", tmp / "ranker", ignore=ignore)
    shutil.copytree(REPO / "operator" / "rankexp", tmp / "rankexp", ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint(_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


# (file to edit, import to add, the contract's name as lint-imports prints it, start)
BREAKS = [
    ("ranker/serve/app.py", "import rankexp.api", "The data plane (ranker) never imports"),
    ("rankexp/analysis/stats.py", "import requests", "rankexp.analysis is pure"),
    ("rankexp/analysis/decide.py", "import rankexp.prom.metrics", "rankexp.analysis is pure"),
    ("rankexp/experiment/loop.py", "import rankexp.local.cluster", "The product never imports"),
    ("ranker/cli.py", "import rankexp.local.stack", "The product never imports"),
    ("rankexp/prom/metrics.py", "import rankexp.experiment.loop", "Control-plane layers"),
    ("rankexp/alerting/state.py", "import rankexp.experiment.rollout", "Control-plane layers"),
    ("rankexp/experiment/reconcile.py", "import rankexp.alerting.state", "Control-plane layers"),
    ("rankexp/page/app.py", "import rankexp.cli.commands", "Control-plane layers"),
    ("ranker/route/router.py", "import ranker.serve.app", "Data-plane layers"),
    ("ranker/protocol/hashing.py", "import ranker.world.ground_truth", "Data-plane layers"),
    ("ranker/storage/fetch.py", "import numpy", "ranker.storage (the fetch-model init container)"),
    ("ranker/storage/s3.py", "import ranker.serve.app", "ranker.storage (the fetch-model init"),
]


@pytest.mark.parametrize(("path", "line", "contract"), BREAKS, ids=[b[0] for b in BREAKS])
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, path: str, line: str, contract: str
) -> None:
    root = _tree(tmp_path)
    target = root / path
    target.write_text(target.read_text() + f"\n{line}  # injected by the test\n")
    result = _lint(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert any(name.startswith(contract) for name in _broken(result.stdout)), result.stdout
    assert path.removesuffix(".py").replace("/", ".") in result.stdout


def _broken(report: str) -> list[str]:
    """The names of the broken contracts in lint-imports' summary (names may wrap)."""
    summary = report.split("Contracts:")[0].split("dependencies.")[-1]
    lines = [ln for ln in summary.splitlines() if ln.strip().strip("-")]
    text = " ".join(" ".join(lines).split())
    names, rest = [], text
    for _ in range(text.count(" BROKEN") + text.count(" KEPT")):
        k, b = rest.find(" KEPT"), rest.find(" BROKEN")
        if b != -1 and (k == -1 or b < k):
            names.append(rest[:b].strip())
            rest = rest[b + len(" BROKEN") :]
        else:
            rest = rest[k + len(" KEPT") :]
    return names
