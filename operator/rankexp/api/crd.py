"""Rendering: the pydantic models as Kubernetes CRDs (structural OpenAPI v3, CEL, printer columns).

`python -m rankexp.api render crds` (``make crds``) writes crds/experiment.yaml and
crds/alertpolicy.yaml from the models, and the same into the Helm chart's crds/;
tests/unit/operator/test_crds.py fails when the checked-in files are stale.

CEL cost: the API server estimates the worst-case cost of every rule from the schema's
bounds (maxItems, maxLength) and refuses a CRD whose rules could be too expensive, so every
list and string a rule touches is bounded.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from rankexp.api.alertpolicy import AlertPolicy
from rankexp.api.common import (
    GENERATED_HEADER,
    GROUP,
    MAX_EXPERIMENT_NAME,
    VERSION,
    _Model,
    cel,
)
from rankexp.api.experiment import Experiment

# ---------------------------------------------------------------------------------------
# Rendering: pydantic JSON Schema -> Kubernetes structural OpenAPI v3 schema
# ---------------------------------------------------------------------------------------

# Keys that JSON Schema (pydantic) emits but a CRD schema does not accept or need.
_DROP_KEYS = {"title", "examples", "additionalProperties", "$defs"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Turn one pydantic JSON Schema node into a structural schema node (recursively)."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    # Merge references and wrappers first (raw), then convert the merged node exactly once.
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        return _resolve({**copy.deepcopy(target), **node}, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _resolve({**inner, **node}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        types = sorted(o.get("type", "") for o in options)
        if types == ["integer", "string"]:
            node.pop("anyOf")
            node["x-kubernetes-int-or-string"] = True
        elif len(options) == 1:
            # Optional[X]: the field is simply not required.
            node.pop("anyOf")
            return _resolve({**options[0], **node}, defs)
        else:
            raise ValueError(f"no structural form for anyOf {node['anyOf']!r}")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "default" in node and node["default"] is None:
        del node["default"]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _resolve(schema, defs) for name, schema in value.items()}
        elif key in {"items"}:
            out[key] = _resolve(value, defs)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = value
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        out["additionalProperties"] = _resolve(additional, defs)
    if out.get("type") == "string" and out.get("format") == "date-time":
        out.pop("maxLength", None)
    return _ordered(out)


_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "required",
    "items",
    "properties",
    "additionalProperties",
    "x-kubernetes-validations",
)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """A stable, readable key order: scalars first, nested schemas last."""
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    return schema


class PrinterColumn(_Model):
    name: str
    type: str
    json_path: str = Field(alias="jsonPath")
    description: str | None = None
    priority: int | None = None
    format: str | None = None


class Kind(_Model):
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    model: Any  # type[BaseModel]; pydantic cannot validate a class field
    printer_columns: list[PrinterColumn]
    root_validations: list[dict[str, str]] = Field(default_factory=list)


AGE = PrinterColumn(name="Age", type="date", jsonPath=".metadata.creationTimestamp")

KINDS: tuple[Kind, ...] = (
    Kind(
        kind="Experiment",
        plural="experiments",
        singular="experiment",
        short_names=["exp"],
        model=Experiment,
        printer_columns=[
            PrinterColumn(name="Phase", type="string", jsonPath=".status.phase"),
            PrinterColumn(name="Control", type="string", jsonPath=".spec.control"),
            PrinterColumn(name="Winner", type="string", jsonPath=".status.winner"),
            PrinterColumn(
                name="Lift",
                type="number",
                jsonPath=".status.analysis.lift",
                description="Relative lift of the best treatment on the primary metric.",
            ),
            PrinterColumn(
                name="P-Value",
                type="number",
                jsonPath=".status.analysis.pValue",
                description="p-value of the primary metric.",
            ),
            AGE,
        ],
        root_validations=[
            cel(
                f"size(self.metadata.name) <= {MAX_EXPERIMENT_NAME}"
                " && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                f"experiment name must be a DNS-1035 label of at most {MAX_EXPERIMENT_NAME} "
                "characters (it prefixes the names of its Services)",
            ),
            cel(
                "self.spec.variants.all(v, size(self.metadata.name) + size(v.name) <= 62)",
                "experiment name + '-' + variant name must fit in 63 characters",
            ),
        ],
    ),
    Kind(
        kind="AlertPolicy",
        plural="alertpolicies",
        singular="alertpolicy",
        short_names=["ap"],
        model=AlertPolicy,
        printer_columns=[
            PrinterColumn(name="Interval", type="string", jsonPath=".spec.interval"),
            PrinterColumn(name="Firing", type="integer", jsonPath=".status.firingCount"),
            PrinterColumn(name="Last-Evaluation", type="date", jsonPath=".status.lastEvaluation"),
            AGE,
        ],
    ),
)


def render_crd(kind: Kind) -> dict[str, Any]:
    schema = structural_schema(kind.model)
    properties = schema.pop("properties")
    root: dict[str, Any] = {
        "description": schema.get("description", ""),
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": properties["spec"],
            "status": properties["status"],
        },
    }
    if kind.root_validations:
        root["x-kubernetes-validations"] = kind.root_validations
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            # Keep user data when a Helm release that installed the CRD is uninstalled.
            "annotations": {"helm.sh/resource-policy": "keep"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": kind.short_names,
                "categories": ["rankexp"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        c.model_dump(by_alias=True, exclude_none=True) for c in kind.printer_columns
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_yaml(kind: Kind) -> str:
    body = yaml.safe_dump(render_crd(kind), sort_keys=False, width=100)
    return GENERATED_HEADER + body


def crd_files() -> dict[str, str]:
    """File name (inside crds/) -> content."""
    return {f"{kind.singular}.yaml": render_yaml(kind) for kind in KINDS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rankexp.api")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser(
        "render", help="write the CRD YAML files, or the CRD reference pages of the docs"
    )
    render.add_argument("what", choices=["crds", "reference"])
    render.add_argument(
        "--out",
        type=Path,
        action="append",
        help="output directory (repeatable; default: crds and the chart's crds for `crds`, "
        "docs/reference for `reference`)",
    )
    render.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    if args.what == "reference":
        # Imported here: rankexp.api.reference builds on this module.
        from rankexp.api.reference import reference_files

        files, default_out = reference_files(), [Path("docs/reference")]
    else:
        files, default_out = crd_files(), [Path("crds"), Path("charts/rankexp/crds")]
    stale = []
    for out in args.out or default_out:
        for name, content in files.items():
            path = out / name
            if args.check:
                if not path.exists() or path.read_text() != content:
                    stale.append(str(path))
                continue
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            sys.stdout.write(f"wrote {path}\n")
    if stale:
        sys.stderr.write(f"stale (run `make crds`): {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
