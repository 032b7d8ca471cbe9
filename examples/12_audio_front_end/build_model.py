"""Build ``frontend.onnx``: a log-power spectrogram with a recurrent smoother, as audio models ship.

``signal [1, samples]`` → ``STFT`` (n_fft 512, hop 160, Hann window, ``onesided`` left at its
default) → power → an 8-band filter bank (MatMul) → ``Log`` → a ``Scan`` over the frames that
smooths each band (``state = 0.9 * state + 0.1 * x_t``) → ``features [1, frames, 8]``.

Two things onnx gets wrong or a static compiler refuses: onnx 1.23's STFT shape inference ignores
the default ``onesided=1`` (it promises 512 bins, ONNX Runtime computes 257), and the ``Scan``.
Usage: ``python build_model.py [OUT_DIR]`` (default: this folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

N_FFT, HOP, BANDS = 512, 160, 8


def build() -> onnx.ModelProto:
    bins = N_FFT // 2 + 1
    edges = np.linspace(0, bins, BANDS + 1).astype(int)
    bank = np.zeros((bins, BANDS), np.float32)
    for b in range(BANDS):
        bank[edges[b] : edges[b + 1], b] = 1.0
    body = h.make_graph(
        [
            h.make_node("Mul", ["state_in", "keep"], ["kept"], name="/smooth/Mul_keep"),
            h.make_node("Mul", ["x_t", "take"], ["taken"], name="/smooth/Mul_take"),
            h.make_node("Add", ["kept", "taken"], ["state_out"], name="/smooth/Add"),
            h.make_node("Identity", ["state_out"], ["y_t"], name="/smooth/Identity"),
        ],
        "smooth_body",
        [
            h.make_tensor_value_info("state_in", T.FLOAT, [BANDS]),
            h.make_tensor_value_info("x_t", T.FLOAT, [BANDS]),
        ],
        [
            h.make_tensor_value_info("state_out", T.FLOAT, [BANDS]),
            h.make_tensor_value_info("y_t", T.FLOAT, [BANDS]),
        ],
        [
            numpy_helper.from_array(np.array(0.9, np.float32), "keep"),
            numpy_helper.from_array(np.array(0.1, np.float32), "take"),
        ],
    )
    nodes = [
        h.make_node("Unsqueeze", ["signal", "axis_last"], ["signal3"], name="/frontend/Unsqueeze"),
        h.make_node("STFT", ["signal3", "hop", "window", ""], ["spec"], name="/frontend/STFT"),
        h.make_node(
            "ReduceSumSquare", ["spec"], ["power"], axes=[3], keepdims=0, name="/frontend/Power"
        ),
        h.make_node("MatMul", ["power", "bank"], ["bands"], name="/frontend/FilterBank"),
        h.make_node("Add", ["bands", "eps"], ["bands_eps"], name="/frontend/Add_eps"),
        h.make_node("Log", ["bands_eps"], ["logbands"], name="/frontend/Log"),
        h.make_node("Squeeze", ["logbands", "axis0"], ["frames"], name="/frontend/Squeeze"),
        h.make_node(
            "Scan",
            ["state0", "frames"],
            ["state", "smoothed"],
            body=body,
            num_scan_inputs=1,
            name="/frontend/Scan",
        ),
        h.make_node(
            "Unsqueeze", ["smoothed", "axis0"], ["features"], name="/frontend/Unsqueeze_out"
        ),
    ]
    inits = {
        "axis_last": np.array([2], np.int64),
        "axis0": np.array([0], np.int64),
        "hop": np.array(HOP, np.int64),
        "window": np.hanning(N_FFT).astype(np.float32),
        "bank": bank,
        "eps": np.array(1e-6, np.float32),
        "state0": np.zeros(BANDS, np.float32),
    }
    graph = h.make_graph(
        nodes,
        "audio_front_end",
        [h.make_tensor_value_info("signal", T.FLOAT, [1, "samples"])],
        [h.make_tensor_value_info("features", T.FLOAT, [1, "n_frames", BANDS])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], producer_name="example-12")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(build(), out / "frontend.onnx")
    print(f"wrote {out / 'frontend.onnx'}")
