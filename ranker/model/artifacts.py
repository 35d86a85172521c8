"""A model directory on disk, read without torch: what serving needs.

``ranker train`` writes a versioned directory:

* ``model.pt``: the two-tower weights (torch; training and the torch backend);
* ``user_tower.onnx``, ``item_tower.onnx``: the same towers as ONNX graphs (the onnx
  backend, which serves without torch);
* ``feature_schema.json``, ``snapshot.npz`` (the feature snapshot served) and
  ``metadata.json`` (version, offline metrics, the score bias, written last: its
  presence marks a complete directory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt

WEIGHTS_FILE = "model.pt"
SCHEMA_FILE = "feature_schema.json"
METADATA_FILE = "metadata.json"
SNAPSHOT_FILE = "snapshot.npz"
USER_TOWER_FILE = "user_tower.onnx"
ITEM_TOWER_FILE = "item_tower.onnx"


class ModelLoadError(RuntimeError):
    """A model directory is missing, incomplete or corrupt."""


@dataclass
class ModelSnapshot:
    """Everything of a model directory but the weights: features, schema, metadata."""

    path: Path
    schema: dict[str, Any]
    metadata: dict[str, Any]
    user_ids: npt.NDArray[np.int64]
    user_x: npt.NDArray[np.float32]
    item_ids: npt.NDArray[np.int64]
    item_x: npt.NDArray[np.float32]
    item_category: npt.NDArray[np.int64]
    item_age_hours: npt.NDArray[np.float64]
    item_popularity: npt.NDArray[np.float64]

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unknown"))


def resolve_model_path(uri: str) -> Path:
    """A local path or a file:// URI; other schemes are not servable here."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme == "file" else uri)
    raise ModelLoadError(f"unsupported model URI scheme {parsed.scheme!r} in {uri!r}")


def load_snapshot(uri: str, required: tuple[str, ...] = ()) -> ModelSnapshot:
    """Read and validate a model directory's schema, metadata and feature snapshot;
    ``required`` names the weight files the caller will load."""
    path = resolve_model_path(uri)
    if not path.is_dir():
        raise ModelLoadError(f"model directory {path} does not exist")
    for name in (SCHEMA_FILE, METADATA_FILE, SNAPSHOT_FILE, *required):
        if not (path / name).is_file():
            raise ModelLoadError(f"model directory {path} lacks {name}")
    try:
        schema = json.loads((path / SCHEMA_FILE).read_text())
        metadata = json.loads((path / METADATA_FILE).read_text())
        user_dim = int(schema["user_dim"])
        item_dim = int(schema["item_dim"])
        with np.load(path / SNAPSHOT_FILE) as snap:
            arrays = {k: snap[k] for k in snap.files}
    except Exception as exc:  # corrupt files raise anything from json to zip errors
        raise ModelLoadError(f"model directory {path} is corrupt: {exc}") from exc
    try:
        snapshot = ModelSnapshot(
            path=path,
            schema=schema,
            metadata=metadata,
            user_ids=arrays["user_ids"].astype(np.int64),
            user_x=arrays["user_x"].astype(np.float32),
            item_ids=arrays["item_ids"].astype(np.int64),
            item_x=arrays["item_x"].astype(np.float32),
            item_category=arrays["item_category"].astype(np.int64),
            item_age_hours=arrays["item_age_hours"].astype(np.float64),
            item_popularity=arrays["item_popularity"].astype(np.float64),
        )
    except KeyError as exc:
        raise ModelLoadError(f"model directory {path}: snapshot lacks array {exc}") from exc
    if snapshot.user_x.shape[1:] != (user_dim,) or snapshot.item_x.shape[1:] != (item_dim,):
        raise ModelLoadError(f"model directory {path}: snapshot does not match feature schema")
    if not (np.isfinite(snapshot.user_x).all() and np.isfinite(snapshot.item_x).all()):
        raise ModelLoadError(f"model directory {path}: snapshot holds non-finite features")
    return snapshot
