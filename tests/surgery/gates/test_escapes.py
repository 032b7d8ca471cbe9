"""Issue 10's escapes: broken models a user's pass produced that the gates used to accept.

Each is written the way a user writes a pass (a ``SurgeryPass`` through ``surgery.apply``, a
``gs_pass`` function, a ``rewrite`` rule module from the CLI) and must now fail with a message that
names the output (or branch) and the sample.
"""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.cli import main
from surgery.errors import GateError
from surgery.interop.graphsurgeon import gs_pass
from surgery.pass_base import SurgeryPass, SurgeryResult
from surgery.testing import make_model, vi


def _relu_model() -> onnx.ModelProto:
    return make_model(
        [h.make_node("Relu", ["m"], ["y"], name="relu")],
        [vi("m", T.FLOAT, ["batch", 8])],
        [vi("y", T.FLOAT, ["batch", 8])],
    )


def _const(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(
        name=name,
        const_value=ir.tensor(array, name=name),
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
    )
    graph.register_initializer(value)
    return value


def _node_of(model: ir.Model, name: str) -> ir.Node:
    return next(n for n in model.graph if n.name == name)


# -- 1. differs only outside the generated range -------------------------------------------------------
class WhereAbove100(SurgeryPass):
    """User pass: Relu(m) -> Where(m > 100, 0, Relu(m)) (equal on the generated [-1, 1))."""

    name = "user-where-above-100"

    def call(self, model):
        relu = _node_of(model, "relu")
        m, y = relu.inputs[0], relu.outputs[0]
        g = model.graph
        hundred, zero = (
            _const(g, "hundred", np.array(100, np.float32)),
            _const(g, "zero", np.array(0, np.float32)),
        )
        greater = ir.Node("", "Greater", [m, hundred], name="relu/gt")
        new_relu = ir.Node("", "Relu", [m], name="relu/relu")
        where = ir.Node(
            "", "Where", [greater.outputs[0], zero, new_relu.outputs[0]], name="relu/where"
        )
        for n in (greater, new_relu, where):
            g.insert_before(relu, n)
        where.outputs[0].type, where.outputs[0].shape = y.type, y.shape
        y.replace_all_uses_with(where.outputs[0], replace_graph_outputs=True)
        where.outputs[0].name = "y"
        g.remove(relu, safe=True)
        return SurgeryResult(model, True)


def test_where_outside_the_generated_range_is_caught():
    with pytest.raises(GateError) as info:
        surgery.apply(_relu_model(), [WhereAbove100()])
    text = str(info.value)
    assert info.value.gate == "parity" and "output y on sample 'wide x1000'" in text, text


RULES = textwrap.dedent(
    '''
    from surgery.rules import Op, Rule, Var

    class CapRelu(Rule):
        """Relu(x) -> Min(Relu(x), 100): equal on [-1, 1)."""
        name = "cap-relu"
        pattern = Op("Relu", Var("x"))

        def build(self, b, m):
            relu = b.op("Relu", m["x"])
            return [b.op("Min", relu, b.scalar(100.0, m["x"]))]

    RULES = [CapRelu]
    '''
)


def test_rule_capping_relu_from_the_cli_is_caught(tmp_path, capsys):
    onnx.save(_relu_model(), tmp_path / "model.onnx")
    (tmp_path / "my_rules.py").write_text(RULES)
    (tmp_path / "passes.toml").write_text(
        '[[pass]]\nname = "rewrite"\nrules = "my_rules:RULES"\npath = "."\n'
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
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "out.onnx").exists(), err
    assert "output y on sample 'wide x1000'" in err and "Traceback" not in err, err


@gs_pass(name="clamp-ids")
def clamp_ids(graph: gs.Graph) -> bool:
    """User gs pass: clamp the int input to [0, 10) before use (equal on ints drawn from [0, 10))."""
    ids = next(t for t in graph.inputs if t.name == "ids")
    add = next(n for n in graph.nodes if n.op == "Add")
    clipped = gs.Variable("ids_clipped", dtype=np.int64, shape=ids.shape)
    lo, hi = gs.Constant("lo", np.array(0, np.int64)), gs.Constant("hi", np.array(9, np.int64))
    graph.nodes.append(gs.Node("Clip", "clamp", inputs=[ids, lo, hi], outputs=[clipped]))
    add.inputs[0] = clipped
    return True


def _int_model(offset: int = 1) -> onnx.ModelProto:
    return make_model(
        [h.make_node("Add", ["ids", "offset"], ["out"], name="add")],
        [vi("ids", T.INT64, ["batch", 4])],
        [vi("out", T.INT64, ["batch", 4])],
        {"offset": np.array(offset, np.int64)},
    )


def test_gs_pass_clamping_an_int_input_is_caught():
    with pytest.raises(GateError) as info:
        surgery.apply(_int_model(), [clamp_ids()])
    text = str(info.value)
    assert "output out on sample 'wide x10'" in text and "integer values differ" in text, text


# -- 2. an If branch that no generated input takes ------------------------------------------------------
def _if_model(threshold: float) -> onnx.ModelProto:
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
            h.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
            h.make_node("Greater", ["s", "limit"], ["cond"], name="gt"),
            h.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other),
        ],
        [vi("x", T.FLOAT, [2, 8])],
        [vi("y", T.FLOAT, [2, 8])],
        {"limit": np.array(threshold, np.float32)},
    )


