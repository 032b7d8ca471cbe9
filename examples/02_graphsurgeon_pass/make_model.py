"""Build the example model: a MobileNetV3-style block with two HardSwish activations (opset 17, IR 8)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        onnx.numpy_helper.from_array(
            (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "conv1.weight"
        ),
        onnx.numpy_helper.from_array(
            (rng.standard_normal((8, 1, 3, 3)) * 0.3).astype(np.float32), "dw.weight"
        ),
        onnx.numpy_helper.from_array(
            (rng.standard_normal((5, 8)) * 0.3).astype(np.float32), "fc.weight"
        ),
        onnx.numpy_helper.from_array(np.zeros(5, np.float32), "fc.bias"),
    ]
    nodes = [
        h.make_node(
            "Conv",
            ["images", "conv1.weight"],
            ["/conv1/Conv_output_0"],
            name="/conv1/Conv",
            pads=[1, 1, 1, 1],
        ),
        h.make_node(
            "HardSwish",
            ["/conv1/Conv_output_0"],
            ["/act1/HardSwish_output_0"],
            name="/act1/HardSwish",
        ),
        h.make_node(
            "Conv",
            ["/act1/HardSwish_output_0", "dw.weight"],
            ["/dw/Conv_output_0"],
            name="/dw/Conv",
            pads=[1, 1, 1, 1],
            group=8,
        ),
        h.make_node(
            "HardSwish", ["/dw/Conv_output_0"], ["/act2/HardSwish_output_0"], name="/act2/HardSwish"
        ),
        h.make_node(
            "GlobalAveragePool",
            ["/act2/HardSwish_output_0"],
            ["/pool_output_0"],
            name="/pool/GlobalAveragePool",
        ),
        h.make_node("Flatten", ["/pool_output_0"], ["/Flatten_output_0"], name="/Flatten"),
        h.make_node(
            "Gemm",
            ["/Flatten_output_0", "fc.weight", "fc.bias"],
            ["logits"],
            name="/fc/Gemm",
            transB=1,
        ),
    ]
    graph = h.make_graph(
        nodes,
        "block",
        [h.make_tensor_value_info("images", T.FLOAT, [1, 3, 16, 16])],
        [h.make_tensor_value_info("logits", T.FLOAT, [1, 5])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], producer_name="example")
    model.ir_version = 8  # set explicitly: onnx 1.23 would stamp IR 14, which ORT 1.31 refuses
    onnx.checker.check_model(model, full_check=True)
    return model
