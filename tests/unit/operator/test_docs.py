"""The docs site stays true: the CRD reference is what the models generate, it names every
field, the front page is mirrored, and the site builds strictly (no broken link)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankexp import api
from rankexp.api import crd, reference

MKDOCS = Path(sys.executable).with_name("mkdocs")


def _kind(name: str) -> api.Kind:
    return next(k for k in api.KINDS if k.kind == name)


def test_reference_pages_are_up_to_date(repo: Path) -> None:
    """Golden test: run `make crds` when this fails (it writes docs/reference/ too)."""
    files = reference.reference_files()
    assert sorted(files) == ["alertpolicy.md", "experiment.md"]
    for name, content in files.items():
        path = repo / "docs" / "reference" / name
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == content, f"{path} is stale: run `make crds`"


def test_render_reference_writes_and_checks(tmp_path: Path) -> None:
    assert crd.main(["render", "reference", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alertpolicy.md", "experiment.md"]
    assert crd.main(["render", "reference", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "alertpolicy.md").write_text("stale\n")
    assert crd.main(["render", "reference", "--out", str(tmp_path), "--check"]) == 1
    # `render crds` still writes the CRD YAML, and only that.
    yaml_dir = tmp_path / "crds"
    assert crd.main(["render", "crds", "--out", str(yaml_dir)]) == 0
    assert sorted(p.name for p in yaml_dir.iterdir()) == ["alertpolicy.yaml", "experiment.yaml"]


def _schema_paths(node: dict[str, Any], path: str) -> Iterator[str]:
    """Every named field below ``node``, walked here independently of the generator:
    ``a.b`` for properties, ``a[].b`` through list items, ``a.<key>.b`` through map values."""
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}"
        yield from _schema_paths(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _schema_paths(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_paths(node["additionalProperties"], f"{path}.<key>")


def _rows(page: str) -> dict[str, str]:
    """Field path -> its table row, from a reference page."""
    rows = {}
    for line in page.splitlines():
        match = re.match(r"^\| `([^`]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


@pytest.mark.parametrize("kind", ["Experiment", "AlertPolicy"])
@pytest.mark.parametrize("part", ["spec", "status"])
def test_reference_has_a_row_for_every_field(kind: str, part: str) -> None:
    schema = crd.structural_schema(_kind(kind).model)["properties"][part]
    rows = _rows(reference.render_reference(_kind(kind)))
    paths = [part, *_schema_paths(schema, part)]
    assert len(paths) > 5
    missing = [p for p in paths if p not in rows]
    assert not missing, f"{kind} reference has no row for {missing}"


def test_reference_carries_defaults_bounds_and_cel_messages() -> None:
    page = reference.render_reference(_kind("Experiment"))
    rows = _rows(page)
    assert "`0.05`" in rows["spec.analysis.alpha"] and "(0, 1)" in rows["spec.analysis.alpha"]
    assert "one of `sequential`, `fixed`" in rows["spec.analysis.method"]
    assert "`1`" in rows["spec.variants[].replicas"]
    assert "≤ 10 items" in rows["spec.variants"]
    assert "a list map keyed by `type`" in rows["status.conditions"]
    assert "| integer, **required** |" in rows["spec.variants[].weight"]
    assert "**required**" not in rows["spec.variants[].replicas"]
    assert "`kubectl get exp` prints:" in page
    for kind_ in api.KINDS:
        text = reference.render_reference(kind_)
        for column in kind_.printer_columns:
            assert f"`{column.json_path}`" in text
    schema = api.render_crd(_kind("Experiment"))["spec"]["versions"][0]["schema"]
    for path, rule in reference.rule_sites(schema["openAPIV3Schema"], ""):
        assert rule["message"] in page, (path, rule["message"])
    # a rule is listed at the node it applies to
    assert re.search(r"^\| `spec` \| variant weights must sum to 100 \|", page, re.M)
    assert re.search(
        r"^\| `spec.variants\[\]` \| variant replicas must not be negative", page, re.M
    )
    assert re.search(r"^\| the object \| experiment name must be a DNS-1035 label", page, re.M)


def test_pipes_in_code_do_not_split_table_cells() -> None:
    """GFM ends a cell at any unescaped `|`, even inside backticks; Python-Markdown keeps a
    backslash inside them. A pattern with `|` is therefore an entity-escaped <code>."""
    assert reference.code("^a+$") == "`^a+$`"
    cell = reference.code(r"^(\+|-)?[0-9]*$")
    assert "|" not in cell and cell.startswith("<code>") and "&#124;" in cell
    for kind_ in api.KINDS:
        for line in reference.render_reference(kind_).splitlines():
            if line.startswith("| `"):
                cells = re.split(r"(?<!\\)\|", line)
                assert len(cells) in (5, 6, 7), line  # 3, 4 or 5 columns


def test_index_mirrors_the_readme(repo: Path) -> None:
    """docs/index.md is README.md with the docs/ prefix taken off its links; regenerate
    with `sed 's#](docs/#](#g' README.md > docs/index.md`."""
    readme = (repo / "README.md").read_text()
    assert (repo / "docs" / "index.md").read_text() == readme.replace("](docs/", "](")


def test_readme_experiment_is_valid(repo: Path) -> None:
    """The manifest on the front page is a valid Experiment (the models mirror the CEL rules)."""
    readme = (repo / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    manifests = [yaml.safe_load(b) for b in blocks]
    experiments = [m for m in manifests if isinstance(m, dict) and m.get("kind") == "Experiment"]
    assert len(experiments) == 1
    manifest = experiments[0]
    assert manifest["apiVersion"] == api.API_VERSION
    api.Experiment.model_validate({"spec": manifest["spec"]})


def test_readme_is_a_front_page(repo: Path) -> None:
    readme = (repo / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    first_block = re.search(r"```console\n(.*?)```", readme, re.S)
    assert first_block and first_block.group(1).startswith("make demo")
    assert "make test" in first_block.group(1)
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (repo / link).exists(), link


def test_the_site_builds_strictly(repo: Path, tmp_path: Path) -> None:
    """`make docs`: a broken link or anchor, or a page missing from the nav, fails."""
    result = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=repo,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "experiment" / "index.html").exists()
