"""Build the example model: a small classifier as a legacy exporter writes it, Dropout included.

Run ``python make_model.py`` to regenerate ``model.onnx`` (committed, 3 KB, so the README's first
command needs no torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        onnx.numpy_helper.from_array(
            rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "conv.weight"
        ),
        onnx.numpy_helper.from_array(np.zeros(4, np.float32), "conv.bias"),
        onnx.numpy_helper.from_array(
            rng.standard_normal((10, 4)).astype(np.float32) * 0.3, "fc.weight"
        ),
        onnx.numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias"),
        onnx.numpy_helper.from_array(np.ones(7, np.float32), "unused.buffer"),
    ]
    nodes = [
        h.make_node(
            "Conv",
            ["images", "conv.weight", "conv.bias"],
            ["/conv/Conv_output_0"],
            name="/conv/Conv",
            pads=[1, 1, 1, 1],
        ),
        h.make_node("Relu", ["/conv/Conv_output_0"], ["/relu/Relu_output_0"], name="/relu/Relu"),
        h.make_node(
            "GlobalAveragePool",
            ["/relu/Relu_output_0"],
            ["/pool/GlobalAveragePool_output_0"],
            name="/pool/GlobalAveragePool",
        ),
        h.make_node(
            "Flatten", ["/pool/GlobalAveragePool_output_0"], ["/Flatten_output_0"], name="/Flatten"
        ),
        h.make_node(
            "Dropout", ["/Flatten_output_0"], ["/dropout/Dropout_output_0"], name="/dropout/Dropout"
        ),
        h.make_node(
            "Identity", ["/dropout/Dropout_output_0"], ["/Identity_output_0"], name="/Identity"
        ),
        h.make_node(
            "Gemm",
            ["/Identity_output_0", "fc.weight", "fc.bias"],
            ["logits"],
            name="/fc/Gemm",
            transB=1,
        ),
        # a dead branch, as exporters leave behind
        h.make_node("Shape", ["images"], ["/Shape_output_0"], name="/Shape"),
    ]
    graph = h.make_graph(
        nodes,
        "classifier",
        [h.make_tensor_value_info("images", T.FLOAT, ["batch", 3, 32, 32])],
        [h.make_tensor_value_info("logits", T.FLOAT, ["batch", 10])],
        inits,
    )
    model = h.make_model(
        graph,
        opset_imports=[h.make_opsetid("", 13)],
        producer_name="pytorch",
        producer_version="2.13.0",
    )
    model.ir_version = (
        8  # as torch's legacy exporter writes; never onnx's default (IR 14 is refused by ORT 1.31)
    )
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    onnx.save(build(), Path(__file__).with_name("model.onnx"))
