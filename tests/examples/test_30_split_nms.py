"""examples/30_split_nms: the README's commands, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import pytest

from surgery.testing import op_counts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "30_split_nms"

pytestmark = pytest.mark.torch


def _run(*args: str) -> subprocess.CompletedProcess:
    # run outside the checkout, as a user would: `python -m surgery` there would import the source tree
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),
    )


def test_readme_commands(tmp_path):
    proc = _run(str(EXAMPLE / "detector.py"), str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    legacy, dynamo = tmp_path / "detector_legacy.onnx", tmp_path / "detector_dynamo.onnx"

    proc = _run(
        "-m",
        "surgery",
        "split",
        str(legacy),
        "--head",
        str(tmp_path / "head.onnx"),
        "--tail",
        str(tmp_path / "tail.onnx"),
        "--input-shape",
        "images:1,3,32,32",
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "first hostile node: /NonMaxSuppression" in proc.stdout
        and "head then tail vs original: ok" in proc.stdout
    )
    assert (
        "boundary (auto): /GatherElements_output_0 (512 B), /GatherElements_1_output_0 (384 B); 2 tensor(s), 896 B"
        in proc.stdout
    )
    manifest = json.loads((tmp_path / "head.split.json").read_text())
    assert [b["name"] for b in manifest["boundary"]] == [
        "/GatherElements_output_0",
        "/GatherElements_1_output_0",
    ]
    assert manifest["boundary_bytes"] == 896
    assert [(p["name"], p["produces"]) for p in manifest["parts"]] == [
        ("head", ["pred"]),
        ("tail", ["detections"]),
    ]
    head = onnx.load(tmp_path / "head.onnx")
    assert op_counts(head)["NonMaxSuppression"] == 0
    assert all(
        d.HasField("dim_value") for v in head.graph.output for d in v.type.tensor_type.shape.dim
    )

    proc = _run(
        "-m",
        "surgery",
        "split",
        str(legacy),
        "--head",
        str(tmp_path / "naive.onnx"),
        "--tail",
        str(tmp_path / "naive.tail.onnx"),
        "--no-min-cut",
    )
    assert proc.returncode == 0, proc.stderr
    naive = json.loads((tmp_path / "naive.split.json").read_text())
    assert len(naive["boundary"]) == 9
    assert sum(b["dtype"] == "int64" for b in naive["boundary"]) == 5

    proc = _run(str(EXAMPLE / "deploy.py"), str(tmp_path / "head.split.json"), str(legacy))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4 and all(
        "same shapes: True, max abs difference 0" in line for line in lines
    )
    assert (
        len({line.split(": ")[1].split(" detections")[0] for line in lines}) > 1
    )  # 6 and 10 detections

    proc = _run(
        "-m",
        "surgery",
        "apply",
        str(EXAMPLE / "passes.toml"),
        str(dynamo),
        "-o",
        str(tmp_path / "npu.onnx"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "boundary (auto): gather (512 B), gather_1 (384 B); 2 tensor(s), 896 B" in proc.stdout
    assert proc.stdout.count("ok (max abs 0)") >= 2
    head = onnx.load(tmp_path / "npu.onnx")
    assert all(
        d.HasField("dim_value") for v in head.graph.input for d in v.type.tensor_type.shape.dim
    )
    assert op_counts(onnx.load(tmp_path / "npu.tail.onnx"))["NonMaxSuppression"] == 1

    proc = _run(
        "-m",
        "surgery",
        "compare",
        str(legacy),
        str(tmp_path / "detector_perturbed.onnx"),
        "--failures-only",
    )
    assert proc.returncode == 1, proc.stderr
    assert (
        "first divergent tensor: '/backbone/backbone.2/Conv_output_0' (output of Conv '/backbone/backbone.2/Conv')"
        in proc.stdout
    )
    assert (
        "its initializer input 'backbone.2.weight' differs from the reference's (max abs 0.05"
        in proc.stdout
    )
