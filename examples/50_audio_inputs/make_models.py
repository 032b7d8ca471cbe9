"""Build the two models of this example into a folder (default: the current one).

- ``frontend.onnx``: an audio front end as exporters write one: a waveform ``[batch, samples]``
  (both dims dynamic) → Unsqueeze → STFT (400-sample Hann window, hop 160) → power spectrum →
  log. On 8 generated samples ONNX Runtime refuses it (the window is longer than the signal).
- ``overflow.onnx``: ``c = a / b`` on int32. ``INT_MIN / -1`` overflows, which kills the process
  running ONNX Runtime with SIGFPE.

    python make_models.py [FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = h.make_graph(
        nodes,
        "frontend" if len(nodes) > 1 else "overflow",
        inputs,
        outputs,
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def frontend() -> onnx.ModelProto:
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)).astype(np.float32)
    nodes = [
        h.make_node("Unsqueeze", ["waveform", "last"], ["/Unsqueeze_output_0"], name="/Unsqueeze"),
        h.make_node(
            "STFT", ["/Unsqueeze_output_0", "hop", "window"], ["/STFT_output_0"], name="/STFT"
        ),
        h.make_node("Mul", ["/STFT_output_0", "/STFT_output_0"], ["/Mul_output_0"], name="/Mul"),
        h.make_node(
            "ReduceSum",
            ["/Mul_output_0", "last"],
            ["/ReduceSum_output_0"],
            name="/ReduceSum",
            keepdims=0,
        ),
        h.make_node("Add", ["/ReduceSum_output_0", "eps"], ["/Add_output_0"], name="/Add"),
        h.make_node("Log", ["/Add_output_0"], ["features"], name="/Log"),
    ]
    return _model(
        nodes,
        [h.make_tensor_value_info("waveform", T.FLOAT, ["batch", "samples"])],
        [h.make_tensor_value_info("features", T.FLOAT, ["batch", "frames", "bins"])],
        {
            "last": np.array([-1], np.int64),
            "hop": np.array(160, np.int64),
            "window": window,
            "eps": np.array(1e-6, np.float32),
        },
    )


def overflow() -> onnx.ModelProto:
    return _model(
        [h.make_node("Div", ["a", "b"], ["c"], name="/Div")],
        [h.make_tensor_value_info("a", T.INT32, [2]), h.make_tensor_value_info("b", T.INT32, [2])],
        [h.make_tensor_value_info("c", T.INT32, [2])],
        {},
    )


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(frontend(), folder / "frontend.onnx")
    onnx.save(overflow(), folder / "overflow.onnx")
    np.savez(
        folder / "overflow_inputs.npz",
        a=np.array([-(2**31), 7], np.int32),
        b=np.array([-1, 2], np.int32),
    )
    print(
        f"wrote {folder / 'frontend.onnx'}, {folder / 'overflow.onnx'} and {folder / 'overflow_inputs.npz'}"
    )
