"""Fixtures for the operator's unit tests: sample manifests and an in-memory ChildStore."""

from __future__ import annotations

import builtins
import copy
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]


class FakeStore:
    """In-memory ChildStore with the API server's no-op rule: applying identical content
    leaves resourceVersion alone."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._versions = itertools.count(1)
        self.applied: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str]] = []

    @staticmethod
    def _content(obj: Mapping[str, Any]) -> dict[str, Any]:
        content = {k: v for k, v in obj.items() if k != "status"}
        meta = dict(content["metadata"])
        meta.pop("resourceVersion", None)
        content["metadata"] = meta
        return content

    def list(self, kind: str, namespace: str, selector: str) -> builtins.list[dict[str, Any]]:
        key, value = selector.split("=")
        return [
            copy.deepcopy(obj)
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind and ns == namespace and obj["metadata"]["labels"].get(key) == value
        ]

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        self.applied.append((key[0], key[2]))
        new = copy.deepcopy(dict(obj))
        old = self.objects.get(key)
        if old is not None and self._content(old) == self._content(new):
            return copy.deepcopy(old)
        new["metadata"]["resourceVersion"] = str(next(self._versions))
        if old is not None and "status" in old:
            new["status"] = old["status"]
        self.objects[key] = new
        return copy.deepcopy(new)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, name))
        self.objects.pop((kind, namespace, name), None)

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.objects[(kind, namespace, name)]

    def names(self, kind: str) -> builtins.list[str]:
        return sorted(name for (k, _, name) in self.objects if k == kind)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def _load_sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "crds" / "samples" / name).read_text())
    return data


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def load_sample() -> Any:
    """load_sample("experiment.yaml") -> the parsed manifest from crds/samples/."""
    return _load_sample


@pytest.fixture
def experiment_body() -> dict[str, Any]:
    """The Experiment sample as the API server would hand it to the operator."""
    body = _load_sample("experiment.yaml")
    body["metadata"].update(
        {"namespace": "default", "uid": "0000-1111", "generation": 1, "resourceVersion": "7"}
    )
    return body
