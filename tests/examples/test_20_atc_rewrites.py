"""examples/20_atc_rewrites: the README's two commands, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from surgery.testing import op_counts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "20_atc_rewrites"


@pytest.mark.torch
def test_readme_commands(tmp_path):
    pytest.importorskip("torch")
    model = tmp_path / "model.onnx"
    out = tmp_path / "model.atc.onnx"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "export.py"), str(model)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    exported = onnx.load(model)
    assert exported.opset_import[0].version == 20 and len(exported.functions) == 7
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "surgery",
            "apply",
            str(EXAMPLE / "passes.toml"),
            str(model),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    rows = {
        line.split()[1]: line
        for line in table.splitlines()
        if line[:1].isdigit() and len(line.split()) > 2
    }
    for name in (
        "remove-dropout",
        "inline-functions",
        "decompose-gelu",
        "decompose-gridsample",
        "maxpool-to-avgpool",
        "narrow-float64",
        "convert-opset",
    ):
        assert " yes " in rows[name] and rows[name].count(" ok ") >= 2, rows[name]
    assert (
        "deviation reported" in rows["maxpool-to-avgpool"]
        and "deviation reported" in rows["remove-dropout"]
    )
    for name in (
        "inline-functions",
        "decompose-gelu",
        "decompose-gridsample",
        "narrow-float64",
        "convert-opset",
    ):
        assert rows[name].rstrip().split("  ")[-1].strip().startswith("ok"), rows[name]
    result = onnx.load(out)
    assert [(o.domain, o.version) for o in result.opset_import] == [("", 18)]
    assert not result.functions
    counts = op_counts(result)
    for op in ("Gelu", "GridSample", "MaxPool", "Dropout"):
        assert op not in counts
    assert counts["GatherElements"] == 4 and counts["AveragePool"] == 1
    assert "elem_type: 11" not in str(result) and "data_type: 11" not in str(result)
