"""The onnxruntime backend of the towers (ranker.model.towers): serving without torch."""

from __future__ import annotations

from typing import Any

import numpy as np

from ranker.model.artifacts import ITEM_TOWER_FILE, USER_TOWER_FILE, ModelLoadError, ModelSnapshot
from ranker.model.towers import Array


class OnnxTowers:
    backend = "onnx"

    def __init__(self, snapshot: ModelSnapshot, threads: int = 1) -> None:
        import onnxruntime as ort

        entry = snapshot.metadata.get("onnx") or {}
        if "score_bias" not in entry:
            raise ModelLoadError(
                f"model directory {snapshot.path}: metadata.json has no onnx entry "
                "(run `ranker export-onnx` on it)"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._user = ort.InferenceSession(
                str(snapshot.path / entry.get("user_tower", USER_TOWER_FILE)),
                options, providers=["CPUExecutionProvider"],
            )  # fmt: skip
            self._item = ort.InferenceSession(
                str(snapshot.path / entry.get("item_tower", ITEM_TOWER_FILE)),
                options, providers=["CPUExecutionProvider"],
            )  # fmt: skip
        except Exception as exc:  # a corrupt graph raises onnxruntime's own errors
            raise ModelLoadError(f"model directory {snapshot.path}: bad ONNX tower: {exc}") from exc
        self.bias = float(entry["score_bias"])

    @staticmethod
    def _run(session: Any, x: Array) -> Array:
        out: Array = session.run(["embedding"], {"x": np.ascontiguousarray(x, np.float32)})[0]
        return out

    def user(self, x: Array) -> Array:
        return self._run(self._user, x)

    def item(self, x: Array) -> Array:
        return self._run(self._item, x)
