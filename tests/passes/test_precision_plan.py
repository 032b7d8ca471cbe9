"""precision-plan: the float16 diagnosis as the last pipeline step; apply writes the keep_dtype file."""

from __future__ import annotations

import shlex

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.cli import main
from surgery.passes.precision_plan import PrecisionPlan
from surgery.testing import make_model, vi


def _model() -> onnx.ModelProto:
    return make_model(
        [
            h.make_node("Relu", ["x"], ["r"], name="rectify"),
            h.make_node("ReduceSumSquare", ["r"], ["energy"], name="energy_sum", keepdims=1),
        ],
        [vi("x", T.FLOAT, [1, 64])],
        [vi("energy", T.FLOAT, [1, 1])],
    )


def _loud(tmp_path):
    path = tmp_path / "loud.npz"
    np.savez(path, x=np.random.default_rng(0).uniform(50, 100, (1, 64)).astype(np.float32))
    return path


def test_pass_notes_artifact_and_leaves_model(tmp_path):
    model = ir.from_proto(_model())
    result = PrecisionPlan(data=str(_loud(tmp_path)))(model)
    assert not result.modified and [n.name for n in result.model.graph] == ["rectify", "energy_sum"]
    assert result.artifacts["precision-plan"]["keep_dtype"] == ["energy_sum"]
    assert result.stats == {"fp16_ok": False, "keep_fp32": 1, "overflows": 1}
    assert any(line.startswith("overflow: tensor 'energy'") for line in result.notes)


def test_apply_writes_keep_dtype_and_atc_flags(tmp_path, capsys):
    onnx.save(_model(), tmp_path / "m.onnx")
    toml = tmp_path / "passes.toml"
    toml.write_text(
        f'[[pass]]\nname = "cleanup"\n\n[[pass]]\nname = "precision-plan"\ndata = "{_loud(tmp_path).name}"\n'
        'flag = "precision_mode_v2"\n'
    )
    out = tmp_path / "out.onnx"
    code = main(
        ["apply", str(toml), str(tmp_path / "m.onnx"), "-o", str(out), "--soc", "Ascend310P3"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    keep = tmp_path / "out.keep_dtype.txt"
    assert keep.read_text() == "energy_sum\n"
    argv = shlex.split(next(ln for ln in printed.splitlines() if ln.startswith("atc: "))[5:])
    assert "--precision_mode_v2=fp16" in argv and f"--keep_dtype={keep}" in argv


def test_safe_model_no_file(tmp_path):
    onnx.save(_model(), tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    _, report = surgery.apply(
        tmp_path / "m.onnx", [PrecisionPlan()], output=out
    )  # generated inputs: small
    assert not (tmp_path / "out.keep_dtype.txt").exists()
    assert report.extra["atc"][0]["precision"] == ["--precision_mode=force_fp16"]


def test_keep_dtype_file_goes_through_the_write_plan(tmp_path, capsys):
    """OUT.keep_dtype.txt is a file the run writes: it may not replace an input (here the parity data,
    named like it), and it appears only with the output, never on a failed run."""
    onnx.save(_model(), tmp_path / "m.onnx")
    data = (
        tmp_path / "out.keep_dtype.txt"
    )  # the user's arrays, under the name the keep-list would take
    np.savez(
        data.with_suffix(".npz"),
        x=np.random.default_rng(0).uniform(50, 100, (1, 64)).astype(np.float32),
    )
    data.with_suffix(".npz").rename(data)
    before = data.read_bytes()
    toml = tmp_path / "passes.toml"
    toml.write_text(f'[[pass]]\nname = "precision-plan"\ndata = "{data.name}"\n')
    code = main(["apply", str(toml), str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "keep_dtype" in err and len(err.strip().splitlines()) == 1
    assert data.read_bytes() == before and not (tmp_path / "out.onnx").exists()
