"""Shape buckets: one gated static model per size, named OUT.<label>.onnx, with atc lines."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.buckets import apply_buckets, bucket_label, bucket_pipeline
from surgery.cli import main
from surgery.errors import PassError, PipelineError
from surgery.passes.assert_static import AssertStatic
from surgery.passes.fix_shapes import FixShapes
from surgery.passes.make_static import MakeStatic
from surgery.pipeline import Pipeline
from surgery.testing import make_model, op_counts, ort_run, vi

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "10_static_shapes"


def batch_model():
    """x [batch, seq, 8] → reshape via Shape/Gather/Concat to [batch, seq*8] → MatMul; mask [batch, seq]."""
    rng = np.random.default_rng(0)
    return make_model(
        [
            h.make_node("Shape", ["x"], ["s"], name="shape"),
            h.make_node("Slice", ["s", "z", "one"], ["b"], name="batch"),
            h.make_node("Concat", ["b", "m1"], ["tgt"], axis=0, name="tgt"),
            h.make_node("Reshape", ["x", "tgt"], ["flat"], name="flatten"),
            h.make_node("MatMul", ["flat", "W"], ["y0"], name="proj"),
            h.make_node("ReduceSum", ["mask", "one"], ["ms"], keepdims=1, name="mask_sum"),
            h.make_node("Add", ["y0", "ms"], ["y"], name="add"),
        ],
        [vi("x", T.FLOAT, ["batch", 4, 8]), vi("mask", T.FLOAT, ["batch", 4])],
        [vi("y", T.FLOAT, ["batch", 5])],
        {
            "z": np.array([0], np.int64),
            "one": np.array([1], np.int64),
            "m1": np.array([-1], np.int64),
            "W": rng.random((32, 5), dtype=np.float32),
        },
    )


PIPELINE = [MakeStatic(), AssertStatic()]


def test_one_static_model_per_bucket(tmp_path):
    proto = batch_model()
    onnx.save(proto, tmp_path / "m.onnx")
    result = apply_buckets(
        tmp_path / "m.onnx",
        PIPELINE,
        "batch=1,4,8",
        output=tmp_path / "out.onnx",
        soc_version="Ascend310",
    )
    assert [r.label for r in result.runs] == ["batch1", "batch4", "batch8"]
    for run, size in zip(result.runs, (1, 4, 8), strict=True):
        assert run.output == tmp_path / f"out.batch{size}.onnx" and run.output.exists()
        assert run.report.ok and run.report.step("make-static").parity_status == "ok"
        written = onnx.load(run.output)
        assert [d.dim_value for d in written.graph.input[0].type.tensor_type.shape.dim] == [
            size,
            4,
            8,
        ]
        assert [d.dim_value for d in written.graph.output[0].type.tensor_type.shape.dim] == [
            size,
            5,
        ]
        assert op_counts(written)["Shape"] == 0
        assert run.atc is not None and run.atc.input_shape == f"x:{size},4,8;mask:{size},4"
        feeds = {"x": np.ones((size, 4, 8), np.float32), "mask": np.ones((size, 4), np.float32)}
        np.testing.assert_allclose(
            ort_run(written, feeds)["y"], ort_run(proto, feeds)["y"], rtol=1e-6
        )
    # every input carries 'batch' at dim 0: the dynamic-batch alternative is offered
    alt = result.dynamic_batch
    assert (
        alt is not None
        and alt.input_shape == "x:-1,4,8;mask:-1,4"
        and alt.dynamic_batch_size == "1,4,8"
    )
    assert alt.model == str(tmp_path / "m.onnx")
    assert result.to_dict()["dynamic_batch_alternative"]["dynamic_batch_size"] == "1,4,8"


def test_source_model_is_untouched_and_ir_models_are_cloned():
    model = ir.from_proto(batch_model())
    result = apply_buckets(model, PIPELINE, {"batch": [2, 3]})
    assert [r.model.graph.inputs[0].shape[0] for r in result.runs] == [2, 3]
    assert model.graph.inputs[0].shape[0].value == "batch"
    assert op_counts(model)["Shape"] == 1


def test_binding_merges_into_an_existing_fix_shapes():
    pipe = Pipeline.from_passes([FixShapes(dims={"batch": 9}), MakeStatic()])
    merged = bucket_pipeline(pipe, {"batch": 2})
    assert merged.steps[0].pass_.options.dims == {"batch": 2}
    assert pipe.steps[0].pass_.options.dims == {"batch": 9}  # the original pipeline is not changed
    added = bucket_pipeline(Pipeline.from_passes([MakeStatic()]), {"x[0]": 4})
    assert [s.name for s in added.steps] == ["fix-shapes", "make-static"]
    assert (
        bucket_label({"x[0]": 4}) == "x0_4"
        and bucket_label({"batch": 1, "seq": 128}) == "batch1_seq128"
    )


def test_errors_name_the_bucket():
    with pytest.raises(
        PassError, match=r"^bucket batch1: fix-shapes: input 'x' dim 1 is fixed to 4"
    ):
        apply_buckets(batch_model(), [FixShapes(shapes="x:-1,5,8"), MakeStatic()], "batch=1,2")
    with pytest.raises(PipelineError, match="no buckets"):
        apply_buckets(batch_model(), PIPELINE)
    with pytest.raises(PipelineError, match="positive integers"):
        apply_buckets(batch_model(), PIPELINE, "batch=0,1")


def test_cli_buckets_flag(tmp_path, capsys):
    onnx.save(batch_model(), tmp_path / "m.onnx")
    (tmp_path / "p.toml").write_text(
        '[[pass]]\nname = "make-static"\n[[pass]]\nname = "assert-static"\n'
    )
    code = main(
        [
            "apply",
            str(tmp_path / "p.toml"),
            str(tmp_path / "m.onnx"),
            "-o",
            str(tmp_path / "o.onnx"),
            "--buckets",
            "batch=1,2",
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "== bucket batch1 (batch=1)" in printed and "== bucket batch2 (batch=2)" in printed
    assert printed.count("atc: atc --model=") == 3  # two buckets + the dynamic-batch alternative
    assert "--dynamic_batch_size=1,2" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] and [b["label"] for b in report["buckets"]] == ["batch1", "batch2"]
    assert (tmp_path / "o.batch1.onnx").exists() and (tmp_path / "o.batch2.onnx").exists()
    assert not (tmp_path / "o.onnx").exists()


def test_example_buckets_toml(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("static_models_b", EXAMPLE / "build_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    onnx.save(module.paddle(), tmp_path / "paddle.onnx")
    code = main(
        [
            "apply",
            str(EXAMPLE / "buckets.toml"),
            str(tmp_path / "paddle.onnx"),
            "-o",
            str(tmp_path / "paddle_static.onnx"),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    for size in (1, 4):
        written = onnx.load(tmp_path / f"paddle_static.x0_{size}.onnx")
        assert [d.dim_value for d in written.graph.input[0].type.tensor_type.shape.dim] == [
            size,
            3,
            24,
            32,
        ]
        assert op_counts(written)["Shape"] == 0
    assert "--input_shape=x:-1,3,24,32 --dynamic_batch_size=1,4" in printed
