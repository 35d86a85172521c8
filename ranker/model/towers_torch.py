"""The torch backend of the towers (ranker.model.towers)."""

from __future__ import annotations

import numpy as np
import torch

from ranker.model.artifacts import ModelSnapshot
from ranker.model.network import TwoTowerModel, load_model_dir
from ranker.model.towers import Array


class TorchTowers:
    backend = "torch"

    def __init__(self, model: TwoTowerModel, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.model = model
        self.bias = float(model.bias.detach().item())

    @classmethod
    def from_dir(cls, snapshot: ModelSnapshot, threads: int = 1) -> TorchTowers:
        return cls(load_model_dir(str(snapshot.path)).model, threads)

    def user(self, x: Array) -> Array:
        with torch.inference_mode():
            out: Array = self.model.user_embedding(torch.from_numpy(x)).numpy().astype(np.float32)
        return out

    def item(self, x: Array) -> Array:
        with torch.inference_mode():
            out: Array = self.model.item_embedding(torch.from_numpy(x)).numpy().astype(np.float32)
        return out
