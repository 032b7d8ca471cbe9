"""``surgery prepare --precision``: what ATC's float16 mode computes, planned as the last step of prepare."""

from __future__ import annotations

import shlex

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

from surgery.cli import main
from surgery.testing import make_model, vi


def _energy(path):
    """A signal's energy (a sum of squares that overflows float16 for loud input) and a gain, batch dynamic."""
    onnx.save(
        make_model(
            [
                h.make_node("Relu", ["x"], ["r"], name="rectify"),
                h.make_node("ReduceSumSquare", ["r"], ["energy"], name="energy_sum", keepdims=1),
                h.make_node("Mul", ["x", "w"], ["y"], name="gain"),
            ],
            [vi("x", T.FLOAT, ["batch", 64])],
            [vi("energy", T.FLOAT, ["batch", 1]), vi("y", T.FLOAT, ["batch", 64])],
            {"w": np.full((1, 64), 0.5, np.float32)},
        ),
        path,
    )
    return path


def _atc(out: str) -> list[str]:
    return shlex.split(next(line for line in out.splitlines() if line.startswith("atc: "))[5:])


def test_prepare_plans_the_keep_list_and_puts_the_flags_on_the_atc_line(tmp_path, capsys):
    model = _energy(tmp_path / "m.onnx")
    np.savez(
        tmp_path / "loud.npz",
        x=np.random.default_rng(0).uniform(50, 100, (1, 64)).astype(np.float32),
    )
    out = tmp_path / "out.onnx"
    code = main(
        [
            "prepare",
            str(model),
            "-o",
            str(out),
            "--input-shape",
            "x:1,64",
            "--data",
            str(tmp_path / "loud.npz"),
            "--precision",
            "fp16",
            "--soc",
            "Ascend310P3",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    keep = tmp_path / "out.keep_dtype.txt"
    assert keep.read_text() == "energy_sum\n"
    argv = _atc(printed)
    assert "--precision_mode=force_fp16" in argv and f"--keep_dtype={keep}" in argv
    assert (
        "precision (fp16): breaks tolerance (1 overflow(s)); keeping 1 node(s) in float32 meets it"
        in printed
    )
    # the pipeline written beside the output carries the step, and replays to the same keep-list
    text = (tmp_path / "out.passes.toml").read_text()
    assert 'name = "precision-plan"' in text and 'mode = "fp16"' in text
    keep.unlink()
    code = main(
        [
            "apply",
            str(tmp_path / "out.passes.toml"),
            str(model),
            "-o",
            str(tmp_path / "again.onnx"),
            "-q",
        ]
    )
    assert code == 0 and (tmp_path / "again.keep_dtype.txt").read_text() == "energy_sum\n"


def test_float16_safe_model_empty_plan_and_summary(tmp_path, capsys):
    model = _energy(tmp_path / "m.onnx")
    np.savez(
        tmp_path / "quiet.npz",
        x=np.random.default_rng(0).uniform(-1, 1, (1, 64)).astype(np.float32),
    )
    code = main(
        [
            "prepare",
            str(model),
            "-o",
            str(tmp_path / "out.onnx"),
            "--input-shape",
            "x:1,64",
            "--data",
            str(tmp_path / "quiet.npz"),
            "--precision",
            "fp16",
            "--precision-flag",
            "precision_mode_v2",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "precision (fp16): meets tolerance, nothing to keep in float32" in printed
    assert not (tmp_path / "out.keep_dtype.txt").exists()
    argv = _atc(printed)
    assert "--precision_mode_v2=fp16" in argv and not any(
        a.startswith("--keep_dtype") for a in argv
    )


def test_without_precision_the_summary_says_it_was_not_emulated(tmp_path, capsys):
    model = _energy(tmp_path / "m.onnx")
    code = main(
        ["prepare", str(model), "-o", str(tmp_path / "out.onnx"), "--input-shape", "x:1,64"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "precision: not emulated" in printed and "--precision fp16" in printed
    assert not any(a.startswith("--precision_mode") for a in _atc(printed))
