"""One flag per concept: -v/-q before or after the subcommand, --progress, -q never hides atc lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from surgery.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "examples" / "40_doctor" / "model.onnx"


@pytest.mark.parametrize("argv", [
    ["-q", "apply", "make-static", "M", "-o", "o.onnx"],
    ["apply", "make-static", "M", "-o", "o.onnx", "-q"],
])
def test_quiet_before_or_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).quiet is True


def test_verbose_after_the_subcommand():
    args = build_parser().parse_args(["doctor", "m.onnx", "-vv"])
    assert args.verbose == 2
    assert build_parser().parse_args(["-v", "doctor", "m.onnx"]).verbose == 1
    assert build_parser().parse_args(["doctor", "m.onnx"]).verbose == 0


def test_quiet_keeps_the_atc_line(tmp_path, capsys):
    assert main(["-q", "apply", "make-static", str(MODEL), "-o", str(tmp_path / "o.onnx"),
                 "--input-shape", "images:1,3,32,32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("atc: atc --model=") and "parity" not in out


def _run(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "surgery", *argv], capture_output=True, text=True, cwd=cwd, check=False)


def test_progress_always_prints_steps_into_a_pipe(tmp_path):
    proc = _run("apply", "make-static", str(MODEL), "-o", "o.onnx", "--input-shape", "images:1,3,32,32",
                "--progress", "always", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    steps = [line for line in proc.stderr.splitlines() if line.startswith("surgery: [")]
    assert steps == ["surgery: [1/2] fix-shapes", "surgery: [2/2] make-static"]


def test_progress_auto_is_silent_in_a_pipe_and_never_is_silent(tmp_path):
    for mode in ("auto", "never"):
        proc = _run("apply", "make-static", str(MODEL), "-o", "o.onnx", "--input-shape", "images:1,3,32,32",
                    "--progress", mode, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert not [line for line in proc.stderr.splitlines() if line.startswith("surgery: [")], proc.stderr


def test_deprecated_spelling_prints_one_note(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "in.npz", images=np.zeros((1, 3, 32, 32), np.float32))
    main(["compare", str(MODEL), str(MODEL), "--inputs", str(tmp_path / "in.npz")])
    err = capsys.readouterr().err
    assert err.count("deprecated") == 1 and "use --data" in err


def test_a_closed_pipe_is_not_an_internal_error(tmp_path):
    proc = subprocess.run(
        f"{sys.executable} -m surgery passes list | head -1", shell=True, capture_output=True, text=True, cwd=tmp_path,
        check=False,
    )
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.count("\n") == 1
