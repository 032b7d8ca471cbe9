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
    pattern = Op(
        "Mul", Var("x"), Const("c", where=lambda a: a.size == 1 and float(a.reshape(-1)[0]) == 2.0)
    )

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
        [
            h.make_node("Sigmoid", ["x"], ["ts"], name="/then/Sigmoid"),
            h.make_node("Mul", ["x", "ts"], ["t_out"], name="/then/Mul"),
        ],
        "then",
        [],
        [vi("t_out", T.FLOAT, [2, 3])],
    )
    else_g = h.make_graph(
        [h.make_node("Identity", ["x"], ["e_out"], name="/else/Id")],
        "else",
        [],
        [vi("e_out", T.FLOAT, [2, 3])],
    )
    fn = h.make_function(
        "local",
        "Swish",
        ["a"],
        ["b"],
        [
            h.make_node("Sigmoid", ["a"], ["s"], name="fs"),
            h.make_node("Mul", ["a", "s"], ["b"], name="fm"),
        ],
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

    fn = h.make_function(
        "local",
        "F",
        ["a"],
        ["b"],
        [h.make_node("Relu", ["a"], ["b"], name="r")],
        opset_imports=[h.make_opsetid("", 17)],
    )
    proto = make_model(
        [h.make_node("F", ["x"], ["y"], domain="local", name="call")],
        [vi("x", T.FLOAT, [3])],
        [vi("y", T.FLOAT, [3])],
        functions=[fn],
        extra_opsets={"local": 1},
    )
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

    model = ir.from_proto(
        make_model(
            [h.make_node("Relu", ["x"], ["y"], name="r1")],
            [vi("x", T.FLOAT, [3])],
            [vi("y", T.FLOAT, [3])],
        )
    )
    with pytest.raises(PassError, match="Relu 'r1' is not allowed"):
        apply_rules(model, [Refuser()], pass_name="my-pass")


def test_replacement_returning_an_existing_value_for_a_graph_output_keeps_the_output_name():
    class DropIdentity(Rule):
        name = "drop-identity"
        pattern = Op("Identity", Var("x"))

        def build(self, b, m):
            return [m["x"]]

    model = ir.from_proto(
        make_model(
            [
                h.make_node("Relu", ["x"], ["r"], name="relu"),
                h.make_node("Identity", ["r"], ["y"], name="id"),
            ],
            [vi("x", T.FLOAT, [3])],
            [vi("y", T.FLOAT, [3])],
        )
    )
    apply_rules(model, [DropIdentity()])
    # an existing value cannot take the graph output's name, so an Identity named after the old node stays
    assert model.graph.outputs[0].name == "y"
    assert [n.name for n in model.graph] == ["relu", "id/Identity"]
    np.testing.assert_allclose(
        ort_run(model, {"x": np.array([-1, 0, 2], np.float32)})["y"], [0, 0, 2]
    )


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
        [
            h.make_node("Sigmoid", ["x"], ["ts"], name="/then/Sigmoid"),
            h.make_node("Mul", ["x", "ts"], ["t_out"], name="/then/Mul"),
        ],
        "then",
        [],
        [vi("t_out", T.FLOAT, [2])],
    )
    else_g = h.make_graph(
        [h.make_node("Identity", ["x"], ["e_out"], name="/else/Id")],
        "else",
        [],
        [vi("e_out", T.FLOAT, [2])],
    )
    model = ir.from_proto(
        make_model(
            [h.make_node("If", ["c"], ["y"], name="/if", then_branch=then_g, else_branch=else_g)],
            [vi("x", T.FLOAT, [2]), vi("c", T.BOOL, [])],
            [vi("y", T.FLOAT, [2])],
        )
    )
    stats = apply_rules(model, adapt(rule))
    assert stats.applied["os-swish"] == 1
    body = model.graph.node(0).attributes["then_branch"].as_graph()
    assert sorted(n.name for n in body) == ["/then/Mul/HardSigmoid", "/then/Mul/Mul"]
    assert body.outputs[0].name == "t_out"
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    assert not model.graph.metadata_props  # no onnxscript bookkeeping leaks into the model


# -- transactional: a refusal leaves the model exactly as it was ----------------------------------


