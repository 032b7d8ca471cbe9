"""Issue 10's escapes in the two forms test_escapes.py does not write for a row: a ``gs_pass``
function and a ``rewrite`` rule module run from the CLI (each row there is one form; here the
others, so every row + the random original is written all three documented ways)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.cli import main
from surgery.errors import GateError
from surgery.interop.graphsurgeon import gs_pass
from surgery.pass_base import SurgeryPass, SurgeryResult
from surgery.testing import make_model, vi


# -- models (as in test_escapes.py) ---------------------------------------------------------------------
def _relu_model() -> onnx.ModelProto:
    return make_model(
        [h.make_node("Relu", ["m"], ["y"], name="relu")],
        [vi("m", T.FLOAT, ["batch", 8])],
        [vi("y", T.FLOAT, ["batch", 8])],
    )


def _exp_if_model() -> onnx.ModelProto:
    """cond = ReduceSum(x) > 1000 (never on the generated x in [-1, 1)); then-branch Exp(x)."""
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


def _log_model() -> onnx.ModelProto:
    return make_model(
        [
            h.make_node("Sub", ["x", "five"], ["d"], name="sub"),
            h.make_node("Log", ["d"], ["y"], name="log"),
        ],
        [vi("x", T.FLOAT, [2, 8])],
        [vi("y", T.FLOAT, [2, 8])],
        {"five": np.array(5, np.float32)},
    )


def _reshape_model() -> onnx.ModelProto:
    return make_model(
        [h.make_node("Reshape", ["m", "shape"], ["y"], name="reshape")],
        [vi("m", T.FLOAT, ["batch", 4])],
        [vi("y", T.FLOAT, ["batch", 4])],
        {"shape": np.array([-1, 4], np.int64)},
    )


def _add_sub_model() -> onnx.ModelProto:
    return make_model(
        [
            h.make_node("Add", ["a", "b"], ["s"], name="add"),
            h.make_node("Sub", ["a", "b"], ["d"], name="sub"),
        ],
        [vi("a", T.FLOAT, [2, 3]), vi("b", T.FLOAT, [2, 3])],
        [vi("s", T.FLOAT, [2, 3]), vi("d", T.FLOAT, [2, 3])],
    )


def _int_model(offset: int) -> onnx.ModelProto:
    return make_model(
        [h.make_node("Add", ["ids", "offset"], ["out"], name="add")],
        [vi("ids", T.INT64, ["batch", 4])],
        [vi("out", T.INT64, ["batch", 4])],
        {"offset": np.array(offset, np.int64)},
    )


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return make_model(
        [
            h.make_node("MatMul", ["x", "W1"], ["h1"], name="fc1"),
            h.make_node("Relu", ["h1"], ["a1"], name="relu1"),
            h.make_node("MatMul", ["a1", "W2"], ["y"], name="fc2"),
        ],
        [vi("x", T.FLOAT, ["batch", 16])],
        [vi("y", T.FLOAT, ["batch", 4])],
        {
            "W1": rng.standard_normal((16, 32)).astype(np.float32),
            "W2": rng.standard_normal((32, 4)).astype(np.float32),
        },
    )


def _dropout_idiom() -> onnx.ModelProto:
    return make_model(
        [
            h.make_node("RandomUniformLike", ["x"], ["r"], name="rand", dtype=T.FLOAT),
            h.make_node("Greater", ["r", "p"], ["keep"], name="gt"),
            h.make_node("Cast", ["keep"], ["mask"], name="cast", to=T.FLOAT),
            h.make_node("Mul", ["x", "mask"], ["xm"], name="mul"),
            h.make_node("Div", ["xm", "q"], ["y"], name="div"),
            h.make_node("Relu", ["x"], ["z"], name="relu"),
        ],
        [vi("x", T.FLOAT, [2, 8])],
        [vi("y", T.FLOAT, [2, 8]), vi("z", T.FLOAT, [2, 8])],
        {"p": np.array(0.5, np.float32), "q": np.array(0.5, np.float32)},
    )


# -- the CLI rule-module form ---------------------------------------------------------------------------
def _cli_rule(
    tmp_path, capsys, proto: onnx.ModelProto, rules: str, verify: str = ""
) -> tuple[int, str, dict]:
    onnx.save(proto, tmp_path / "model.onnx")
    (tmp_path / "my_rules.py").write_text(textwrap.dedent(rules))
    (tmp_path / "passes.toml").write_text(
        (f"[verify]\n{verify}\n" if verify else "")
        + '[[pass]]\nname = "rewrite"\nrules = "my_rules:RULES"\npath = "."\n'
    )
    code = main(
        [
            "apply",
            str(tmp_path / "passes.toml"),
            str(tmp_path / "model.onnx"),
            "-o",
            str(tmp_path / "out.onnx"),
            "-q",
            "--allow-code",
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    if code == 1:
        assert not (tmp_path / "out.onnx").exists()
    return code, err, json.loads((tmp_path / "r.json").read_text())


RULE_HEAD = "from surgery.rules import Op, Rule, Var\nimport numpy as np\nimport onnx_ir as ir\n"


# -- 2. an If branch no generated input takes ------------------------------------------------------------
@gs_pass(name="gs-triple-exp")
def gs_triple_exp(graph: gs.Graph) -> bool:
    """User gs pass: the then-branch's Exp(x) -> Exp(x) * 3."""
    branch = next(n for n in graph.nodes if n.op == "If").attrs["then_branch"]
    out = branch.outputs[0]
    raw = gs.Variable("t_raw", dtype=np.float32, shape=out.shape)
    branch.nodes[0].outputs = [raw]
    branch.nodes.append(
        gs.Node(
            "Mul",
            "then_exp/triple",
            inputs=[raw, gs.Constant("three", np.array(3, np.float32))],
            outputs=[out],
        )
    )
    return True


