"""The rule engine: patterns, conditions, near-miss reasons, every graph, naming, onnxscript rules."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.errors import PassError
from surgery.rules import Builder, Const, Match, Op, Rule, RuleContext, Var, apply_rules
from surgery.testing import make_model, op_counts, ort_run, vi


class SwishRule(Rule):
    """x * Sigmoid(x) → x * HardSigmoid(x) (a made-up rewrite, easy to check by op counts)."""

    name = "swish"
    pattern = Op("Mul", Var("x"), Op("Sigmoid", Var("x")))

    def build(self, b: Builder, m: Match):
        return [b.op("Mul", m["x"], b.op("HardSigmoid", m["x"]))]


class ScaleByConst(Rule):
    """Mul by a constant 2 → Add(x, x)."""

    name = "double"
    pattern = Op("Mul", Var("x"), Const("c", where=lambda a: a.size == 1 and float(a.reshape(-1)[0]) == 2.0))

    def build(self, b: Builder, m: Match):
        return [b.op("Add", m["x"], m["x"])]


class Softmax4D(Rule):
    """Softmax on a 4-D float input with axis=-1 (to exercise attribute and shape conditions)."""

    name = "softmax4d"
    pattern = Op("Softmax", Var("x", rank=4, dtypes=(ir.DataType.FLOAT,)), attrs={"axis": -1})

    def build(self, b: Builder, m: Match):
        e = b.op("Exp", m["x"])
        return [b.op("Div", e, b.reduce("ReduceSum", e, [-1], keepdims=1))]


def _swish_model(shared_sigmoid: bool = False) -> onnx.ModelProto:
    nodes = [
        h.make_node("Sigmoid", ["x"], ["s"], name="/act/Sigmoid"),
        h.make_node("Mul", ["x", "s"], ["y"], name="/act/Mul"),
    ]
    outputs = [vi("y", T.FLOAT, [2, 3])]
    if shared_sigmoid:
        nodes.append(h.make_node("Neg", ["s"], ["z"], name="/other/Neg"))
        outputs.append(vi("z", T.FLOAT, [2, 3]))
    return make_model(nodes, [vi("x", T.FLOAT, [2, 3])], outputs)


def test_two_node_pattern_rewrites_and_names_after_the_replaced_node():
    model = ir.from_proto(_swish_model())
    stats = apply_rules(model, [SwishRule()])
    assert stats.applied["swish"] == 1
    assert op_counts(model) == {"Mul": 1, "HardSigmoid": 1}
    names = {n.name for n in model.graph}
    assert names == {"/act/Mul/Mul", "/act/Mul/HardSigmoid"}
    assert model.graph.outputs[0].name == "y"  # the output keeps its name
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    # a second sweep finds nothing
    assert apply_rules(model, [SwishRule()]).total == 0


def test_interior_node_used_elsewhere_is_a_near_miss_with_reason(caplog):
    model = ir.from_proto(_swish_model(shared_sigmoid=True))
    with caplog.at_level(logging.DEBUG, logger="surgery.rules.engine"):
        stats = apply_rules(model, [SwishRule()])
    assert stats.total == 0
    assert stats.near_misses["swish"] == 1
    assert "'s' is also used by '/other/Neg' (Neg)" in stats.miss_reasons["swish"][0]
    assert "near miss at Mul '/act/Mul'" in caplog.text
    assert op_counts(model) == {"Sigmoid": 1, "Mul": 1, "Neg": 1}


def test_constant_and_attribute_and_shape_conditions():
    model = ir.from_proto(
        make_model(
            [
                h.make_node("Mul", ["x", "two"], ["a"], name="times_two"),
                h.make_node("Mul", ["a", "three"], ["b"], name="times_three"),
                h.make_node("Softmax", ["b"], ["y"], name="sm", axis=-1),
                h.make_node("Softmax", ["b"], ["z"], name="sm_axis1", axis=1),
            ],
            [vi("x", T.FLOAT, [1, 2, 3, 4])],
            [vi("y", T.FLOAT, [1, 2, 3, 4]), vi("z", T.FLOAT, [1, 2, 3, 4])],
            {"two": np.array(2.0, np.float32), "three": np.array(3.0, np.float32)},
            opset=13,
        )
    )
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4)).astype(np.float32)
    before = ort_run(model, {"x": x})
    stats = apply_rules(model, [ScaleByConst(), Softmax4D()])
    assert stats.applied == {"double": 1, "softmax4d": 1}
    reasons = " | ".join(r for rs in stats.miss_reasons.values() for r in rs)
    assert "constant 'c' (three) fails its condition" in reasons
    assert "attribute axis=1, wanted -1" in reasons
    assert "two" not in model.graph.initializers  # the constant nothing uses any more is gone
    after = ort_run(model, {"x": x})
    for k in before:
        np.testing.assert_allclose(after[k], before[k], rtol=1e-5, atol=1e-6)


def test_rules_apply_inside_if_bodies_and_functions():
    then_g = h.make_graph(
        [h.make_node("Sigmoid", ["x"], ["ts"], name="/then/Sigmoid"), h.make_node("Mul", ["x", "ts"], ["t_out"], name="/then/Mul")],
        "then", [], [vi("t_out", T.FLOAT, [2, 3])],
    )
    else_g = h.make_graph([h.make_node("Identity", ["x"], ["e_out"], name="/else/Id")], "else", [], [vi("e_out", T.FLOAT, [2, 3])])
    fn = h.make_function(
        "local", "Swish", ["a"], ["b"],
        [h.make_node("Sigmoid", ["a"], ["s"], name="fs"), h.make_node("Mul", ["a", "s"], ["b"], name="fm")],
        opset_imports=[h.make_opsetid("", 17)],
    )
    proto = make_model(
        [
            h.make_node("If", ["c"], ["i"], name="/if", then_branch=then_g, else_branch=else_g),
            h.make_node("Swish", ["i"], ["y"], name="/call", domain="local"),
        ],
        [vi("x", T.FLOAT, [2, 3]), vi("c", T.BOOL, [])],
        [vi("y", T.FLOAT, [2, 3])],
        functions=[fn],
        extra_opsets={"local": 1},
    )
    model = ir.from_proto(proto)
    feeds = {"x": np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3), "c": np.array(True)}
    stats = apply_rules(model, [SwishRule()])
    assert stats.applied["swish"] == 2
    assert op_counts(model)["HardSigmoid"] == 2 and "Sigmoid" not in op_counts(model)
    names = {n.name for g in [model.functions[("local", "Swish", "")]] for n in g}
    assert names == {"fm/Mul", "fm/HardSigmoid"}
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    hard = ort_run(model, feeds)["y"]
    x = feeds["x"]
    expected = x * np.clip(x * 0.2 + 0.5, 0, 1)
    expected = expected * np.clip(expected * 0.2 + 0.5, 0, 1)
    np.testing.assert_allclose(hard, expected, rtol=1e-5, atol=1e-6)


def test_builder_constants_go_into_functions_as_constant_nodes():
    class AddHalf(Rule):
        name = "add-half"
        pattern = Op("Relu", Var("x"))

        def build(self, b, m):
            return [b.op("Add", m["x"], b.scalar(0.5, m["x"], "half", dtype=ir.DataType.FLOAT))]

    fn = h.make_function("local", "F", ["a"], ["b"], [h.make_node("Relu", ["a"], ["b"], name="r")],
                         opset_imports=[h.make_opsetid("", 17)])
    proto = make_model([h.make_node("F", ["x"], ["y"], domain="local", name="call")], [vi("x", T.FLOAT, [3])],
                       [vi("y", T.FLOAT, [3])], functions=[fn], extra_opsets={"local": 1})
    model = ir.from_proto(proto)
    assert apply_rules(model, [AddHalf()]).total == 1
    function = model.functions[("local", "F", "")]
    assert [n.op_type for n in function] == ["Constant", "Add"]
    out = ort_run(model, {"x": np.array([-1.0, 0.0, 2.0], np.float32)})["y"]
    np.testing.assert_allclose(out, [-0.5, 0.5, 2.5])


def test_a_rule_can_refuse_with_a_pass_error():
    class Refuser(Rule):
        name = "refuser"
        pattern = Op("Relu", Var("x"))

        def check(self, ctx: RuleContext, m: Match):
            raise self.refuse(ctx, f"Relu '{m.root.name}' is not allowed")

    model = ir.from_proto(make_model([h.make_node("Relu", ["x"], ["y"], name="r1")], [vi("x", T.FLOAT, [3])], [vi("y", T.FLOAT, [3])]))
    with pytest.raises(PassError, match="Relu 'r1' is not allowed"):
        apply_rules(model, [Refuser()], pass_name="my-pass")


def test_replacement_returning_an_existing_value_for_a_graph_output_keeps_the_output_name():
    class DropIdentity(Rule):
        name = "drop-identity"
        pattern = Op("Identity", Var("x"))

        def build(self, b, m):
            return [m["x"]]

    model = ir.from_proto(make_model(
        [h.make_node("Relu", ["x"], ["r"], name="relu"), h.make_node("Identity", ["r"], ["y"], name="id")],
        [vi("x", T.FLOAT, [3])], [vi("y", T.FLOAT, [3])]))
    apply_rules(model, [DropIdentity()])
    # an existing value cannot take the graph output's name, so an Identity named after the old node stays
    assert model.graph.outputs[0].name == "y"
    assert [n.name for n in model.graph] == ["relu", "id/Identity"]
    np.testing.assert_allclose(ort_run(model, {"x": np.array([-1, 0, 2], np.float32)})["y"], [0, 0, 2])


def test_onnxscript_rules_run_under_our_engine_in_subgraphs():
    pytest.importorskip("onnxscript")
    from onnxscript.rewriter import pattern as osp

    from surgery.rules.onnxscript_rules import adapt

    def swish(op, x):
        return op.Mul(x, op.Sigmoid(x))

    def hard(op, x):
        return op.Mul(x, op.HardSigmoid(x))

    rule = osp.RewriteRule(swish, hard, name="os-swish")
    then_g = h.make_graph(
        [h.make_node("Sigmoid", ["x"], ["ts"], name="/then/Sigmoid"), h.make_node("Mul", ["x", "ts"], ["t_out"], name="/then/Mul")],
        "then", [], [vi("t_out", T.FLOAT, [2])],
    )
    else_g = h.make_graph([h.make_node("Identity", ["x"], ["e_out"], name="/else/Id")], "else", [], [vi("e_out", T.FLOAT, [2])])
    model = ir.from_proto(make_model(
        [h.make_node("If", ["c"], ["y"], name="/if", then_branch=then_g, else_branch=else_g)],
        [vi("x", T.FLOAT, [2]), vi("c", T.BOOL, [])], [vi("y", T.FLOAT, [2])]))
    stats = apply_rules(model, adapt(rule))
    assert stats.applied["os-swish"] == 1
    body = model.graph.node(0).attributes["then_branch"].as_graph()
    assert sorted(n.name for n in body) == ["/then/Mul/HardSigmoid", "/then/Mul/Mul"]
    assert body.outputs[0].name == "t_out"
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    assert not model.graph.metadata_props  # no onnxscript bookkeeping leaks into the model
