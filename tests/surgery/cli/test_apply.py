"""``surgery apply``: success, gate failure (exit 1 + reproducer), and every bad input (exit 2)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from surgery.cli import main

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "01_basics"


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


@pytest.fixture
def work(tmp_path) -> Path:
    shutil.copy(EXAMPLE / "model.onnx", tmp_path / "model.onnx")
    shutil.copy(EXAMPLE / "passes.toml", tmp_path / "passes.toml")
    return tmp_path


def test_apply_writes_model_and_report(work, capsys):
    code = main(
        [
            "apply",
            str(work / "passes.toml"),
            str(work / "model.onnx"),
            "-o",
            str(work / "out.onnx"),
            "--report",
            str(work / "r.json"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "remove-dropout" in out and "cleanup" in out and "parity oracle: onnxruntime" in out
    model = onnx.load(work / "out.onnx")
    assert model.ir_version == 8 and model.opset_import[0].version == 13
    assert "Dropout" not in {n.op_type for n in model.graph.node}
    report = json.loads((work / "r.json").read_text())
    assert report["ok"] and [s["name"] for s in report["steps"]] == ["remove-dropout", "cleanup"]
    assert report["steps"][0]["parity"][0]["name"] == "logits"


def test_same_input_same_bytes(work):
    for name in ("a.onnx", "b.onnx"):
        assert (
            main(
                [
                    "apply",
                    str(work / "passes.toml"),
                    str(work / "model.onnx"),
                    "-o",
                    str(work / name),
                    "-q",
                ]
            )
            == 0
        )
    assert (work / "a.onnx").read_bytes() == (work / "b.onnx").read_bytes()


def test_gate_failure_exits_1_with_reproducer_and_no_output(work, capsys, test_passes):
    (work / "bad.toml").write_text(
        '[[pass]]\nname = "remove-dropout"\n[[pass]]\nname = "test-perturb-weight"\nweight = "fc.weight"\n'
    )
    before = _digest(work)
    code = main(
        [
            "apply",
            str(work / "bad.toml"),
            str(work / "model.onnx"),
            "-o",
            str(work / "out.onnx"),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "test-perturb-weight" in err and "output logits" in err and "max abs error" in err
    assert not (work / "out.onnx").exists()
    repro = work / "out.onnx.repro"
    assert (
        (repro / "model.onnx").exists()
        and (repro / "inputs.npz").exists()
        and (repro / "passes.toml").exists()
    )
    # the model in the reproducer is the one before the failing pass: Dropout already removed
    assert "Dropout" not in {n.op_type for n in onnx.load(repro / "model.onnx").graph.node}
    assert {k: v for k, v in _digest(work).items() if k in before} == before


def _bad_inputs(work: Path) -> list[tuple[list[str], str]]:
    (work / "garbage.onnx").write_bytes(b"\x08\x07garbage" * 50)
    data = (work / "model.onnx").read_bytes()
    (work / "truncated.onnx").write_bytes(data[: len(data) // 2])
    ext = onnx.load(work / "model.onnx")
    onnx.save(
        ext,
        work / "ext.onnx",
        save_as_external_data=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    (work / "ext.onnx.data").unlink()
    (work / "invalid.toml").write_text("[[pass]\nname=")
    (work / "unknown.toml").write_text('[[pass]]\nname = "remove-dropuot"\n')
    (work / "option.toml").write_text('[[pass]]\nname = "cleanup"\nfoo = 1\n')
    np.savez(work / "wrong.npz", imagez=np.zeros((1, 3, 32, 32), np.float32))
    p, m, o = str(work / "passes.toml"), str(work / "model.onnx"), str(work / "out.onnx")
    return [
        (["apply", p, str(work / "missing.onnx"), "-o", o], "no such file"),
        (["apply", p, str(work / "garbage.onnx"), "-o", o], "not"),
        (["apply", p, str(work / "truncated.onnx"), "-o", o], "ONNX model"),
        (["apply", p, str(work / "ext.onnx"), "-o", o], "external data file 'ext.onnx.data'"),
        (["apply", str(work / "invalid.toml"), m, "-o", o], "invalid TOML"),
        (["apply", str(work / "missing.toml"), m, "-o", o], "no such pipeline file"),
        (["apply", str(work / "unknown.toml"), m, "-o", o], "did you mean 'remove-dropout'"),
        (["apply", str(work / "option.toml"), m, "-o", o], "unknown option 'foo'"),
        (["apply", p, m, "-o", o, "--data", str(work / "wrong.npz")], "did you mean 'images'"),
        (["apply", p, m, "-o", m], "the output path is the input model"),
        (["apply", p, m], "give -o"),
        (["apply", p, m, "-o", str(work / "no" / "dir" / "out.onnx")], "does not exist"),
        (["apply", p, m, "-o", o, "--set", "cleanup.nothing=1"], "unknown option 'nothing'"),
        (["apply", p, m, "-o", o, "--disable", "nope"], "no such pass"),
        (["apply", p, m, "-o", o, "--verify", "sometimes"], "invalid choice"),
    ]


def test_bad_inputs_exit_2_one_line_input_untouched_no_output(work, capsys):
    cases = _bad_inputs(work)
    before = _digest(work)
    for argv, message in cases:
        with (
            pytest.raises(SystemExit)
            if "--verify" in argv and "sometimes" in argv
            else _nullcontext()
        ):
            code = main(argv)
            assert code == 2, (argv, code)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert message in lines[0], (argv, lines[0])
        assert "Traceback" not in err
        assert not (work / "out.onnx").exists(), argv
        assert _digest(work) == before, argv


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_console_script_bad_input_has_no_traceback(work):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "surgery",
            "apply",
            str(work / "passes.toml"),
            str(work / "nope.onnx"),
            "-o",
            str(work / "o.onnx"),
        ],
        capture_output=True,
        text=True,
        cwd=work,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.count("\n") == 1
        and "Traceback" not in proc.stderr
        and "no such file" in proc.stderr
    )


def test_in_place(work):
    assert (
        main(["apply", str(work / "passes.toml"), str(work / "model.onnx"), "--in-place", "-q"])
        == 0
    )
    assert "Dropout" not in {n.op_type for n in onnx.load(work / "model.onnx").graph.node}
