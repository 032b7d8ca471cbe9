"""The one walker (surgery.graph.walk): every graph once, parents first, with owner, opsets, depth."""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from surgery.graph import ONNX_DOMAINS, is_onnx_domain, iter_graphs, nested_nodes, opset_of, walk


def _model() -> ir.Model:
    """An If whose then-branch holds a Loop, plus a local function at its own opset."""
    loop_body = h.make_graph(
        [
            h.make_node("Identity", ["cond_in"], ["cond_out"], name="body_id"),
            h.make_node("Neg", ["v_in"], ["v_out"], name="body_neg"),
        ],
        "loop_body",
        [
            h.make_tensor_value_info("i", T.INT64, []),
            h.make_tensor_value_info("cond_in", T.BOOL, []),
            h.make_tensor_value_info("v_in", T.FLOAT, [2]),
        ],
        [
            h.make_tensor_value_info("cond_out", T.BOOL, []),
            h.make_tensor_value_info("v_out", T.FLOAT, [2]),
        ],
    )
    then_g = h.make_graph(
        [h.make_node("Loop", ["n", "c"], ["y_then"], body=loop_body, name="/then/Loop")],
        "then",
        [],
        [h.make_tensor_value_info("y_then", T.FLOAT, [2])],
    )
    else_g = h.make_graph(
        [h.make_node("Abs", ["x"], ["y_else"], name="/else/Abs")],
        "else",
        [],
        [h.make_tensor_value_info("y_else", T.FLOAT, [2])],
    )
    fn = h.make_function(
        "local",
        "Twice",
        ["a"],
        ["b"],
        [h.make_node("Add", ["a", "a"], ["b"], name="fn_add")],
        [h.make_opsetid("", 15)],
    )
    graph = h.make_graph(
        [
            h.make_node("If", ["flag"], ["y"], then_branch=then_g, else_branch=else_g, name="/If"),
            h.make_node("Twice", ["y"], ["z"], domain="local", name="/call"),
        ],
        "main",
        [
            h.make_tensor_value_info("x", T.FLOAT, [2]),
            h.make_tensor_value_info("flag", T.BOOL, []),
            h.make_tensor_value_info("n", T.INT64, []),
            h.make_tensor_value_info("c", T.BOOL, []),
        ],
        [h.make_tensor_value_info("z", T.FLOAT, [2])],
    )
    model = h.make_model(
        graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("local", 1)], functions=[fn]
    )
    return ir.from_proto(model)


def test_walk_visits_every_graph_once_parents_first_with_owner_opsets_and_depth():
    model = _model()
    scopes = list(walk(model))
    # attribute order as stored (onnx.helper sorts a node's attributes: else_branch first)
    assert [sc.graph.name for sc in scopes] == ["main", "else", "then", "loop_body", "Twice"]
    main, other, then, body, fn = scopes
    assert (
        main.owner is None and main.depth == 0 and main.opsets[""] == 17 and main.function is None
    )
    assert (
        then.owner is not None
        and then.owner.name == "/If"
        and then.attribute == "then_branch"
        and then.depth == 1
    )
    assert (
        body.owner is not None
        and body.owner.name == "/then/Loop"
        and body.attribute == "body"
        and body.depth == 2
    )
    assert other.attribute == "else_branch" and other.opsets[""] == 17
    assert fn.function is not None and fn.opsets[""] == 15 and fn.depth == 0
    assert [g.name for g in iter_graphs(model, functions=False)] == [
        "main",
        "else",
        "then",
        "loop_body",
    ]
    # a graph as the root: it and its bodies
    assert [g.name for g in iter_graphs(then.graph)] == ["then", "loop_body"]
    if_node = then.owner
    assert [inner.name for _, inner in nested_nodes(if_node)] == [
        "/else/Abs",
        "/then/Loop",
        "body_id",
        "body_neg",
    ]


def test_one_spelling_of_the_onnx_domain_and_its_opset():
    assert (
        ONNX_DOMAINS == ("", "ai.onnx")
        and is_onnx_domain("ai.onnx")
        and not is_onnx_domain("ai.onnx.ml")
    )
    assert (
        opset_of({"ai.onnx": 13}) == 13
        and opset_of({"": 17, "com.microsoft": 1}, "com.microsoft") == 1
    )
    assert opset_of({"ai.onnx.ml": 3}) is None
    onnx.checker.check_model(ir.to_proto(_model()))