def _two_maxpools() -> onnx.ModelProto:
    """Two MaxPools; only the second's Indices output is read (by a Cast to an output)."""
    return make_model(
        [
            h.make_node("MaxPool", ["x"], ["p1"], name="/pool1/MaxPool", kernel_shape=[2, 2]),
            h.make_node(
                "MaxPool", ["p1"], ["p2", "idx"], name="/pool2/MaxPool", kernel_shape=[2, 2]
            ),
            h.make_node("Cast", ["idx"], ["idx_f"], name="/pool2/Cast", to=T.FLOAT),
        ],
        [vi("x", T.FLOAT, [1, 1, 8, 8])],
        [vi("p2", T.FLOAT, [1, 1, 6, 6]), vi("idx_f", T.FLOAT, [1, 1, 6, 6])],
    )


def _structure(model: ir.Model) -> tuple:
    """Everything a refusal must not change: nodes (op, name, inputs, outputs), every value's uses."""
    nodes = tuple(
        (
            n.op_type,
            n.name,
            tuple(v.name if v is not None else None for v in n.inputs),
            tuple(v.name for v in n.outputs),
        )
        for n in model.graph
    )
    values = [v for n in model.graph for v in (*n.inputs, *n.outputs) if v is not None] + list(
        model.graph.inputs
    )
    uses = tuple(sorted((v.name or "", len(v.uses())) for v in {id(v): v for v in values}.values()))
    return nodes, uses, tuple(model.graph.initializers)


def test_a_refusal_after_a_match_leaves_the_model_as_it_was_through_the_api():
    """issue 12: maxpool-to-avgpool used to splice the first MaxPool, then refuse the second, and
    hand a Python user's ir.Model back with one AveragePool and one MaxPool."""
    import surgery
    from surgery.passes.maxpool_to_avgpool import MaxPoolToAvgPool

    model = ir.from_proto(_two_maxpools())
    before = _structure(model)
    with pytest.raises(PassError, match="/pool2/MaxPool"):
        surgery.apply(model, [MaxPoolToAvgPool()])
    assert _structure(model) == before
    assert op_counts(model) == {"MaxPool": 2, "Cast": 1}
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


class DoubleRelu(Rule):
    """Relu(Relu(x)) → Relu(x): overlapping matches along a chain of Relus."""

    name = "double-relu"
    pattern = Op("Relu", Op("Relu", Var("x")))

    def build(self, b: Builder, m: Match):
        return [b.op("Relu", m["x"])]


def _relu_chain(n: int) -> onnx.ModelProto:
    nodes = [
        h.make_node(
            "Relu",
            ["x" if i == 0 else f"r{i - 1}"],
            [f"r{i}" if i < n - 1 else "y"],
            name=f"/relu{i}",
        )
        for i in range(n)
    ]
    return make_model(nodes, [vi("x", T.FLOAT, [2, 3])], [vi("y", T.FLOAT, [2, 3])])


def test_overlapping_matches_are_retried_on_the_rewritten_graph():
    """Relu0 -> Relu1 -> Relu2: the matches rooted at relu1 and relu2 share relu1. The first is
    spliced; the second is retried on the rewritten graph (Relu2(Relu(x))) and spliced too."""
    model = ir.from_proto(_relu_chain(3))
    stats = apply_rules(model, [DoubleRelu()])
    assert stats.applied["double-relu"] == 2
    assert op_counts(model) == {"Relu": 1}
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)}
    np.testing.assert_array_equal(
        ort_run(ir.to_proto(model), feeds)["y"], np.maximum(feeds["x"], 0)
    )


class RefuseInTheRetry(DoubleRelu):
    """Refuses the retried match at relu2 (its inner Relu is then the one the first rewrite made)."""

    name = "refuse-late"

    def check(self, ctx, m):
        if m.root.name == "/relu2" and m.nodes[1].name != "/relu1":
            raise self.refuse(ctx, "relu2 cannot be rewritten")
        return None


def test_a_refusal_in_the_retry_round_is_undone_too():
    model = ir.from_proto(_relu_chain(3))
    before = _structure(model)
    with pytest.raises(PassError, match="relu2 cannot be rewritten"):
        apply_rules(model, [RefuseInTheRetry()], pass_name="refuse-late")
    assert _structure(model) == before and op_counts(model) == {"Relu": 3}
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


def test_old_names_of_the_engine_replacement_and_the_opset_step_still_import():
    """``Rewrite`` (now ``Replacement``) and ``opset_steps.Step`` (now ``OpsetStep``) were renamed
    so that each name means one thing; the old names stay importable as aliases."""
    import surgery.rules
    from surgery.rules import engine, opset_steps

    assert surgery.rules.Rewrite is engine.Rewrite is engine.Replacement
    assert surgery.rules.Replacement is engine.Replacement
    assert opset_steps.Step is opset_steps.OpsetStep
    assert "Rewrite" not in surgery.rules.__all__ and "Step" not in opset_steps.__all__
