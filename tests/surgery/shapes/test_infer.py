"""Fresh shapes are a runner invariant: after every pass, every value carries what inference gives.

Passes that create nodes (a rule's ``Constant``, a decomposition's ``Mul``) leave them
unannotated; the runner refreshes every graph after each pass, known shapes are never dropped,
and ``assert-static`` proves staticness on the model it is given.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.graph import iter_graphs
from surgery.instruments import checker
from surgery.model_io import LightProto
from surgery.passes.assert_static import AssertStatic
from surgery.passes.decompose_hardswish import DecomposeHardSwish
from surgery.passes.make_static import MakeStatic
from surgery.shapes.dims import is_static_shape
from surgery.shapes.infer import inferred_tables, proven_shapes, refresh_shapes
from surgery.testing import make_model, vi


def _hardswish_model() -> onnx.ModelProto:
    return make_model(
        [h.make_node("HardSwish", ["x"], ["y"], name="hs")],
        [vi("x", T.FLOAT, [2, 3])],
        [vi("y", T.FLOAT, [2, 3])],
    )


def test_nodes_a_pass_creates_are_annotated_by_the_runner_and_assert_static_passes():
    # before: the HardSigmoid the decomposition creates had no type, and assert-static said
    # "tensor 'hs/HardSigmoid/out': unknown rank (produced by HardSigmoid node 'hs/HardSigmoid')"
    model, report = surgery.apply(
        ir.from_proto(_hardswish_model()),
        [DecomposeHardSwish(), AssertStatic()],
        inputs={"x": np.linspace(-4, 4, 6, dtype=np.float32).reshape(2, 3)},
    )
    assert report.ok and report.steps[0].modified and report.steps[1].name == "assert-static"
    assert [n.op_type for n in model.graph] == ["HardSigmoid", "Mul"]
    for node in model.graph:
        for out in node.outputs:
            assert out.type is not None and is_static_shape(out.shape), (
                node.op_type,
                out.name,
                out.shape,
            )


def test_refresh_fills_every_graph_keyed_per_graph_and_function_constants():
    """Sibling If branches reuse the name 't' with different shapes; each keeps its own."""
    then_g = h.make_graph(
        [
            h.make_node("Transpose", ["x"], ["t"], name="then/t"),
            h.make_node("ReduceSum", ["t"], ["o1"], keepdims=0, axes=None, name="then/sum"),
        ],
        "then",
        [],
        [vi("o1", T.FLOAT, None)],
    )
    else_g = h.make_graph(
        [
            h.make_node("Identity", ["x"], ["t"], name="else/t"),
            h.make_node("ReduceSum", ["t"], ["o2"], keepdims=0, name="else/sum"),
        ],
        "else",
        [],
        [vi("o2", T.FLOAT, None)],
    )
    fn = h.make_function(
        "local",
        "Inc",
        ["a"],
        ["b"],
        [
            h.make_node("Constant", [], ["one"], value=h.make_tensor("one", T.FLOAT, [], [1.0])),
            h.make_node("Add", ["a", "one"], ["b"]),
        ],
        opset_imports=[h.make_opsetid("", 17)],
    )
    proto = make_model(
        [
            h.make_node("If", ["c"], ["s"], name="if", then_branch=then_g, else_branch=else_g),
            h.make_node("Inc", ["s"], ["y"], domain="local", name="inc"),
        ],
        [vi("x", T.FLOAT, [2, 3]), vi("c", T.BOOL, [])],
        [vi("y", T.FLOAT, [])],
        functions=[fn],
        extra_opsets={"local": 1},
    )
    model = ir.from_proto(proto)
    for graph in iter_graphs(model.graph):
        for node in graph:
            for out in node.outputs:
                out.shape, out.type = None, None
    function = next(iter(model.functions.values()))
    assert function[0].outputs[0].type is None
    assert refresh_shapes(model) > 0
    if_node = model.graph.node("if")
    then_t = if_node.attributes["then_branch"].as_graph().node(0).outputs[0]
    else_t = if_node.attributes["else_branch"].as_graph().node(0).outputs[0]
    assert list(then_t.shape) == [3, 2] and list(else_t.shape) == [2, 3]
    assert (
        model.graph.outputs[0].dtype == ir.DataType.FLOAT
        and list(model.graph.outputs[0].shape) == []
    )
    assert (
        function[0].outputs[0].dtype == ir.DataType.FLOAT
        and list(function[0].outputs[0].shape) == []
    )
    tables = inferred_tables(model)
    assert tables is not None and id(if_node.attributes["then_branch"].as_graph()) in tables


def test_refresh_never_drops_a_known_shape_and_resolves_minus_one():
    model = ir.from_proto(
        make_model(
            [h.make_node("Relu", ["x"], ["y"], name="r")],
            [vi("x", T.FLOAT, [2, 3])],
            [vi("y", T.FLOAT, [2, 3])],
        )
    )
    y = model.graph.outputs[0]
    y.shape = ir.Shape([-1, 3])  # Paddle's unknown: inference knows better
    refresh_shapes(model)
    assert list(y.shape) == [2, 3]
    y.shape = ir.Shape([2, 3])
    model.graph.inputs[0].shape = ir.Shape(["n", 3])  # inference now says [n, 3]: 2 is kept
    refresh_shapes(model)
    assert list(y.shape) == [2, 3]


def _opaque_function_model() -> onnx.ModelProto:
    """A function whose body onnx cannot infer (an ORT contrib op): its call's output loses its
    shape whenever shapes are recomputed from scratch."""
    fn = h.make_function(
        "local",
        "Act",
        ["a"],
        ["b"],
        [
            h.make_node("Gelu", ["a"], ["g"], domain="com.microsoft", name="g"),
            h.make_node("Relu", ["g"], ["b"], name="r"),
        ],
        opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)],
    )
    return make_model(
        [
            h.make_node("Add", ["x", "x"], ["s"], name="add"),
            h.make_node("Act", ["s"], ["y"], domain="local", name="act"),
        ],
        [vi("x", T.FLOAT, [1, 4])],
        [vi("y", T.FLOAT, [1, 4])],
        functions=[fn],
        extra_opsets={"local": 1, "com.microsoft": 1},
    )


def test_make_static_keeps_a_graph_output_shape_inference_cannot_recompute():
    # before: the checker gate failed with "Field 'shape' of 'type' is required but missing"
    model = ir.from_proto(_opaque_function_model())
    result = MakeStatic()(model)
    assert list(model.graph.outputs[0].shape) == [1, 4]
    assert any("could not recompute were kept" in n for n in result.notes)
    assert checker.check(LightProto(model), full=True)


def test_proven_shapes_ignore_annotations_and_leave_the_model_unchanged():
    model = ir.from_proto(
        make_model(
            [h.make_node("Relu", ["x"], ["y"], name="r")],
            [vi("x", T.FLOAT, ["n", 3])],
            [vi("y", T.FLOAT, [5, 3])],
        )
    )
    y = model.graph.outputs[0]
    proven = proven_shapes(model)
    assert proven[y] is not None and proven[y][0] != 5 and proven[y][1] == 3
    assert list(y.shape) == [5, 3]
