"""examples/03_user_passes: a rule module, a whole pass from a file, as the README runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from surgery.testing import op_counts, ort_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "03_user_passes"


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, check=False, cwd=cwd
    )


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    """An empty folder with the example's files copied in, and the model built by its script."""
    work = tmp_path / "work"
    shutil.copytree(EXAMPLE, work)
    proc = _run(str(work / "make_model.py"), str(tmp_path / "u" / "model.onnx"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return work, tmp_path / "u" / "model.onnx"


def test_rule_module_runs_only_with_allow_code(tmp_path):
    work, model = _setup(tmp_path)
    out = tmp_path / "u" / "leaky.onnx"
    refused = _run("-m", "surgery", "apply", "passes.toml", str(model), "-o", str(out), cwd=work)
    assert (
        refused.returncode == 2
        and "--allow-code" in refused.stderr
        and "leaky_rules" in refused.stderr
    )
    assert not out.exists()
    proc = _run(
        "-m",
        "surgery",
        "apply",
        "passes.toml",
        str(model),
        "-o",
        str(out),
        "--allow-code",
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    assert "deviation reported" in proc.stdout
    result = onnx.load(out)
    assert op_counts(result)["LeakyRelu"] == 1 and "Relu" not in op_counts(result)
    assert [n.name for n in result.graph.node if n.op_type == "LeakyRelu"] == [
        "/act/Relu/LeakyRelu"
    ]
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    got, ref = ort_run(result, {"x": x})["y"], ort_run(onnx.load(model), {"x": x})["y"]
    np.testing.assert_allclose(got[ref > 0], ref[ref > 0], rtol=1e-6)
    assert (got <= 0).any() and np.all(got[got < 0] > -0.1)  # negative values now leak through


def test_pass_file_from_the_command_line(tmp_path):
    work, model = _setup(tmp_path)
    out = tmp_path / "u" / "nomul.onnx"
    unknown = _run(
        "-m", "surgery", "apply", "drop-mul-one,cleanup", str(model), "-o", str(out), cwd=work
    )
    assert unknown.returncode == 2 and "unknown pass 'drop-mul-one'" in unknown.stderr
    proc = _run(
        "-m",
        "surgery",
        "apply",
        "drop-mul-one,cleanup",
        str(model),
        "-o",
        str(out),
        "--plugin",
        "drop_mul_one.py",
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if " drop-mul-one " in line)
    assert " yes " in row and "2 (-1)" in row and "ok (max abs 0)" in row
    result = onnx.load(out)
    assert "Mul" not in op_counts(result)
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    np.testing.assert_array_equal(
        ort_run(result, {"x": x})["y"], ort_run(onnx.load(model), {"x": x})["y"]
    )
    shown = _run("-m", "surgery", "passes", "show", "rewrite", cwd=work)
    assert shown.returncode == 0 and "RULES" in shown.stdout
