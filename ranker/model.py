"""The two-tower ranking model and its on-disk format."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

WEIGHTS_FILE = "model.pt"
SCHEMA_FILE = "feature_schema.json"
METADATA_FILE = "metadata.json"
SNAPSHOT_FILE = "snapshot.npz"


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


class ModelLoadError(RuntimeError):
    """A model directory is missing, incomplete or corrupt."""


@dataclass
class LoadedModel:
    """A model directory loaded into memory, ready to serve."""

    path: Path
    model: TwoTowerModel
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
    # metadata last: its presence marks a complete directory (make models uses it)
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def load_model_dir(uri: str) -> LoadedModel:
    """Load and validate a model directory; raise ModelLoadError saying what is wrong."""
    path = resolve_model_path(uri)
    if not path.is_dir():
        raise ModelLoadError(f"model directory {path} does not exist")
    for name in (WEIGHTS_FILE, SCHEMA_FILE, METADATA_FILE, SNAPSHOT_FILE):
        if not (path / name).is_file():
            raise ModelLoadError(f"model directory {path} lacks {name}")
    try:
        schema = json.loads((path / SCHEMA_FILE).read_text())
        metadata = json.loads((path / METADATA_FILE).read_text())
        user_dim = int(schema["user_dim"])
        item_dim = int(schema["item_dim"])
        model = TwoTowerModel(
            user_dim, item_dim, int(schema["embedding_dim"]), int(schema["hidden_dim"])
        )
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        with np.load(path / SNAPSHOT_FILE) as snap:
            arrays = {k: snap[k] for k in snap.files}
    except ModelLoadError:
        raise
    except Exception as exc:  # corrupt files raise anything from json to pickle errors
        raise ModelLoadError(f"model directory {path} is corrupt: {exc}") from exc
    model.eval()
    try:
        loaded = LoadedModel(
            path=path,
            model=model,
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
    if loaded.user_x.shape[1:] != (user_dim,) or loaded.item_x.shape[1:] != (item_dim,):
        raise ModelLoadError(f"model directory {path}: snapshot does not match feature schema")
    if not (np.isfinite(loaded.user_x).all() and np.isfinite(loaded.item_x).all()):
        raise ModelLoadError(f"model directory {path}: snapshot holds non-finite features")
    if math.isnan(float(model.bias.item())):
        raise ModelLoadError(f"model directory {path}: weights hold NaN")
    return loaded
