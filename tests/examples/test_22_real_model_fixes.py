"""examples/22_real_model_fixes: the README's commands, run as a user would, from an empty folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from surgery.doctor import diagnose
from surgery.testing import op_counts, ort_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "22_real_model_fixes"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, cwd=cwd
    )


@pytest.mark.torch
def test_readme_commands(tmp_path):
    pytest.importorskip("torch")
    proc = _run(str(EXAMPLE / "export.py"), ".", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    before = {
        name: op_counts(onnx.load(tmp_path / f"{name}.onnx")) for name in ("detector", "frontend")
    }
    assert (
        before["detector"]["RandomUniformLike"] == 1
        and before["detector"]["BatchNormalization"] == 2
    )
    assert before["frontend"]["STFT"] == 1
    doctor = {f.check: f.fix for f in diagnose(tmp_path / "detector.onnx").findings}
    assert doctor["random"] == ["remove-dropout"]
    for name in ("detector", "frontend"):
        proc = _run(
            "-m",
            "surgery",
            "apply",
            str(EXAMPLE / "passes.toml"),
            f"{name}.onnx",
            "-o",
            f"{name}.npu.onnx",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
    detector = onnx.load(tmp_path / "detector.npu.onnx")
    assert op_counts(detector) == {"Reshape": 2, "Transpose": 1, "Conv": 3, "Sigmoid": 2, "Mul": 2}
    frontend = onnx.load(tmp_path / "frontend.npu.onnx")
    counts = op_counts(frontend)
    assert "STFT" not in counts and counts["Conv"] == 1
    audio = np.random.default_rng(0).standard_normal((1, 1024)).astype(np.float32)
    got, expected = (
        ort_run(frontend, {"audio": audio}),
        ort_run(onnx.load(tmp_path / "frontend.onnx"), {"audio": audio}),
    )
    np.testing.assert_allclose(
        got["power"], expected["power"], rtol=1e-3, atol=1e-3 * np.abs(expected["power"]).max()
    )
    for name in ("detector", "frontend"):
        after = diagnose(tmp_path / f"{name}.npu.onnx")
        assert after.exit_code == 0, [f.title for f in after.findings]