class ThreeInThen(SurgeryPass):
    """User pass: rewrites the then-branch (x*2 -> x*3)."""

    name = "user-rewrite-then"

    def call(self, model):
        branch = _node_of(model, "branch").attributes["then_branch"].as_graph()
        two = branch.initializers["two"]
        two.const_value = ir.tensor(np.array(3, np.float32), name="two")
        return SurgeryResult(model, True)


def test_changed_branch_no_sample_takes_is_searched_for_and_caught():
    with pytest.raises(GateError) as info:
        surgery.apply(_if_model(1000.0), [ThreeInThen()])
    text = str(info.value)
    assert "output y on sample" in text, text
    # whichever sample reached it, the report says the changed branch was executed
    branches = info.value.report.steps[0].gates["parity"].branches
    assert branches["then-branch of If 'branch'"], branches


def test_changed_branch_no_input_reaches_fails_naming_the_branch():
    with pytest.raises(GateError) as info:
        surgery.apply(_if_model(1e30), [ThreeInThen()])
    assert "then-branch of If 'branch' was changed but never executed by the parity samples" in str(
        info.value
    ) and "allow_unexercised = true" in str(info.value), str(info.value)
    _, report = surgery.apply(_if_model(1e30), [ThreeInThen()], verify={"allow_unexercised": True})
    assert any("allowed by [verify] allow_unexercised" in n for n in report.steps[0].notes)


# -- 3. NaN on the generated inputs -------------------------------------------------------------------
class TripleOutput(SurgeryPass):
    """User pass: multiplies the output by 3 (Log(x - 5) is NaN on every generated x in [-1, 1))."""

    name = "user-triple"

    def call(self, model):
        g = model.graph
        y = g.outputs[0]
        three = _const(g, "three", np.array(3, np.float32))
        mul = ir.Node("", "Mul", [y, three], name="log/triple")
        g.append(mul)
        y.name = "y_raw"
        mul.outputs[0].name, mul.outputs[0].type, mul.outputs[0].shape = "y", y.type, y.shape
        g.outputs[0] = mul.outputs[0]
        return SurgeryResult(model, True)


def test_nan_on_planned_inputs_does_not_hide_a_change():
    proto = make_model(
        [
            h.make_node("Sub", ["x", "five"], ["d"], name="sub"),
            h.make_node("Log", ["d"], ["y"], name="log"),
        ],
        [vi("x", T.FLOAT, [2, 8])],
        [vi("y", T.FLOAT, [2, 8])],
        {"five": np.array(5, np.float32)},
    )
    with pytest.raises(GateError) as info:
        surgery.apply(proto, [TripleOutput()])
    text = str(info.value)
    assert (
        "output y on sample '" in text and "planned" not in text.split("output y on sample")[1][:12]
    ), text
    assert any("dropped" in n for n in info.value.report.notes)


# -- 4. output dtype ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_gs_pass_retyping_an_output_is_caught(dtype):
    @gs_pass(name="retype-output")
    def retype(graph: gs.Graph) -> bool:
        """User gs pass: appends a Cast to the output and retypes it."""
        y = graph.outputs[0]
        y.name = "y_before_cast"
        out = gs.Variable("y", dtype=dtype, shape=y.shape)
        graph.nodes.append(
            gs.Node(
                "Cast",
                "cast_out",
                attrs={"to": onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))},
                inputs=[y],
                outputs=[out],
            )
        )
        graph.outputs = [out]
        return True

    with pytest.raises(GateError) as info:
        surgery.apply(_relu_model(), [retype()])
    text = str(info.value)
    assert info.value.gate == "signature" and "output 'y': element type float -> " in text, text


# -- 5. a size baked in ---------------------------------------------------------------------------------
class BakeBatch(SurgeryPass):
    """User pass: Reshape(m, [-1, 4]) -> Reshape(m, [2, 4]) (right for the guessed batch only)."""

    name = "user-bake-batch"

    def call(self, model):
        shape = model.graph.initializers["shape"]
        shape.const_value = ir.tensor(np.array([2, 4], np.int64), name="shape")
        return SurgeryResult(model, True)


def test_baked_batch_is_caught_by_a_second_size():
    proto = make_model(
        [h.make_node("Reshape", ["m", "shape"], ["y"], name="reshape")],
        [vi("m", T.FLOAT, ["batch", 4])],
        [vi("y", T.FLOAT, ["batch", 4])],
        {"shape": np.array([-1, 4], np.int64)},
    )
    with pytest.raises(GateError) as info:
        surgery.apply(proto, [BakeBatch()])
    # shapes are refreshed after every pass, so the baked size reaches the output's annotation and
    # the signature gate names it; with the signature gate off, the second input size exposes it
    assert "output 'y': shape [?, 4] -> [2, 4]" in str(info.value), str(info.value)
    with pytest.raises(GateError) as info:
        surgery.apply(proto, [BakeBatch()], verify={"signature": "off"})
    assert "sample 'second size'" in str(info.value), str(info.value)


