"""The two towers as ONNX graphs, written beside the torch weights by ``ranker train``.

Each tower is a small fixed graph: standardise the raw features with the training
mean and standard deviation, then Linear-ReLU-Linear-ReLU-Linear as ``Gemm`` and
``Relu`` nodes with the trained weights as initialisers. It is built with
``onnx.helper`` from the state dict rather than traced by an exporter, so what is
written does not depend on the torch exporter of the day; a test checks that the
onnxruntime backend ranks exactly like torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

OPSET = 17
IR_VERSION = 8  # read by every onnxruntime from 1.14 on


def tower_model(
    name: str,
    mean: npt.NDArray[np.float32],
    std: npt.NDArray[np.float32],
    layers: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
) -> Any:
    """An ONNX ModelProto: input ``x`` (n, d) -> output ``embedding`` (n, e).
    ``layers`` are torch Linear (weight (out, in), bias (out,)) pairs; ReLU between."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(mean.astype(np.float32), "mean"),
        numpy_helper.from_array(std.astype(np.float32), "std"),
    ]
    nodes = [helper.make_node("Sub", ["x", "mean"], ["centred"]),
             helper.make_node("Div", ["centred", "std"], ["h0"])]  # fmt: skip
    current = "h0"
    for i, (weight, bias) in enumerate(layers):
        inits += [
            numpy_helper.from_array(weight.astype(np.float32), f"w{i}"),
            numpy_helper.from_array(bias.astype(np.float32), f"b{i}"),
        ]
        out = "embedding" if i == len(layers) - 1 else f"z{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [out], transB=1))
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"h{i + 1}"]))
            current = f"h{i + 1}"
    d_in, d_out = int(mean.shape[0]), int(layers[-1][0].shape[0])
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d_in])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", d_out])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rankexp"
    )
    model.ir_version = IR_VERSION
    return model


def export_towers(state: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write ``user_tower.onnx`` and ``item_tower.onnx`` from a TwoTowerModel state dict
    (tensors or arrays); return the metadata entry (file names and the score bias)."""
    import onnx

    from ranker.model.artifacts import ITEM_TOWER_FILE, USER_TOWER_FILE

    def arr(key: str) -> npt.NDArray[np.float32]:
        value = state[key]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else value
        return np.asarray(value, dtype=np.float32)

    for tower, file in (("user", USER_TOWER_FILE), ("item", ITEM_TOWER_FILE)):
        linear = sorted({int(k.split(".")[1]) for k in state if k.startswith(f"{tower}_tower.")})
        layers = [
            (arr(f"{tower}_tower.{i}.weight"), arr(f"{tower}_tower.{i}.bias")) for i in linear
        ]
        model = tower_model(f"{tower}_tower", arr(f"{tower}_mean"), arr(f"{tower}_std"), layers)
        onnx.checker.check_model(model)
        onnx.save(model, str(out / file))
    return {"user_tower": USER_TOWER_FILE, "item_tower": ITEM_TOWER_FILE,
            "score_bias": float(arr("bias").reshape(-1)[0]), "opset": OPSET}  # fmt: skip
