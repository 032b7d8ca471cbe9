"""Branch coverage: nested If/Loop branches observed on the original and the new model, and a
search that solves a branch condition for the inputs that take it (issue 10, Build 5)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import GateError
from surgery.gates.coverage import branch_targets, instrument
from surgery.model_io import LightProto
from surgery.pass_base import SurgeryPass, SurgeryResult
from surgery.testing import make_model, vi
from surgery.verify.ort import OrtSession


def _nested_model() -> onnx.ModelProto:
    """If 'outer' (sum(x) > -1e30: always) holding If 'inner' (sum(x) > 1e30: never)."""
    inner_then = h.make_graph(
        [h.make_node("Mul", ["x", "two"], ["it"], name="inner_mul")],
        "it",
        [],
        [vi("it", T.FLOAT, [2, 8])],
        [onnx.numpy_helper.from_array(np.array(2, np.float32), "two")],
    )
    inner_else = h.make_graph(
        [h.make_node("Neg", ["x"], ["ie"], name="inner_neg")], "ie", [], [vi("ie", T.FLOAT, [2, 8])]
    )
    outer_then = h.make_graph(
        [
            h.make_node(
                "If", ["c2"], ["ot"], name="inner", then_branch=inner_then, else_branch=inner_else
            )
        ],
        "ot",
        [],
        [vi("ot", T.FLOAT, [2, 8])],
    )
    outer_else = h.make_graph(
        [h.make_node("Identity", ["x"], ["oe"], name="outer_id")],
        "oe",
        [],
        [vi("oe", T.FLOAT, [2, 8])],
    )
    return make_model(
        [
            h.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
            h.make_node("Greater", ["s", "low"], ["c1"], name="gt_low"),
            h.make_node("Greater", ["s", "high"], ["c2"], name="gt_high"),
            h.make_node(
                "If", ["c1"], ["y"], name="outer", then_branch=outer_then, else_branch=outer_else
            ),
        ],
        [vi("x", T.FLOAT, [2, 8])],
        [vi("y", T.FLOAT, [2, 8])],
        {"low": np.array(-1e30, np.float32), "high": np.array(1e30, np.float32)},
    )


def _nested_graph(model: ir.Model, *path: tuple[str, str]) -> ir.Graph:
    graph = model.graph
    for name, attr in path:
        graph = next(n for n in graph if n.name == name).attributes[attr].as_graph()
    return graph


class TripleInnerThen(SurgeryPass):
    """User pass: rewrites the NESTED then-branch (x*2 -> x*3), which no input can take."""

    name = "user-rewrite-inner-then"

    def call(self, model):
        branch = _nested_graph(model, ("outer", "then_branch"), ("inner", "then_branch"))
        branch.initializers["two"].const_value = ir.tensor(np.array(3, np.float32), name="two")
        return SurgeryResult(model, True)


def test_markers_see_nested_branches_and_loop_bodies():
    body = h.make_graph(
        [
            h.make_node("Add", ["acc", "x"], ["acc2"], name="add"),
            h.make_node("Identity", ["cin"], ["cout"], name="keep"),
        ],
        "body",
        [vi("i", T.INT64, []), vi("cin", T.BOOL, []), vi("acc", T.FLOAT, [2, 8])],
        [vi("cout", T.BOOL, []), vi("acc2", T.FLOAT, [2, 8])],
    )
    proto = _nested_model()
    proto.graph.node.append(h.make_node("Loop", ["n", "", "y"], ["z"], name="loop", body=body))
    proto.graph.input.append(vi("n", T.INT64, []))
    proto.graph.output.append(vi("z", T.FLOAT, [2, 8]))
    model = ir.from_proto(proto)
    targets = branch_targets(model)
    assert [t.label for t in targets] == [
        "then-branch of If 'outer'",
        "then-branch of If 'inner' in then-branch of If 'outer'",
        "else-branch of If 'inner' in then-branch of If 'outer'",
        "else-branch of If 'outer'",
        "body of Loop 'loop'",
    ]
    marked, markers = instrument(LightProto(model), targets)
    onnx.checker.check_model(marked.proto)
    session = OrtSession(marked)
    x = np.ones((2, 8), np.float32)
    for n, body_runs in ((0, False), (3, True)):
        out = session.run({"x": x, "n": np.array(n, np.int64)})
        taken = {markers[k].label: bool(v) for k, v in out.items() if k in markers}
        assert taken == {
            "then-branch of If 'outer'": True,
            "then-branch of If 'inner' in then-branch of If 'outer'": False,
            "else-branch of If 'inner' in then-branch of If 'outer'": True,
            "else-branch of If 'outer'": False,
            "body of Loop 'loop'": body_runs,
        }
        np.testing.assert_array_equal(out["z"], (n - 1) * x)  # the model computes as before
    session.close()
    assert len(model.graph.outputs) == 2  # the model itself is untouched


def test_changed_nested_branch_no_sample_takes_fails_naming_the_if_and_samples():
    with pytest.raises(GateError) as info:
        surgery.apply(_nested_model(), [TripleInnerThen()])
    text = str(info.value)
    assert (
        "then-branch of If 'inner' in then-branch of If 'outer' was changed but never executed by the parity samples "
        "('planned', 'wide x10', 'wide x1000')"
    ) in text, text
    assert "allow_unexercised = true" in text
    branches = info.value.report.steps[0].gates["parity"].branches
    inner = branches["then-branch of If 'inner' in then-branch of If 'outer'"]
    assert inner == {"original": [], "new": [], "changed": True}
    # the original's coverage, observed while its references were computed: nested branches too
    original = info.value.report.extra["branches_original"]
    assert original["then-branch of If 'outer'"] == ["planned", "wide x10", "wide x1000"]
    assert original["else-branch of If 'inner' in then-branch of If 'outer'"] == [
        "planned",
        "wide x10",
        "wide x1000",
    ]
    assert original["then-branch of If 'inner' in then-branch of If 'outer'"] == []


def test_changed_nested_branch_a_sample_takes_passes_and_reports_coverage(tmp_path):
    class TouchInnerElse(SurgeryPass):
        name = "user-touch-inner-else"

        def call(self, model):
            next(
                iter(_nested_graph(model, ("outer", "then_branch"), ("inner", "else_branch")))
            ).name = "inner_neg_renamed"
            return SurgeryResult(model, True)

    _, report = surgery.apply(_nested_model(), [TouchInnerElse()])
    parity = report.steps[0].gates["parity"]
    assert (
        parity.numbers["branches_covered"] == "2/2"
    )  # the inner else-branch and the outer then-branch around it
    entry = parity.branches["else-branch of If 'inner' in then-branch of If 'outer'"]
    assert (
        entry["changed"] and entry["new"] == parity.samples and entry["original"] == parity.samples
    )
    assert "changed branches run 2/2" in report.table()
    report.write_json(tmp_path / "r.json")
    import json

    doc = json.loads((tmp_path / "r.json").read_text())
    gates = doc["steps"][0]["gates"]
    # per gate: status, numbers, samples used, branches covered, time
    for name in ("checker", "signature", "ort", "parity"):
        assert {"status", "numbers", "samples", "branches", "seconds"} <= set(gates[name]), gates[
            name
        ]
        assert gates[name]["status"] == "passed" and gates[name]["seconds"] >= 0
    p = gates["parity"]
    assert (
        p["samples"] == ["planned", "wide x10", "wide x1000"]
        and p["numbers"]["branches_covered"] == "2/2"
    )
    assert set(p["numbers"]["max_abs_per_sample"]) == set(p["samples"]) and p["seconds"] > 0
    assert (
        p["branches"]["else-branch of If 'inner' in then-branch of If 'outer'"]["new"]
        == p["samples"]
    )
    assert doc["branches_original"]["then-branch of If 'inner' in then-branch of If 'outer'"] == []


# -- the search solves the condition ------------------------------------------------------------------
def _exp_if_model() -> onnx.ModelProto:
    """cond = ReduceSum(x) > 1000 with x in [-1, 1); the then-branch is Exp(x): inf for x >= 89, so
    filling x at the range ends (1000, 1e6) gives the original NaN/Inf and only a solved x works."""
    then = h.make_graph(
        [h.make_node("Exp", ["x"], ["t"], name="then_exp")], "then", [], [vi("t", T.FLOAT, [2, 8])]
    )
    other = h.make_graph(
        [h.make_node("Identity", ["x"], ["e"], name="else_id")],
        "else",
        [],
        [vi("e", T.FLOAT, [2, 8])],
    )
    return make_model(
        [
            h.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
            h.make_node("Greater", ["s", "limit"], ["cond"], name="gt"),
            h.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other),
        ],
        [vi("x", T.FLOAT, [2, 8])],
        [vi("y", T.FLOAT, [2, 8])],
        {"limit": np.array(1000, np.float32)},
    )


class ExpInThen(SurgeryPass):
    """User pass: rewrites the then-branch's Exp(x) as Exp(x) * k."""

    name = "user-rewrite-exp"
    factor = 3.0

    def call(self, model):
        branch = _nested_graph(model, ("branch", "then_branch"))
        exp = next(iter(branch))
        out = branch.outputs[0]
        k = ir.Value(
            name="k",
            const_value=ir.tensor(np.array(self.factor, np.float32), name="k"),
            shape=ir.Shape([]),
            type=ir.TensorType(ir.DataType.FLOAT),
        )
        branch.register_initializer(k)
        mul = ir.Node("", "Mul", [exp.outputs[0], k], name="then_exp/scale")
        branch.append(mul)
        exp.outputs[0].name = "t_exp"
        mul.outputs[0].name, mul.outputs[0].type, mul.outputs[0].shape = "t", out.type, out.shape
        branch.outputs[0] = mul.outputs[0]
        return SurgeryResult(model, True)


