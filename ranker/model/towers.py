"""The two towers behind a scoring backend: torch or onnxruntime.

The engine (:mod:`ranker.model.engine`) only needs a user embedding, item embeddings and the
score bias; where they come from is a backend. ``torch`` runs the trained module
(training machines, the naive benchmark path); ``onnx`` runs the ONNX graphs that
``ranker train`` writes with onnxruntime, so the serving image carries no torch.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from ranker.model.artifacts import ITEM_TOWER_FILE, USER_TOWER_FILE, ModelLoadError, ModelSnapshot

Backend = Literal["auto", "torch", "onnx"]
Array = npt.NDArray[np.float32]


class Towers(Protocol):
    backend: str
    bias: float

    def user(self, x: Array) -> Array:
        """(n, user_dim) raw features -> (n, embedding_dim)."""
        ...

    def item(self, x: Array) -> Array:
        """(n, item_dim) raw features -> (n, embedding_dim)."""
        ...


def _has_onnx(snapshot: ModelSnapshot) -> bool:
    return all((snapshot.path / f).is_file() for f in (USER_TOWER_FILE, ITEM_TOWER_FILE))


def load_towers(snapshot: ModelSnapshot, backend: Backend = "auto", threads: int = 1) -> Towers:
    """The towers of a model directory. ``auto``: onnx where onnxruntime is installed and
    the directory has the ONNX graphs, else torch."""
    if backend == "auto":
        try:
            import onnxruntime  # noqa: F401

            backend = "onnx" if _has_onnx(snapshot) else "torch"
        except ImportError:
            backend = "torch"
    if backend == "onnx":
        from ranker.model.towers_onnx import OnnxTowers

        return OnnxTowers(snapshot, threads)
    try:
        from ranker.model.towers_torch import TorchTowers
    except ImportError as exc:
        raise ModelLoadError(
            f"the torch backend needs torch, which is not installed: {exc}"
        ) from None
    return TorchTowers.from_dir(snapshot, threads)
