"""The GitOps health checks in gitops/, run by the engines Argo CD and Flux embed.

tools/gitops-health links Argo CD's own Lua package (github.com/argoproj/argo-cd/v3
util/lua) and Flux's CEL status reader (github.com/fluxcd/pkg/runtime/cel, the one
kustomize-controller uses), built from the Go module proxy. The test cases are Argo CD's
own format (health_test.yaml, actions/action_test.yaml) over status objects captured from
the kind e2e (`RANKEXP_CAPTURE_TESTDATA=1 make e2e`), and gitops/flux/health_test.yaml
over the same objects.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
GITOPS = REPO / "gitops"
ARGOCD = GITOPS / "argocd" / "resource_customizations"
FLUX = GITOPS / "flux"
KINDS = ("Experiment", "AlertPolicy")


def summary(out: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    """(passed, failed) from the tool's last line."""
    passed = sum(line.startswith("PASS") for line in out.stdout.splitlines())
    failed = sum(line.startswith("FAIL") for line in out.stdout.splitlines())
    return passed, failed


def cases(path: Path, key: str = "tests") -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load(path.read_text())[key]
    return loaded


@pytest.mark.parametrize("libs", ["cm", "tests"])
def test_argocd_health_checks_and_actions_in_argocds_own_engine(
    gitops_health: Any, libs: str
) -> None:
    """``cm``: the libraries an argocd-cm entry gets (none opened); ``tests``: those
    Argo CD's own test suite gives its built-in scripts."""
    out = gitops_health.run("argocd", "-libs", libs, str(ARGOCD))
    assert out.returncode == 0, out.stdout + out.stderr
    health = sum(len(cases(ARGOCD / "rankexp.io" / k / "health_test.yaml")) for k in KINDS)
    actions = yaml.safe_load((ARGOCD / "rankexp.io/Experiment/actions/action_test.yaml")
                             .read_text())  # fmt: skip
    expected = health + len(actions["discoveryTests"]) + len(actions["actionTests"])
    assert summary(out) == (expected, 0), out.stdout


def test_flux_health_check_exprs_in_fluxs_own_reader(gitops_health: Any) -> None:
    tests = FLUX / "health_test.yaml"
    for exprs in (FLUX / "health-check-exprs.yaml", FLUX / "kustomization.yaml"):
        out = gitops_health.run("flux", str(exprs), str(tests))
        assert out.returncode == 0, out.stdout + out.stderr
        assert summary(out) == (len(cases(tests)), 0), out.stdout


def test_a_wrong_expectation_fails(gitops_health: Any, tmp_path: Path) -> None:
    copy = tmp_path / "gitops"
    shutil.copytree(GITOPS, copy)
    path = copy / "argocd/resource_customizations/rankexp.io/Experiment/health_test.yaml"
    text = path.read_text()
    assert "status: Healthy" in text
    path.write_text(text.replace("status: Healthy", "status: Degraded", 1))
    out = gitops_health.run("argocd", "-libs", "cm", str(copy / "argocd/resource_customizations"))
    assert out.returncode == 1
    assert summary(out)[1] == 1 and "want" in out.stdout

    flux_tests = copy / "flux" / "health_test.yaml"
    wrong = cases(flux_tests)
    wrong[0]["status"] = "Failed" if wrong[0]["status"] != "Failed" else "Current"
    flux_tests.write_text(yaml.safe_dump({"tests": wrong}))
    out = gitops_health.run("flux", str(copy / "flux/health-check-exprs.yaml"), str(flux_tests))
    assert out.returncode == 1 and summary(out)[1] == 1


def test_every_captured_object_is_a_case_of_both_tools() -> None:
    """The testdata are objects captured from a cluster (uid, resourceVersion,
    creationTimestamp, managedFields stripped), each one checked by both tools."""
    flux_inputs = {(FLUX / c["inputPath"]).resolve() for c in cases(FLUX / "health_test.yaml")}
    for kind in KINDS:
        folder = ARGOCD / "rankexp.io" / kind
        files = sorted((folder / "testdata").glob("*.yaml"))
        assert files, kind
        argocd_inputs = {(folder / c["inputPath"]).resolve()
                         for c in cases(folder / "health_test.yaml")}  # fmt: skip
        assert set(files) == argocd_inputs, kind
        assert set(files) <= flux_inputs, kind
        for path in files:
            obj = yaml.safe_load(path.read_text())
            meta = obj["metadata"]
            assert obj["kind"] == kind and "managedFields" not in meta, path
            assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"], path


def test_the_files_users_apply_are_rendered_from_the_tested_ones() -> None:
    out = subprocess.run([sys.executable, str(GITOPS / "render.py"), "--check"],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load((GITOPS / "argocd" / "argocd-cm.yaml").read_text())
    for kind in KINDS:
        script = (ARGOCD / "rankexp.io" / kind / "health.lua").read_text()
        assert config["data"][f"resource.customizations.health.rankexp.io_{kind}"] == script
    actions = yaml.safe_load(
        config["data"]["resource.customizations.actions.rankexp.io_Experiment"]
    )
    assert [d["name"] for d in actions["definitions"]] == ["promote"]