def test_gs_pass_changing_an_untaken_then_branch_is_caught_by_a_solved_sample():
    with pytest.raises(GateError) as info:
        surgery.apply(_exp_if_model(), [gs_triple_exp()], verify={"allow_unexercised": True})
    assert "output y on sample 'solved for then-branch of If 'branch''" in str(info.value), str(
        info.value
    )


def test_rule_changing_an_untaken_then_branch_from_the_cli_is_caught(tmp_path, capsys):
    rules = (
        RULE_HEAD
        + """
class TripleExp(Rule):
    name = "triple-exp"
    pattern = Op("Exp", Var("x"))

    def build(self, b, m):
        return [b.op("Mul", b.op("Exp", m["x"]), b.scalar(3.0, m["x"]))]

RULES = [TripleExp]
"""
    )
    code, err, doc = _cli_rule(tmp_path, capsys, _exp_if_model(), rules)
    assert code == 1 and "output y on sample 'solved for then-branch of If 'branch''" in err, err
    assert doc["steps"][0]["gates"]["parity"]["branches"]["then-branch of If 'branch'"]["changed"]


# -- 3. NaN on the generated inputs --------------------------------------------------------------------
@gs_pass(name="gs-triple-log")
def gs_triple_log(graph: gs.Graph) -> bool:
    y = graph.outputs[0]
    raw = gs.Variable("y_raw", dtype=np.float32, shape=y.shape)
    log = next(n for n in graph.nodes if n.op == "Log")
    log.outputs = [raw]
    graph.nodes.append(
        gs.Node(
            "Mul",
            "log/triple",
            inputs=[raw, gs.Constant("three", np.array(3, np.float32))],
            outputs=[y],
        )
    )
    return True


def _not_planned(text: str) -> bool:
    return (
        "output y on sample '" in text and "planned" not in text.split("output y on sample")[1][:12]
    )


def test_gs_pass_nan_on_planned_inputs_does_not_hide_a_change():
    with pytest.raises(GateError) as info:
        surgery.apply(_log_model(), [gs_triple_log()])
    assert _not_planned(str(info.value)), str(info.value)


def test_rule_nan_on_planned_inputs_from_the_cli_is_caught(tmp_path, capsys):
    rules = (
        RULE_HEAD
        + """
class TripleLog(Rule):
    name = "triple-log"
    pattern = Op("Log", Var("x"))

    def build(self, b, m):
        return [b.op("Mul", b.op("Log", m["x"]), b.scalar(3.0, m["x"]))]

RULES = [TripleLog]
"""
    )
    code, err, doc = _cli_rule(tmp_path, capsys, _log_model(), rules)
    assert code == 1 and _not_planned(err), err
    assert any("dropped" in n for n in doc["notes"])


# -- 4. output dtype -------------------------------------------------------------------------------------
class RetypeOutput(SurgeryPass):
    """User SurgeryPass: a Cast to float16 appended to the output, the output retyped."""

    name = "user-retype-output"

    def call(self, model):
        import onnx_ir as ir

        g = model.graph
        y = g.outputs[0]
        cast = ir.Node(
            "", "Cast", [y], [ir.AttrInt64("to", int(ir.DataType.FLOAT16))], name="cast_out"
        )
        g.append(cast)
        y.name = "y_before_cast"
        out = cast.outputs[0]
        out.name, out.type, out.shape = "y", ir.TensorType(ir.DataType.FLOAT16), y.shape
        g.outputs[0] = out
        return SurgeryResult(model, True)


def test_surgery_pass_retyping_an_output_is_caught():
    with pytest.raises(GateError) as info:
        surgery.apply(_relu_model(), [RetypeOutput()])
    assert info.value.gate == "signature" and "output 'y': element type float -> float16" in str(
        info.value
    ), str(info.value)