# -- 6. order of the graph's inputs or outputs swapped --------------------------------------------------
class SwapOutputs(SurgeryPass):
    name = "user-swap-outputs"

    def call(self, model):
        outs = model.graph.outputs
        first, second = outs[0], outs[1]
        outs.clear()
        outs.extend([second, first])
        return SurgeryResult(model, True)


class SwapInputs(SurgeryPass):
    name = "user-swap-inputs"

    def call(self, model):
        ins = model.graph.inputs
        first, second = ins[0], ins[1]
        ins.clear()
        ins.extend([second, first])
        return SurgeryResult(model, True)


@pytest.mark.parametrize("swap, kind", [(SwapOutputs, "outputs"), (SwapInputs, "inputs")])
def test_swapped_inputs_or_outputs_are_caught(swap, kind):
    proto = make_model(
        [
            h.make_node("Add", ["a", "b"], ["s"], name="add"),
            h.make_node("Sub", ["a", "b"], ["d"], name="sub"),
        ],
        [vi("a", T.FLOAT, [2, 3]), vi("b", T.FLOAT, [2, 3])],
        [vi("s", T.FLOAT, [2, 3]), vi("d", T.FLOAT, [2, 3])],
    )
    with pytest.raises(GateError) as info:
        surgery.apply(proto, [swap()])
    assert f"graph {kind} reordered" in str(info.value) and info.value.gate == "signature", str(
        info.value
    )


# -- 7. integer outputs ---------------------------------------------------------------------------------
class ShiftOffset(SurgeryPass):
    name = "user-shift-offset"

    def call(self, model):
        offset = model.graph.initializers["offset"]
        offset.const_value = ir.tensor(
            offset.const_value.numpy() + np.int64(self.delta), name="offset"
        )
        return SurgeryResult(model, True)


def _shift(delta: int) -> SurgeryPass:
    p = ShiftOffset()
    p.delta = delta
    return p


def test_int64_off_by_50_is_caught_under_a_relative_tolerance():
    with pytest.raises(GateError) as info:
        surgery.apply(_int_model(2**40), [_shift(50)], verify={"rtol": 1e-4})
    assert "output out on sample 'planned'" in str(info.value) and "max abs difference 50" in str(
        info.value
    )


def test_int64_near_2_60_off_by_one_is_caught_with_zero_tolerance():
    with pytest.raises(GateError) as info:
        surgery.apply(_int_model(2**60), [_shift(1)], verify={"rtol": 0.0, "atol": 0.0})
    assert "max abs difference 1" in str(info.value), str(info.value)


def test_int_tolerance_allows_a_declared_difference():
    _, report = surgery.apply(_int_model(2**40), [_shift(50)], verify={"int_tolerance": 50})
    assert report.steps[0].parity_status == "ok"


# -- 8. an edit returned as modified=False -------------------------------------------------------------
class SilentEdit(SurgeryPass):
    """User pass: perturbs a weight but says it changed nothing."""

    name = "user-silent-edit"

    def call(self, model):
        w = model.graph.initializers["W2"]
        w.const_value = ir.tensor(w.const_value.numpy() + np.float32(0.5), name="W2")
        return SurgeryResult(model, False)


def test_silent_edit_is_gated_and_named(mlp):
    with pytest.raises(GateError) as info:
        surgery.apply(mlp, [SilentEdit()])
    assert "user-silent-edit" in str(info.value) and "output y" in str(info.value)
    assert any("silent edit: pass 'user-silent-edit'" in n for n in info.value.report.notes)


# -- 9. a random original ---------------------------------------------------------------------------------
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


class TouchRelu(SurgeryPass):
    name = "user-touch-relu"

    def call(self, model):
        _node_of(model, "relu").name = "relu_renamed"
        return SurgeryResult(model, True)


def test_random_original_is_reported_not_comparable_and_not_blamed():
    _, report = surgery.apply(_dropout_idiom(), [TouchRelu()])
    assert report.extra["random_outputs"] == {"y": "rand"}
    parity = report.steps[0].gates["parity"]
    assert parity.status.value == "passed"
    assert {d.name: d.comparable for d in parity.diffs} == {"y": False, "z": True}
    assert any("not comparable: the original is random" in n for n in report.notes)


def test_random_original_still_gates_its_deterministic_outputs():
    class BreakRelu(SurgeryPass):
        name = "user-break-relu"

        def call(self, model):
            _node_of(model, "relu").op_type = "Sigmoid"
            return SurgeryResult(model, True)

    with pytest.raises(GateError) as info:
        surgery.apply(_dropout_idiom(), [BreakRelu()])
    assert "output z" in str(info.value) and "RandomUniformLike" not in str(info.value)
