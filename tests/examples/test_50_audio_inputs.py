"""examples/50_audio_inputs: the README's commands, run as a user would from an empty folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "50_audio_inputs"


def _surgery(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "surgery", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )


def test_readme_commands(tmp_path):
    built = subprocess.run(
        [sys.executable, str(EXAMPLE / "make_models.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    for name in ("passes.toml", "overflow.toml"):
        shutil.copy(EXAMPLE / name, tmp_path / name)

    proc = _surgery(["apply", "passes.toml", "frontend.onnx", "-o", "frontend.out.onnx"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "parity oracle: onnxruntime" in proc.stdout
    assert (
        "input waveform: generated [2, 16000] float32: batch=2, samples=16000 (audio-like signal)"
        in proc.stdout
    )
    assert (tmp_path / "frontend.out.onnx").is_file()

    proc = _surgery(
        ["apply", "overflow.toml", "overflow.onnx", "-o", "overflow.out.onnx"], tmp_path
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "the original model crashes onnxruntime" in lines[0] and "SIGFPE" in lines[0]
    assert "model 'overflow'" in lines[0] and "a[2] int32, b[2] int32" in lines[0]
    assert not (tmp_path / "overflow.out.onnx").exists()
    # and a reproducer, named in the line: the original and the inputs it crashed on
    assert "(reproducer: overflow.out.onnx.repro)" in lines[0]
    assert {p.name for p in (tmp_path / "overflow.out.onnx.repro").iterdir()} == {
        "model.onnx",
        "inputs.npz",
        "passes.toml",
        "README.txt",
    }