def test_rule_retyping_an_output_from_the_cli_is_caught(tmp_path, capsys):
    rules = (
        RULE_HEAD
        + """
class HalfRelu(Rule):
    name = "half-relu"
    pattern = Op("Relu", Var("x"))

    def build(self, b, m):
        return [b.op("Cast", b.op("Relu", m["x"]), to=int(ir.DataType.FLOAT16))]

RULES = [HalfRelu]
"""
    )
    code, err, doc = _cli_rule(tmp_path, capsys, _relu_model(), rules)
    # the rule leaves the output annotated float while the Cast makes float16: the checker (the
    # first gate) refuses it, naming the Cast; with the checker off, ONNX Runtime's load does
    assert code == 1 and "(op_type:Cast, node name: relu/Cast)" in err, err
    assert doc["steps"][0]["gates"]["checker"]["status"] == "failed"
    code, err, doc = _cli_rule(tmp_path, capsys, _relu_model(), rules, 'checker = "off"')
    assert (
        code == 1 and doc["steps"][0]["gates"]["ort"]["status"] == "failed" and "relu/Cast" in err
    ), err


# -- 5. a size baked in ----------------------------------------------------------------------------------
@gs_pass(name="gs-bake-batch")
def gs_bake_batch(graph: gs.Graph) -> bool:
    reshape = next(n for n in graph.nodes if n.op == "Reshape")
    reshape.inputs[1] = gs.Constant("baked", np.array([2, 4], np.int64))
    return True


def test_gs_pass_baking_the_batch_is_caught():
    with pytest.raises(GateError) as info:
        surgery.apply(_reshape_model(), [gs_bake_batch()])
    assert "output 'y': shape [?, 4] -> [2, 4]" in str(info.value), str(info.value)
    with pytest.raises(GateError) as info:
        surgery.apply(_reshape_model(), [gs_bake_batch()], verify={"signature": "off"})
    assert "sample 'second size'" in str(info.value), str(info.value)


def test_rule_baking_the_batch_from_the_cli_is_caught(tmp_path, capsys):
    rules = (
        RULE_HEAD
        + """
class Bake(Rule):
    name = "bake-batch"
    pattern = Op("Reshape", Var("x"), Var("shape"))

    def build(self, b, m):
        return [b.op("Reshape", m["x"], b.ints([2, 4]))]

RULES = [Bake]
"""
    )
    code, err, _ = _cli_rule(tmp_path, capsys, _reshape_model(), rules, 'signature = "off"')
    assert code == 1 and "sample 'second size'" in err, err


# -- 6. outputs swapped -----------------------------------------------------------------------------------
@gs_pass(name="gs-swap-outputs")
def gs_swap_outputs(graph: gs.Graph) -> bool:
    graph.outputs = [graph.outputs[1], graph.outputs[0]]
    return True


@gs_pass(name="gs-swap-inputs")
def gs_swap_inputs(graph: gs.Graph) -> bool:
    graph.inputs = [graph.inputs[1], graph.inputs[0]]
    return True


@pytest.mark.parametrize("swap, kind", [(gs_swap_outputs, "outputs"), (gs_swap_inputs, "inputs")])
def test_gs_pass_swapping_inputs_or_outputs_is_caught(swap, kind):
    with pytest.raises(GateError) as info:
        surgery.apply(_add_sub_model(), [swap()])
    assert f"graph {kind} reordered" in str(info.value) and info.value.gate == "signature", str(
        info.value
    )


def test_rule_swapping_what_the_outputs_compute_from_the_cli_is_caught(tmp_path, capsys):
    # a rule cannot reorder the graph's outputs; it can make each compute the other's value
    rules = (
        RULE_HEAD
        + """
class AddToSub(Rule):
    name = "add-to-sub"
    pattern = Op("Add", Var("a"), Var("b"))

    def build(self, b, m):
        return [b.op("Sub", m["a"], m["b"])]


class SubToAdd(Rule):
    name = "sub-to-add"
    pattern = Op("Sub", Var("a"), Var("b"))

    def build(self, b, m):
        return [b.op("Add", m["a"], m["b"])]

RULES = [AddToSub, SubToAdd]
"""
    )
    code, err, _ = _cli_rule(tmp_path, capsys, _add_sub_model(), rules)
    assert (
        code == 1 and "output s on sample 'planned'" in err and "1 more output(s) differ" in err
    ), err


# -- 7. integer outputs ------------------------------------------------------------------------------------
@gs_pass(name="gs-shift-offset")
def gs_shift_offset(graph: gs.Graph) -> bool:
    add = next(n for n in graph.nodes if n.op == "Add")
    offset = add.inputs[1]
    add.inputs[1] = gs.Constant("offset_shifted", np.asarray(offset.values + np.int64(1), np.int64))
    return True


