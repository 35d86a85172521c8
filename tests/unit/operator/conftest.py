"""Fixtures for the operator's unit tests: sample manifests. There is no in-memory API
server here; anything that talks to one is in tests/integration/operator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]


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
