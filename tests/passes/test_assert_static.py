"""assert-static: lists every dynamic tensor (any graph) and data-dependent op with its producer."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import PassError
from surgery.passes.assert_static import AssertStatic
from surgery.passes.fix_shapes import FixShapes
from surgery.passes.make_static import MakeStatic
from surgery.testing import make_model, vi


def detector_tail():
    """boxes [n,4] → NonZero over scores → Gather; plus a TopK whose k comes from a Shape."""
    return make_model(
        [
            h.make_node("Relu", ["scores"], ["s"], name="relu"),
            h.make_node("Greater", ["s", "thr"], ["keep"], name="thr"),
            h.make_node("NonZero", ["keep"], ["idx"], name="nonzero"),
            h.make_node("Transpose", ["idx"], ["idx_t"], perm=[1, 0], name="idx_t"),
            h.make_node("Squeeze", ["idx_t", "ax1"], ["rows"], name="rows"),
            h.make_node("Gather", ["boxes", "rows"], ["kept"], axis=0, name="gather_kept"),
            h.make_node("Shape", ["rows"], ["k"], name="k"),
            h.make_node("TopK", ["s", "k"], ["top", "top_i"], name="topk"),
        ],
        [vi("boxes", T.FLOAT, ["n", 4]), vi("scores", T.FLOAT, ["n"])],
        [vi("kept", T.FLOAT, ["m", 4]), vi("top", T.FLOAT, ["m"])],
        {"thr": np.array(0.5, np.float32), "ax1": np.array([1], np.int64)},
    )


def test_static_model_passes():
    model = ir.from_proto(
        make_model(
            [h.make_node("Relu", ["x"], ["y"], name="r")],
            [vi("x", T.FLOAT, [1, 3])],
            [vi("y", T.FLOAT, [1, 3])],
        )
    )
    result = AssertStatic()(model)
    assert not result.modified and AssertStatic.is_gate


def test_lists_every_offender_with_its_producer():
    model = ir.from_proto(detector_tail())
    FixShapes(shapes="boxes:8,4;scores:8")(model)
    MakeStatic()(model)
    with pytest.raises(PassError) as info:
        AssertStatic()(model)
    text = str(info.value)
    assert text.startswith("assert-static: the model is not static")
    assert "op 'nonzero': NonZero has a data-dependent output shape" in text
    assert "op 'topk': TopK with a non-constant k" in text
    assert "tensor 'idx'" in text and "produced by NonZero node 'nonzero'" in text
    assert "tensor 'kept'" in text and "produced by Gather node 'gather_kept'" in text
    assert "tensor 'boxes'" not in text  # fixed by fix-shapes


def test_dynamic_graph_input_and_unknown_rank():
    model = ir.from_proto(
        make_model(
            [
                h.make_node("Relu", ["x"], ["y"], name="r"),
                h.make_node("Reshape", ["x", "s"], ["z"], name="reshape"),
                h.make_node("Flatten", ["z"], ["w"], name="flat"),
            ],
            [vi("x", T.FLOAT, ["batch", 3]), vi("s", T.INT64, [None])],
            [vi("y", T.FLOAT, ["batch", 3]), vi("w", T.FLOAT, [None, None])],
        )
    )
    model.graph.node(0).outputs[0].shape = None  # a missing annotation: inference still knows it
    with pytest.raises(PassError) as info:
        AssertStatic()(model)
    text = str(info.value)
    assert "tensor 'x': shape [batch, 3] has dynamic dim 0 (graph input)" in text
    assert "tensor 'y': shape [batch, 3] has dynamic dim 0 (produced by Relu node 'r')" in text
    assert "tensor 'z': unknown rank (produced by Reshape node 'reshape')" in text
    assert model.graph.node(0).outputs[0].shape is None  # judged, not changed


def test_staticness_is_proven_by_inference_not_read_from_annotations():
    """A stale static annotation does not make a dynamic tensor static, and a missing one (a
    Constant a pass created) does not make a static tensor unknown."""
    model = ir.from_proto(
        make_model(
            [
                h.make_node(
                    "Constant",
                    [],
                    ["k"],
                    name="k",
                    value=h.make_tensor("k", T.FLOAT, [3], [1, 2, 3]),
                ),
                h.make_node("Add", ["x", "k"], ["y"], name="add"),
                h.make_node("Relu", ["d"], ["e"], name="relu"),
            ],
            [vi("x", T.FLOAT, [2, 3]), vi("d", T.FLOAT, ["n"])],
            [vi("y", T.FLOAT, [2, 3]), vi("e", T.FLOAT, [4])],
        )
    )
    k = model.graph.node(0).outputs[0]
    k.shape, k.type = None, None  # as a pass leaves a node it creates
    with pytest.raises(PassError) as info:
        AssertStatic()(model)
    text = str(info.value)
    assert "'k'" not in text and "'y'" not in text
    assert "tensor 'e': shape [n] has dynamic dim 0 (produced by Relu node 'relu')" in text
    assert list(model.graph.outputs[1].shape) == [4]  # the model is left as given


def test_subgraph_tensors_are_checked_and_labelled():
    branch = h.make_graph(
        [h.make_node("Neg", ["d"], ["neg"], name="b/neg")],
        "then",
        [],
        [vi("neg", T.FLOAT, ["n", 2])],
    )
    other = h.make_graph(
        [h.make_node("Abs", ["x"], ["abs"], name="e/abs")], "else", [], [vi("abs", T.FLOAT, [3, 2])]
    )
    model = ir.from_proto(
        make_model(
            [h.make_node("If", ["c"], ["y"], name="branch", then_branch=branch, else_branch=other)],
            [vi("x", T.FLOAT, [3, 2]), vi("d", T.FLOAT, ["n", 2]), vi("c", T.BOOL, [])],
            [vi("y", T.FLOAT, [None, 2])],
        )
    )
    with pytest.raises(
        PassError, match=r"tensor 'neg' \[in If 'branch'.then_branch\]: shape \[n, 2\]"
    ):
        AssertStatic()(model)


def test_loop_without_constant_trip_count():
    body = h.make_graph(
        [
            h.make_node("Identity", ["c_in"], ["c_out"], name="b/c"),
            h.make_node("Add", ["v_in", "v_in"], ["v_out"], name="b/add"),
        ],
        "body",
        [vi("i", T.INT64, []), vi("c_in", T.BOOL, []), vi("v_in", T.FLOAT, [2])],
        [vi("c_out", T.BOOL, []), vi("v_out", T.FLOAT, [2])],
    )
    model = ir.from_proto(
        make_model(
            [h.make_node("Loop", ["n", "", "v"], ["out"], body=body, name="loop")],
            [vi("n", T.INT64, []), vi("v", T.FLOAT, [2])],
            [vi("out", T.FLOAT, [2])],
        )
    )
    with pytest.raises(PassError, match="op 'loop': Loop without a constant trip count"):
        AssertStatic()(model)


def test_allow_ops_exempts_the_op_and_what_follows_it():
    model = ir.from_proto(detector_tail())
    FixShapes(shapes="boxes:8,4;scores:8")(model)
    MakeStatic()(model)
    with pytest.raises(PassError) as info:
        AssertStatic(allow_ops=["NonZero"])(model)
    text = str(info.value)
    assert "NonZero" not in text and "tensor 'kept'" not in text
    assert (
        "TopK with a non-constant k" in text
    )  # k derives from NonZero's output, but TopK itself is not allowed
    AssertStatic(allow_ops=["NonZero", "TopK"])(model)


def test_as_a_pipeline_gate():
    proto = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, ["n", 3])],
        [vi("y", T.FLOAT, ["n", 3])],
    )
    with pytest.raises(PassError, match="tensor 'x'"):
        surgery.apply(proto, [AssertStatic()])
    _model, report = surgery.apply(proto, [FixShapes(shapes="x:2,3"), MakeStatic(), AssertStatic()])
    assert report.ok and report.step("assert-static").modified is False


def _function_model():
    """y = Block(x) where the local function Block reshapes by a Shape-derived target, then NonZero."""
    body = [
        h.make_node("Shape", ["a"], ["s"], name="fn/shape"),
        h.make_node("ReduceProd", ["s"], ["n"], keepdims=1, name="fn/prod"),
        h.make_node("Reshape", ["a", "n"], ["flat"], name="fn/reshape"),
        h.make_node("Relu", ["flat"], ["b"], name="fn/relu"),
    ]
    block = h.make_function("local.fn", "Block", ["a"], ["b"], body, [h.make_opsetid("", 17)])
    picky = h.make_function(
        "local.fn",
        "Picky",
        ["a"],
        ["b"],
        [h.make_node("NonZero", ["a"], ["b"], name="fn/nonzero")],
        [h.make_opsetid("", 17)],
    )
    return make_model(
        [h.make_node("Block", ["x"], ["y"], domain="local.fn", name="block0")],
        [vi("x", T.FLOAT, [2, 3])],
        [vi("y", T.FLOAT, [None])],
        functions=[block, picky],
        extra_opsets={"local.fn": 1},
    )


def test_model_local_function_calls_and_their_data_dependent_ops_are_offenders():
    model = ir.from_proto(_function_model())
    with pytest.raises(PassError) as info:
        AssertStatic()(model)
    text = str(info.value)
    assert (
        "op 'block0': calls model-local function 'local.fn::Block'" in text
        and "inline-functions" in text
    )
    assert (
        "op 'fn/nonzero' [in function local.fn::Picky]: NonZero has a data-dependent output shape"
        in text
    )
    # allowed by name: the call is accepted
    with pytest.raises(PassError) as info:
        AssertStatic(allow_ops=["Block"])(model)
    assert "block0" not in str(info.value) and "fn/nonzero" in str(info.value)


def test_after_inline_functions_and_make_static_the_function_model_is_static():
    from surgery.passes.inline_functions import InlineFunctions

    proto = _function_model()
    proto.functions.pop()  # drop the unused NonZero function
    before = ir.from_proto(proto)
    result = MakeStatic()(before)
    assert any("model-local functions remain (local.fn::Block)" in n for n in result.notes)
    out, report = surgery.apply(
        proto, [InlineFunctions(), MakeStatic(), AssertStatic()], verify="end"
    )
    model = ir.from_proto(out)
    assert not model.functions
    assert [tuple(v.shape) for v in model.graph.outputs] == [(6,)]
    assert report.step("assert-static").stats == {"checked": "static"}