def test_gs_pass_int64_near_2_60_off_by_one_is_caught_with_zero_tolerance():
    with pytest.raises(GateError) as info:
        surgery.apply(_int_model(2**60), [gs_shift_offset()], verify={"rtol": 0.0, "atol": 0.0})
    assert "output out on sample 'planned'" in str(info.value) and "max abs difference 1" in str(
        info.value
    ), str(info.value)


def test_rule_int64_off_by_50_from_the_cli_is_caught_under_a_relative_tolerance(tmp_path, capsys):
    rules = (
        RULE_HEAD
        + """
class Plus50(Rule):
    name = "plus-50"
    pattern = Op("Add", Var("a"), Var("b"))

    def build(self, b, m):
        return [b.op("Add", b.op("Add", m["a"], m["b"]), b.scalar(50, m["a"]))]

RULES = [Plus50]
"""
    )
    code, err, _ = _cli_rule(tmp_path, capsys, _int_model(2**40), rules, "rtol = 1e-4")
    assert (
        code == 1 and "output out on sample 'planned'" in err and "max abs difference 50" in err
    ), err


# -- 8. an edit reported as modified=False ----------------------------------------------------------------
@gs_pass(name="gs-silent-edit")
def gs_silent_edit(graph: gs.Graph) -> bool:
    """User gs pass: perturbs W2 and returns False ("nothing changed")."""
    fc2 = next(n for n in graph.nodes if n.name == "fc2")
    fc2.inputs[1] = gs.Constant("W2_edited", np.asarray(fc2.inputs[1].values + np.float32(0.5)))
    return False


def test_gs_pass_silent_edit_is_not_applied(tmp_path):
    # a gs function works on a copy; returning False means "nothing to do" and the copy is dropped,
    # so the edit can never reach the saved model (the escape is closed by construction)
    proto = _mlp()
    _, report = surgery.apply(proto, [gs_silent_edit()], output=tmp_path / "out.onnx")
    saved = {
        t.name: onnx.numpy_helper.to_array(t)
        for t in onnx.load(tmp_path / "out.onnx").graph.initializer
    }
    assert "W2_edited" not in saved
    np.testing.assert_array_equal(
        saved["W2"], onnx.numpy_helper.to_array(proto.graph.initializer[1])
    )
    assert not report.steps[0].modified


def test_rule_editing_the_model_in_check_from_the_cli_is_gated(tmp_path, capsys):
    # a rule that edits a weight from check() and then skips the match: the rewrite reports no change
    rules = (
        RULE_HEAD
        + """
class Sneaky(Rule):
    name = "sneaky"
    pattern = Op("Relu", Var("x"))

    def check(self, ctx, m):
        w = ctx.model.graph.initializers["W2"]
        w.const_value = ir.tensor(w.const_value.numpy() + np.float32(0.5), name="W2")
        return "skipped"

    def build(self, b, m):
        return [b.op("Relu", m["x"])]

RULES = [Sneaky]
"""
    )
    code, err, doc = _cli_rule(tmp_path, capsys, _mlp(), rules)
    assert code == 1 and "rewrite" in err and "output y" in err, err
    assert any("silent edit: pass 'rewrite'" in n for n in doc["notes"]), doc["notes"]


# -- 9. a random original ----------------------------------------------------------------------------------
@gs_pass(name="gs-break-relu")
def gs_break_relu(graph: gs.Graph) -> bool:
    next(n for n in graph.nodes if n.op == "Relu").op = "Sigmoid"
    return True


@gs_pass(name="gs-rename-relu")
def gs_rename_relu(graph: gs.Graph) -> bool:
    next(n for n in graph.nodes if n.op == "Relu").name = "relu_renamed"
    return True


def test_gs_pass_on_a_random_original_is_not_blamed_and_still_gated():
    _, report = surgery.apply(_dropout_idiom(), [gs_rename_relu()])
    parity = report.steps[0].gates["parity"]
    assert parity.status.value == "passed" and {d.name: d.comparable for d in parity.diffs} == {
        "y": False,
        "z": True,
    }
    with pytest.raises(GateError) as info:
        surgery.apply(_dropout_idiom(), [gs_break_relu()])
    assert "output z" in str(info.value) and "RandomUniformLike" not in str(info.value)


def test_rule_on_a_random_original_from_the_cli(tmp_path, capsys):
    rules = (
        RULE_HEAD
        + """
class ReluToSigmoid(Rule):
    name = "relu-to-sigmoid"
    pattern = Op("Relu", Var("x"))

    def build(self, b, m):
        return [b.op("Sigmoid", m["x"])]

RULES = [ReluToSigmoid]
"""
    )
    code, err, doc = _cli_rule(tmp_path, capsys, _dropout_idiom(), rules)
    assert code == 1 and "output z" in err and "RandomUniformLike" not in err, err
    assert doc["random_outputs"] == {"y": "rand"}
