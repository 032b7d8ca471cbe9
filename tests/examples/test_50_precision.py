"""examples/50_precision: the README's commands, run from an empty folder as a user would."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "50_precision"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, cwd=cwd
    )


def _atc(stdout: str) -> list[str]:
    return shlex.split(
        next(line for line in stdout.splitlines() if line.startswith("atc: atc "))[5:]
    )


@pytest.mark.torch
def test_readme_commands(tmp_path):
    exported = _run(str(EXAMPLE / "export.py"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "block.onnx").exists() and (tmp_path / "hidden.npz").exists()

    first = _run(
        "-m",
        "surgery",
        "precision",
        "block.onnx",
        "--data",
        "hidden.npz",
        "--soc",
        "Ascend310P3",
        "--keep-dtype",
        "keep_dtype.txt",
        "--report",
        "precision.json",
        cwd=tmp_path,
    )
    assert first.returncode == 1, first.stderr
    out = first.stdout
    assert "overflow: tensor '/norm/Pow_output_0' (Pow '/norm/Pow')" in out
    assert (
        "plan: keep 4 node(s) in float32: /norm/Pow, /norm/ReduceMean, /attn/MatMul, /attn/Div"
        in out
    )
    assert "outputs meet tolerance" in out and "ATC's fusions can rename" in out
    assert (tmp_path / "keep_dtype.txt").read_text().splitlines() == [
        "/norm/Pow",
        "/norm/ReduceMean",
        "/attn/MatMul",
        "/attn/Div",
    ]
    argv = _atc(out)
    assert "--precision_mode=force_fp16" in argv and "--keep_dtype=keep_dtype.txt" in argv
    assert "--input_format=ND" in argv and "--input_shape=hidden:1,16,64" in argv

    mixed = _run(
        "-m",
        "surgery",
        "precision",
        "block.onnx",
        "--data",
        "hidden.npz",
        "--mode",
        "mixed_float16",
        cwd=tmp_path,
    )
    assert mixed.returncode == 1 and "plan: keep 1 node(s) in float32: /attn/MatMul" in mixed.stdout
    origin = _run(
        "-m",
        "surgery",
        "precision",
        "block.onnx",
        "--data",
        "hidden.npz",
        "--mode",
        "origin",
        cwd=tmp_path,
    )
    assert origin.returncode == 0 and "overflow" not in origin.stdout

    (tmp_path / "passes.toml").write_text((EXAMPLE / "passes.toml").read_text())
    applied = _run(
        "-m",
        "surgery",
        "apply",
        "passes.toml",
        "block.onnx",
        "-o",
        "ready.onnx",
        "--soc",
        "Ascend310P3",
        cwd=tmp_path,
    )
    assert applied.returncode == 0, applied.stderr
    assert (tmp_path / "ready.keep_dtype.txt").read_text() == (
        tmp_path / "keep_dtype.txt"
    ).read_text()
    argv = _atc(applied.stdout)
    assert "--keep_dtype=ready.keep_dtype.txt" in argv and "--precision_mode=force_fp16" in argv
