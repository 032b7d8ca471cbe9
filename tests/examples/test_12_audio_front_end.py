"""examples/12_audio_front_end: STFT (whose onnx inference is wrong) + a Scan, made static from an empty folder.

Before: ``fix-shapes`` already failed the checker gate ("Incompatible dimensions for matrix
multiplication" at the filter bank: onnx promised 512 STFT bins, the bank has 257 rows).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from surgery.testing import op_counts, ort_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "12_audio_front_end"


def test_readme_commands(tmp_path):
    build = subprocess.run(
        [sys.executable, str(EXAMPLE / "build_model.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    out = tmp_path / "static.onnx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "surgery",
            "apply",
            str(EXAMPLE / "passes.toml"),
            str(tmp_path / "frontend.onnx"),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "onnx shape inference of STFT '/frontend/STFT' is wrong: it gives 'spec' [1, 97, 512, 2], "
        "ONNX Runtime computes [1, 97, 257, 2]" in proc.stdout
    )
    assert (
        "--input_shape=signal:1,16000" in proc.stdout
        and "still have dynamic dims" not in proc.stdout
    )
    model = onnx.load(out)
    counts = op_counts(model)
    assert counts["Scan"] == 0 and counts["STFT"] == 1 and counts["Add"] == 1 + 97
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 97, 8]
    spec = next(v for v in model.graph.value_info if v.name == "spec")
    assert [d.dim_value for d in spec.type.tensor_type.shape.dim] == [1, 97, 257, 2]
    signal = {"signal": np.random.default_rng(3).uniform(-1, 1, (1, 16000)).astype(np.float32)}
    want = ort_run(onnx.load(tmp_path / "frontend.onnx"), signal)["features"]
    got = ort_run(model, signal)["features"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
