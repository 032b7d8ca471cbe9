"""The ``split-postprocess`` pass: the model becomes the head, the tail is a chained model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery import model_io
from surgery.errors import InputError
from surgery.passes.split_postprocess import SplitPostprocess
from surgery.runtime import SplitRunner
from surgery.testing import make_model, op_counts, ort_run, vi


def _model(nonzero_in_branch: bool = False) -> onnx.ModelProto:
    """Scores, then a selection by NonZero (at top level, or inside an If branch)."""
    rng = np.random.default_rng(0)
    select = [
        h.make_node("Greater", ["scores", "thr"], ["mask"], name="/post/Greater"),
        h.make_node("NonZero", ["mask"], ["nz"], name="/post/NonZero"),
        h.make_node("ReduceMax", ["nz"], ["sel"], name="/post/ReduceMax", keepdims=0),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["feat"], name="/head/MatMul"),
        h.make_node("Sigmoid", ["feat"], ["scores"], name="/head/Sigmoid"),
        h.make_node("Erf", ["scores"], ["erf"], name="/head/Erf"),
    ]
    if nonzero_in_branch:
        then_g = h.make_graph(select, "then", [], [vi("sel", T.INT64, [])])
        else_g = h.make_graph(
            [
                h.make_node(
                    "Constant",
                    [],
                    ["zero"],
                    name="/post/zero",
                    value=onnx.numpy_helper.from_array(np.array(0, np.int64)),
                )
            ],
            "else",
            [],
            [vi("zero", T.INT64, [])],
        )
        nodes.append(
            h.make_node(
                "If", ["flag"], ["sel_out"], name="/post/If", then_branch=then_g, else_branch=else_g
            )
        )
    else:
        nodes += [*select, h.make_node("Identity", ["sel"], ["sel_out"], name="/post/Identity")]
    return make_model(
        nodes,
        [vi("x", T.FLOAT, [1, 8]), vi("flag", T.BOOL, [])],
        [vi("scores", T.FLOAT, [1, 6]), vi("sel_out", T.INT64, []), vi("erf", T.FLOAT, [1, 6])],
        {"W": rng.standard_normal((8, 6)).astype(np.float32), "thr": np.array(0.5, np.float32)},
        ir_version=8,
    )


def _feeds(seed: int = 0) -> dict[str, np.ndarray]:
    return {
        "x": np.random.default_rng(seed).standard_normal((1, 8)).astype(np.float32),
        "flag": np.array(True),
    }


def test_split_is_gated_head_then_tail_and_saved(tmp_path):
    out = tmp_path / "head.onnx"
    head, report = surgery.apply(
        ir.from_proto(_model()),
        [SplitPostprocess()],
        inputs=_feeds(),
        verify={"rtol": 0.0, "atol": 0.0},
        output=out,
        reproducer_dir=tmp_path / "r",
    )
    step = report.steps[0]
    assert step.modified and (step.checker, step.ort, step.parity_status) == ("ok", "ok", "ok")
    assert step.stats["boundary"] == 1 and any("boundary (auto): mask" in n for n in step.notes)
    assert [v.name for v in head.graph.outputs] == ["scores", "erf", "mask"]
    assert op_counts(head)["NonZero"] == 0 and head.ir_version == 8
    tail = model_io.load(tmp_path / "head.tail.onnx")
    assert [v.name for v in tail.graph.inputs] == ["mask"] and [
        v.name for v in tail.graph.outputs
    ] == ["sel_out"]
    runner = SplitRunner([out, tmp_path / "head.tail.onnx"], outputs=["scores", "sel_out", "erf"])
    for seed in range(3):
        ref = ort_run(ir.from_proto(_model()), _feeds(seed))
        got = runner.run(_feeds(seed))
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key])
    # idempotent: the head has nothing left to split off
    assert [v.name for v in head.graph.inputs] == [
        "x"
    ]  # flag is read by nothing: the head drops it
    _, again = surgery.apply(
        head, [SplitPostprocess()], inputs={"x": _feeds()["x"]}, reproducer_dir=tmp_path / "r2"
    )
    assert not again.steps[0].modified


def test_hostile_op_inside_an_if_branch_moves_the_if_to_the_tail(tmp_path):
    head, report = surgery.apply(
        ir.from_proto(_model(nonzero_in_branch=True)),
        [SplitPostprocess()],
        inputs=_feeds(),
        verify={"rtol": 0.0, "atol": 0.0},
        reproducer_dir=tmp_path / "r",
    )
    step = report.steps[0]
    assert step.parity_status == "ok" and any(
        "/post/If" in n and "NonZero" in n for n in step.notes
    )
    tail = report.models["tail"]
    assert [n.op_type for n in tail.graph] == ["If"]
    # the If reads scores and thr from inside its branch: scores crosses, thr (an initializer) is copied by reference
    assert [v.name for v in tail.graph.inputs] == ["scores", "flag"] and list(
        tail.graph.initializers
    ) == ["thr"]
    assert "If" not in op_counts(head)


def test_user_boundary_and_extra_hostile_ops(tmp_path):
    _, report = surgery.apply(
        ir.from_proto(_model()),
        [SplitPostprocess(hostile_ops=["Erf"])],
        inputs=_feeds(),
        reproducer_dir=tmp_path / "r",
    )
    assert report.steps[0].parity_status == "ok"
    # Erf reads scores, which crosses anyway: Greater follows it into the tail, mask no longer crosses
    assert {n.op_type for n in report.models["tail"].graph} == {
        "Erf",
        "Greater",
        "NonZero",
        "ReduceMax",
        "Identity",
    }
    assert report.steps[0].stats["boundary"] == 1 and report.steps[0].stats["boundary_bytes"] == 24
    head, report = surgery.apply(
        ir.from_proto(_model()),
        [SplitPostprocess(boundary=["nz"], tail_name="cpu")],
        inputs=_feeds(),
        reproducer_dir=tmp_path / "r2",
    )
    step = report.steps[0]
    assert step.parity_status == "ok" and list(report.models) == ["cpu"]
    assert any("still contains" in n and "NonZero" in n for n in step.notes)
    assert [n.op_type for n in report.models["cpu"].graph] == ["ReduceMax", "Identity"]
    # a second run at the same boundary finds a head already
    assert not SplitPostprocess(boundary=["nz"])(head).modified
    with pytest.raises(
        InputError, match=r"boundary tensor 'nzz': no such tensor .*did you mean 'nz'"
    ):
        SplitPostprocess(boundary=["nzz"])(ir.from_proto(_model()))


def test_model_without_post_processing_is_unchanged():
    proto = _model()
    del proto.graph.node[3:]
    del proto.graph.output[1]
    result = SplitPostprocess()(ir.from_proto(proto))
    assert not result.modified and "no data-dependent or NPU-hostile op" in result.notes[0]
