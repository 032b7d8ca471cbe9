"""examples/40_doctor: the README's commands, run as a user would."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "40_doctor"


def _surgery(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "surgery", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd or tempfile.gettempdir(),
    )  # outside the checkout, as a user would


def test_committed_model_matches_its_script():
    spec = importlib.util.spec_from_file_location("make_model", EXAMPLE / "make_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build().SerializeToString() == (EXAMPLE / "model.onnx").read_bytes()


def test_readme_commands(tmp_path):
    emitted = tmp_path / "passes.toml"
    first = _surgery("doctor", str(EXAMPLE / "model.onnx"), "--emit-pipeline", str(emitted))
    assert first.returncode == 1, first.stderr
    rows = [
        line.split()[:3]
        for line in first.stdout.splitlines()
        if line[:1].isdigit() and "  " in line
    ]
    assert rows == [
        ["1", "will-fail", "dynamic-dims"],
        ["2", "precision-risk", "resize"],
        ["3", "info", "dropout"],
    ]
    assert emitted.read_text() == (EXAMPLE / "passes.toml").read_text()

    out = tmp_path / "doctored.onnx"
    applied = _surgery(
        "apply", str(EXAMPLE / "passes.toml"), str(EXAMPLE / "model.onnx"), "-o", str(out)
    )
    assert applied.returncode == 0, applied.stderr
    assert "fix-shapes" in applied.stdout and "parity" in applied.stdout

    second = _surgery("doctor", str(out), "--report", "-")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert [(f["check"], f["severity"]) for f in report["findings"]] == [
        ("resize", "precision-risk"),
        ("dropout", "info"),
    ]