def test_search_solves_the_condition_and_catches_a_wrong_then_branch():
    with pytest.raises(GateError) as info:
        surgery.apply(_exp_if_model(), [ExpInThen()], verify={"allow_unexercised": True})
    text = str(info.value)
    assert (
        info.value.gate == "parity"
        and "output y on sample 'solved for then-branch of If 'branch''" in text
    ), text
    branches = info.value.report.steps[0].gates["parity"].branches
    assert branches["then-branch of If 'branch'"]["new"] == [
        "solved for then-branch of If 'branch'"
    ]


def test_search_solves_the_condition_and_passes_a_correct_then_branch():
    right = ExpInThen()
    right.factor = 1.0
    _, report = surgery.apply(_exp_if_model(), [right])
    parity = report.steps[0].gates["parity"]
    assert (
        parity.status.value == "passed"
        and "solved for then-branch of If 'branch'" in parity.samples
    )
    assert parity.branches["then-branch of If 'branch'"]["new"] == [
        "solved for then-branch of If 'branch'"
    ]
    assert any("no planned sample took it" in n for n in report.steps[0].notes)


def _int_if_model() -> onnx.ModelProto:
    """An int input compared with a constant: the then-branch runs only for n == 7."""
    then = h.make_graph(
        [h.make_node("Mul", ["x", "two"], ["t"], name="then_mul")],
        "then",
        [],
        [vi("t", T.FLOAT, [2, 8])],
        [onnx.numpy_helper.from_array(np.array(2, np.float32), "two")],
    )
    other = h.make_graph(
        [h.make_node("Identity", ["x"], ["e"], name="else_id")],
        "else",
        [],
        [vi("e", T.FLOAT, [2, 8])],
    )
    return make_model(
        [
            h.make_node("Equal", ["n", "seven"], ["cond"], name="eq"),
            h.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other),
        ],
        [vi("x", T.FLOAT, [2, 8]), vi("n", T.INT64, [])],
        [vi("y", T.FLOAT, [2, 8])],
        {"seven": np.array(7, np.int64)},
    )


def test_search_sets_an_int_input_to_the_compared_value():
    class ThreeInThen(SurgeryPass):
        name = "user-rewrite-then"

        def call(self, model):
            branch = _nested_graph(model, ("branch", "then_branch"))
            branch.initializers["two"].const_value = ir.tensor(np.array(3, np.float32), name="two")
            return SurgeryResult(model, True)

    with pytest.raises(GateError) as info:
        surgery.apply(_int_if_model(), [ThreeInThen()], verify={"allow_unexercised": True})
    assert "output y on sample 'solved for then-branch of If 'branch''" in str(info.value), str(
        info.value
    )
