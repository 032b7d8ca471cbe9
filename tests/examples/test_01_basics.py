"""examples/01_basics: the README's first command, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx

from surgery.testing import op_counts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "01_basics"


def test_committed_model_matches_its_script(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_model", EXAMPLE / "make_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build().SerializeToString() == (EXAMPLE / "model.onnx").read_bytes()


def test_readme_command(tmp_path):
    out = tmp_path / "classifier.onnx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "surgery",
            "apply",
            str(EXAMPLE / "passes.toml"),
            str(EXAMPLE / "model.onnx"),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,  # not the checkout: test the installed package
    )
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    assert "remove-dropout  yes      7 (-1)" in table
    assert "cleanup         yes      5 (-2)  4 (-1)" in table
    assert table.count(" ok ") >= 4
    # the model keeps a dynamic batch: the printed atc line says ATC will refuse it as is
    assert "atc --model=" in table and "input(s) images still have dynamic dims" in proc.stderr
    model = onnx.load(out)
    assert model.ir_version == 8 and model.opset_import[0].version == 13
    assert op_counts(model) == {
        "Conv": 1,
        "Relu": 1,
        "GlobalAveragePool": 1,
        "Flatten": 1,
        "Gemm": 1,
    }
    assert {n.name for n in model.graph.node} == {
        "/conv/Conv",
        "/relu/Relu",
        "/pool/GlobalAveragePool",
        "/Flatten",
        "/fc/Gemm",
    }
