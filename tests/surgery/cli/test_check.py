"""``surgery check``: checker, ORT load, I/O shapes, dynamic dims, opsets, op histogram."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from surgery.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_check_example_model(tmp_path, capsys):
    model = ROOT / "examples" / "01_basics" / "model.onnx"
    assert main(["check", str(model), "--report", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "checker (full): ok" in out and "onnxruntime load: ok" in out
    assert "images: FLOAT [batch, 3, 32, 32]" in out
    assert "ai.onnx 13" in out and "Dropout 1" in out
    info = json.loads((tmp_path / "c.json").read_text())
    assert info["ok"] and info["ops"]["Conv"] == 1 and info["dynamic_dims"] >= 2


def test_check_reports_invalid_model_with_exit_1(tmp_path, capsys):
    model = onnx.load(ROOT / "examples" / "01_basics" / "model.onnx")
    model.graph.node[1].input[0] = "does_not_exist"
    onnx.save(model, tmp_path / "broken.onnx")
    assert main(["check", str(tmp_path / "broken.onnx")]) == 1
    out = capsys.readouterr().out
    assert "checker (full): FAILED" in out and "onnxruntime load: FAILED" in out
