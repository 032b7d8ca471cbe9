"""Build ``model.onnx``: a tiny classifier head with a Relu and a Mul by one (what a legacy export leaves).

python make_model.py [OUT.onnx]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        nh.from_array((rng.standard_normal((8, 4)) * 0.5).astype(np.float32), "fc.w"),
        nh.from_array(np.array(1.0, np.float32), "one"),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "fc.w"], ["m"], name="/fc/MatMul"),
        h.make_node("Mul", ["m", "one"], ["scaled"], name="/fc/Mul"),  # a no-op the exporter left
        h.make_node("Relu", ["scaled"], ["y"], name="/act/Relu"),
    ]
    graph = h.make_graph(
        nodes,
        "user_passes",
        [h.make_tensor_value_info("x", T.FLOAT, [2, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [2, 4])],
        inits,
    )
    model = h.make_model(
        graph, opset_imports=[h.make_opsetid("", 17)], producer_name="onnx-surgery example"
    )
    model.ir_version = 9
    return model


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "model.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build(), out)
