"""The two-tower ranking model and its on-disk format."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ranker.model.artifacts import (
    ITEM_TOWER_FILE,
    METADATA_FILE,
    SCHEMA_FILE,
    SNAPSHOT_FILE,
    USER_TOWER_FILE,
    WEIGHTS_FILE,
    ModelLoadError,
    ModelSnapshot,
    load_snapshot,
    resolve_model_path,
)

__all__ = [
    "ITEM_TOWER_FILE",
    "METADATA_FILE",
    "SCHEMA_FILE",
    "SNAPSHOT_FILE",
    "USER_TOWER_FILE",
    "WEIGHTS_FILE",
    "LoadedModel",
    "ModelLoadError",
    "TwoTowerModel",
    "export_onnx",
    "load_model_dir",
    "resolve_model_path",
    "save_model_dir",
]


def _tower(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


class TwoTowerModel(nn.Module):
    """User tower and item tower; the score is sigmoid(<u, i> + b).

    Inputs are standardised inside the model with buffers set from the
    training data, so callers pass raw feature values.
    """

    user_mean: torch.Tensor
    user_std: torch.Tensor
    item_mean: torch.Tensor
    item_std: torch.Tensor

    def __init__(
        self, user_dim: int, item_dim: int, embedding_dim: int = 64, hidden_dim: int = 128
    ) -> None:
        super().__init__()
        self.user_dim = user_dim
        self.item_dim = item_dim
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.user_tower = _tower(user_dim, hidden_dim, embedding_dim)
        self.item_tower = _tower(item_dim, hidden_dim, embedding_dim)
        self.bias = nn.Parameter(torch.zeros(1))
        self.register_buffer("user_mean", torch.zeros(user_dim))
        self.register_buffer("user_std", torch.ones(user_dim))
        self.register_buffer("item_mean", torch.zeros(item_dim))
        self.register_buffer("item_std", torch.ones(item_dim))

    def set_normalisation(self, user_x: torch.Tensor, item_x: torch.Tensor) -> None:
        self.user_mean.copy_(user_x.mean(0))
        self.user_std.copy_(user_x.std(0).clamp_min(1e-6))
        self.item_mean.copy_(item_x.mean(0))
        self.item_std.copy_(item_x.std(0).clamp_min(1e-6))

    def user_embedding(self, user_x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.user_tower((user_x - self.user_mean) / self.user_std)
        return out

    def item_embedding(self, item_x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.item_tower((item_x - self.item_mean) / self.item_std)
        return out

    def logits(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        u = self.user_embedding(user_x)
        i = self.item_embedding(item_x)
        return (u * i).sum(dim=-1, keepdim=True) + self.bias

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """Row-aligned pairs in, (N, 1) click probabilities out."""
        return torch.sigmoid(self.logits(user_x, item_x))


@dataclass
class LoadedModel(ModelSnapshot):
    """A model directory loaded into memory with its torch weights."""

    model: TwoTowerModel = None  # type: ignore[assignment]  # always set by load_model_dir


def save_model_dir(
    out: Path,
    model: TwoTowerModel,
    schema: dict[str, Any],
    metadata: dict[str, Any],
    snapshot: dict[str, npt.NDArray[Any]],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / WEIGHTS_FILE)
    (out / SCHEMA_FILE).write_text(json.dumps(schema, indent=2) + "\n")
    np.savez(out / SNAPSHOT_FILE, **snapshot)  # type: ignore[arg-type]
    metadata = {**metadata, "onnx": export_onnx_state(model.state_dict(), out)}
    # metadata last: its presence marks a complete directory (make models uses it)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def export_onnx_state(state: dict[str, Any], out: Path) -> dict[str, Any]:
    from ranker.model.export import export_towers

    return export_towers(state, out)


def export_onnx(uri: str) -> dict[str, Any]:
    """Add the ONNX towers to an existing model directory (``ranker export-onnx``)."""
    loaded = load_model_dir(uri)
    entry = export_onnx_state(loaded.model.state_dict(), loaded.path)
    metadata = {**loaded.metadata, "onnx": entry}
    (loaded.path / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return entry


def load_model_dir(uri: str) -> LoadedModel:
    """Load and validate a model directory with its torch weights; raise ModelLoadError
    saying what is wrong."""
    snapshot = load_snapshot(uri, required=(WEIGHTS_FILE,))
    path = snapshot.path
    schema = snapshot.schema
    try:
        model = TwoTowerModel(
            int(schema["user_dim"]),
            int(schema["item_dim"]),
            int(schema["embedding_dim"]),
            int(schema["hidden_dim"]),
        )
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # corrupt files raise anything from json to pickle errors
        raise ModelLoadError(f"model directory {path} is corrupt: {exc}") from exc
    model.eval()
    if math.isnan(float(model.bias.item())):
        raise ModelLoadError(f"model directory {path}: weights hold NaN")
    fields = {k: getattr(snapshot, k) for k in ModelSnapshot.__dataclass_fields__}
    return LoadedModel(**fields, model=model)
