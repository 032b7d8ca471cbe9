"""slice-step-to-gather: a Slice with a negative step (or a last-axis step > 1) becomes Gather, bit-exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.doctor import diagnose
from surgery.passes.slice_step_to_gather import SliceStepToGather, gather_plan
from surgery.testing import make_model, op_counts, ort_run, vi

INT64_MIN = np.iinfo(np.int64).min


def _slice(starts, ends, axes=None, steps=None, shape=(1, 16), out=None, dtype=T.FLOAT):
    inits = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64)}
    ins = ["x", "starts", "ends"]
    if axes is not None:
        inits["axes"] = np.array(axes, np.int64)
        ins.append("axes")
    if steps is not None:
        if axes is None:
            ins.append("")
        inits["steps"] = np.array(steps, np.int64)
        ins.append("steps")
    nodes = [
        h.make_node("Slice", ins, ["s"], name="/pre/Slice"),
        h.make_node("Identity", ["s"], ["y"], name="out"),
    ]
    out = [None] * len(shape) if out is None else out
    return make_model(nodes, [vi("x", dtype, list(shape))], [vi("y", dtype, out)], inits)


def _feeds(shape, dtype=np.float32):
    rng = np.random.default_rng(0)
    array = rng.standard_normal(shape) * 100
    return {"x": array.astype(dtype)}


@pytest.mark.parametrize(
    "starts,ends,axes,steps,shape",
    [
        (
            [119],
            [INT64_MIN],
            [1],
            [-1],
            (1, 160),
        ),  # onnx-asr kaldi: the reflection pad x[:, 119::-1]
        ([-1], [INT64_MIN], [-1], [-1], (2, 3, 7)),  # x[..., ::-1]
        ([10], [2], [1], [-3], (2, 12)),  # a strided reversal, clamped end
        ([0, 5], [2, 0], [0, 1], [1, -2], (3, 6)),  # a kept axis and a reversed one
        (
            [2, 5],
            [INT64_MIN, 0],
            [0, 1],
            [-1, -2],
            (3, 6),
        ),  # a reversed leading axis stays a Slice (ATC takes it)
        ([4], [1], [0], [-1], (6,)),  # rank 1 (ATC's Slice needs rank >= 2)
        ([1], [100], [-1], [2], (2, 9)),  # step 2 on the last axis (ATC needs 1)
        ([50], [-100], [1], [-1], (2, 9)),  # start above the size: clamped to d - 1
    ],
)
def test_rewrite_is_bit_exact(starts, ends, axes, steps, shape):
    proto = _slice(starts, ends, axes, steps, shape)
    result = SliceStepToGather()(ir.from_proto(proto))
    assert result.modified
    counts = op_counts(result.model)
    assert counts["Gather"] == 1 and counts["Slice"] == (1 if len(axes) > 1 else 0)
    out = ir.to_proto(result.model)
    onnx.checker.check_model(out, full_check=True)
    feeds = _feeds(shape)
    got, ref = ort_run(out, feeds)["y"], ort_run(proto, feeds)["y"]
    assert got.shape == ref.shape and np.array_equal(got, ref)
    assert all(
        n.name.startswith("/pre/Slice") for n in result.model.graph if n.op_type != "Identity"
    )
    gathers = [n for n in result.model.graph if n.op_type == "Gather"]
    for node in gathers:  # ATC's Gather refuses negative indices
        assert int(np.min(node.inputs[1].const_value.numpy())) >= 0
    assert SliceStepToGather()(result.model).modified is False  # idempotent


def test_integers_and_unknown_output_dims():
    proto = _slice([-1], [INT64_MIN], [1], [-1], shape=(5, 2), out=None, dtype=T.INT64)
    result = SliceStepToGather()(ir.from_proto(proto))
    assert result.modified
    out = ir.to_proto(result.model)
    feeds = {"x": np.arange(10, dtype=np.int64).reshape(5, 2)}
    assert np.array_equal(ort_run(out, feeds)["y"], feeds["x"][:, ::-1])


def test_left_alone_with_reasons():
    assert (
        gather_plan(ir.Shape([4, "n"]), [-1], [INT64_MIN], [1], [-1])
        == "axis 1 (sliced with step -1) has no static size"
    )
    assert (
        gather_plan(ir.Shape([3, 4]), [0], [2], [1], [1])
        == "step 1 on the last axis of a tensor of rank 2 or more"
    )
    assert isinstance(gather_plan(ir.Shape([4]), [0], [2], [0], [1]), tuple)  # rank 1: rewritten
    assert gather_plan(None, [0], [1], None, None) == "input rank unknown"
    dynamic = _slice([-1], [INT64_MIN], [1], [-1], shape=(1, "t"), out=[1, "t"])
    assert SliceStepToGather()(ir.from_proto(dynamic)).modified is False
    positive = _slice([0], [4], [0], [2], shape=(8, 3))  # step 2 on a leading axis: ATC takes it
    assert SliceStepToGather()(ir.from_proto(positive)).modified is False


def test_inside_an_if_branch():
    then_g = h.make_graph(
        [h.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["t"], name="then/Slice")],
        "then",
        [],
        [vi("t", T.FLOAT, [1, 6])],
    )
    else_g = h.make_graph(
        [h.make_node("Identity", ["x"], ["e"], name="else/Id")],
        "else",
        [],
        [vi("e", T.FLOAT, [1, 6])],
    )
    inits = {
        "st": np.array([-1], np.int64),
        "en": np.array([INT64_MIN], np.int64),
        "ax": np.array([1], np.int64),
        "sp": np.array([-1], np.int64),
    }
    proto = make_model(
        [h.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g)],
        [vi("c", T.BOOL, []), vi("x", T.FLOAT, [1, 6])],
        [vi("y", T.FLOAT, [1, 6])],
        inits,
    )
    result = SliceStepToGather()(ir.from_proto(proto))
    assert result.modified
    out = ir.to_proto(result.model)
    feeds = {"c": np.array(True), "x": np.arange(6, dtype=np.float32).reshape(1, 6)}
    assert np.array_equal(ort_run(out, feeds)["y"], feeds["x"][:, ::-1])


def test_doctor_offers_it_and_the_pipeline_clears_the_finding():
    """onnx-asr kaldi: 'Slice with step -1 on the last axis' was will-fail with no fix."""
    proto = _slice([119], [INT64_MIN], [1], [-1], shape=(1, 400), out=[1, 120])
    finding = next(f for f in diagnose(ir.from_proto(proto)).findings if "step -1" in f.title)
    assert finding.fix == ["slice-step-to-gather"]
    model, report = surgery.apply(
        ir.from_proto(proto),
        [SliceStepToGather()],
        inputs=_feeds((1, 400)),
        verify={"rtol": 0.0, "atol": 0.0},
    )
    assert report.steps[0].parity_status == "ok"
    assert not [
        f
        for f in diagnose(model).findings
        if f.check == "slice" and f.severity.value == "will-fail"
    ]
