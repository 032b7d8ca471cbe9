"""Build ``model.onnx``: a small detector-style backbone with the problems `surgery doctor` finds.

    python make_model.py [OUT.onnx]

No torch needed (onnx.helper). What doctor reports on it:

- will-fail: the input has a dynamic batch dim (ATC needs static shapes: E10001);
- precision-risk: a nearest Resize with torch's ``floor`` rounding (CANN documents round_prefer_ceil);
- info: a Dropout, which ATC removes (remove-dropout does it before ATC, so the model you verify is
  the one ATC compiles).
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
    inits = {
        "conv.w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2,
        "conv.b": np.zeros(8, np.float32),
        "head.w": rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.2,
        "ratio": np.array(0.1, np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32),
    }
    nodes = [
        h.make_node(
            "Conv",
            ["images", "conv.w", "conv.b"],
            ["c1"],
            pads=[1, 1, 1, 1],
            name="/backbone/conv/Conv",
        ),
        h.make_node("Relu", ["c1"], ["r1"], name="/backbone/act/Relu"),
        h.make_node(
            "MaxPool",
            ["r1"],
            ["p1"],
            kernel_shape=[2, 2],
            strides=[2, 2],
            name="/backbone/pool/MaxPool",
        ),
        h.make_node("Dropout", ["p1", "ratio"], ["d1"], name="/neck/dropout/Dropout"),
        h.make_node(
            "Resize",
            ["d1", "", "scales"],
            ["u1"],
            mode="nearest",
            nearest_mode="floor",
            coordinate_transformation_mode="asymmetric",
            name="/neck/upsample/Resize",
        ),
        h.make_node("Conv", ["u1", "head.w"], ["out"], name="/head/conv/Conv"),
    ]
    graph = h.make_graph(
        nodes,
        "doctor_example",
        [h.make_tensor_value_info("images", T.FLOAT, ["batch", 3, 32, 32])],
        [h.make_tensor_value_info("out", T.FLOAT, ["batch", 4, 32, 32])],
        [nh.from_array(v, k) for k, v in inits.items()],
    )
    model = h.make_model(
        graph, opset_imports=[h.make_opsetid("", 17)], producer_name="onnx-surgery example"
    )
    model.ir_version = 9  # onnx 1.23 would stamp 14, which onnxruntime 1.31 refuses
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).with_name("model.onnx")
    onnx.save(build(), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
