"""``surgery prepare --plugin FILE.py --pass NAME``: a user's pass runs inside prepare, and the pipeline
prepare writes names the plug-in, so replaying it with ``surgery apply`` needs ``--allow-code``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import onnx

from surgery.testing import op_counts

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "03_user_passes"


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, check=False, cwd=cwd
    )


def test_prepare_runs_a_plugin_pass_and_the_replay_needs_allow_code(tmp_path):
    work = tmp_path / "work"
    shutil.copytree(EXAMPLE, work)
    model = tmp_path / "model.onnx"
    assert _run(str(work / "make_model.py"), str(model), cwd=tmp_path).returncode == 0
    out = tmp_path / "ready.onnx"
    unknown = _run(
        "-m", "surgery", "prepare", str(model), "-o", str(out), "--pass", "drop-mul-one", cwd=work
    )
    assert (
        unknown.returncode == 2
        and "unknown pass 'drop-mul-one'" in unknown.stderr
        and not out.exists()
    )
    proc = _run(
        "-m",
        "surgery",
        "prepare",
        str(model),
        "-o",
        str(out),
        "--plugin",
        "drop_mul_one.py",
        "--pass",
        "drop-mul-one",
        "--set",
        "drop-mul-one.only_scalars=false",
        "--progress",
        "never",
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    assert "drop-mul-one" in proc.stdout and "atc: atc --model=" in proc.stdout
    assert "Mul" not in op_counts(onnx.load(out))
    written = (tmp_path / "ready.passes.toml").read_text()
    assert f'plugins = ["{(work / "drop_mul_one.py").resolve()}"]' in written
    assert 'name = "drop-mul-one"' in written and "only_scalars = false" in written
    # the written pipeline is data: its plug-in runs on replay only with the opt-in
    replay = tmp_path / "again.onnx"
    refused = _run(
        "-m",
        "surgery",
        "apply",
        str(tmp_path / "ready.passes.toml"),
        str(model),
        "-o",
        str(replay),
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and "--allow-code" in refused.stderr and not replay.exists()
    again = _run(
        "-m",
        "surgery",
        "apply",
        str(tmp_path / "ready.passes.toml"),
        str(model),
        "-o",
        str(replay),
        "--allow-code",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert "Mul" not in op_counts(onnx.load(replay))


def test_set_must_name_a_pass_given_with_pass(tmp_path):
    work = tmp_path / "work"
    shutil.copytree(EXAMPLE, work)
    model = tmp_path / "model.onnx"
    assert _run(str(work / "make_model.py"), str(model), cwd=tmp_path).returncode == 0
    proc = _run(
        "-m",
        "surgery",
        "prepare",
        str(model),
        "-o",
        str(tmp_path / "r.onnx"),
        "--plugin",
        "drop_mul_one.py",
        "--pass",
        "drop-mul-one",
        "--set",
        "drop-mul-onr.only_scalars=false",
        cwd=work,
    )
    assert proc.returncode == 2 and "did you mean 'drop-mul-one'" in proc.stderr
    assert not (tmp_path / "r.onnx").exists() and not (tmp_path / "r.passes.toml").exists()
