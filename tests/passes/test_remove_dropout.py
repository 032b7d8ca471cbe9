"""remove-dropout on every opset form of Dropout, nested graphs, functions and torch exports."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as TP
from onnx import helper
from onnx.reference import ReferenceEvaluator

import surgery
from surgery.errors import PassError
from surgery.passes.cleanup import Cleanup
from surgery.passes.remove_dropout import RemoveDropout
from surgery.testing import make_model, node_names, op_counts, ort_run, vi

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3)).astype(np.float32)
X_SPECIAL = np.array([[1.0, np.nan, np.inf], [-np.inf, -2.0, 0.0]], np.float32)


def run_pass(proto: onnx.ModelProto, pass_=None):
    """Run the pass on a fresh ir.Model; return (model, result) after checking the result is valid."""
    model = ir.from_proto(proto)
    result = (pass_ or RemoveDropout())(model)
    assert result.model is model
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    return model, result


def assert_idempotent(model: ir.Model) -> None:
    again = RemoveDropout()(model)
    assert again.modified is False
    assert again.stats["removed"] == 0


def simple(
    opset: int, *, attrs=None, inputs=("x",), inits=None, mask: str = "unused", extra_inputs=()
):
    """x -> Relu -> Dropout -> Sigmoid -> y, with the mask unused, consumed or a graph output."""
    outs = ["d", "m"] if mask != "none" else ["d"]
    mask_type = TP.BOOL if opset >= 10 else TP.FLOAT
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Dropout", ["r", *inputs[1:]], outs, name="drop", **(attrs or {})),
        helper.make_node("Sigmoid", ["d"], ["y"], name="sig"),
    ]
    outputs = [vi("y", TP.FLOAT, [2, 3])]
    if mask == "consumed":
        nodes += [
            helper.make_node("Cast", ["m"], ["mf"], name="mask_cast", to=TP.FLOAT),
            helper.make_node("Mul", ["y", "mf"], ["z"], name="mask_mul"),
        ]
        outputs.append(vi("z", TP.FLOAT, [2, 3]))
    elif mask == "output":
        outputs.append(vi("m", mask_type, [2, 3]))
    return make_model(
        nodes, [vi("x", TP.FLOAT, [2, 3]), *extra_inputs], outputs, inits, opset=opset
    )


# -- opset <= 11: ratio attribute ---------------------------------------------------------------


@pytest.mark.parametrize("opset", [7, 10, 11])
def test_ratio_attribute_mask_unused_exact(opset):
    proto = simple(opset, attrs={"ratio": 0.3})
    before = ort_run(proto, {"x": X})
    model, result = run_pass(proto)
    assert result.modified and result.stats["removed"] == 1
    assert result.changed_semantics is False
    assert op_counts(model) == {"Relu": 1, "Sigmoid": 1}
    assert node_names(model) == {"relu", "sig"}
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], before["y"])
    assert result.renamed == {"d": "r"}
    assert_idempotent(model)


@pytest.mark.parametrize("opset", [7, 9, 10, 11])
def test_opset_7_to_11_mask_output_is_ones_and_reported(opset):
    proto = simple(opset, attrs={"ratio": 0.5}, mask="output")
    ort_before = ort_run(proto, {"x": X_SPECIAL})
    ref_before = ReferenceEvaluator(proto).run(None, {"x": X_SPECIAL})
    model, result = run_pass(proto)
    assert "Dropout" not in op_counts(model)
    assert result.stats["masks_replaced"] == 1
    # The graph output keeps its name and its declared element type (float before opset 10).
    mask_out = model.graph.outputs[1]
    assert mask_out.name == "m"
    assert mask_out.dtype == (ir.DataType.BOOL if opset >= 10 else ir.DataType.FLOAT)
    after = ort_run(model, {"x": X_SPECIAL})
    assert after["m"].dtype == (np.bool_ if opset >= 10 else np.float32)
    np.testing.assert_array_equal(after["m"], np.ones((2, 3), after["m"].dtype))
    np.testing.assert_array_equal(after["y"], ort_before["y"])
    # ORT fills this mask with zeros, the onnx reference with ones: runtime-defined, so reported.
    assert not ort_before["m"].any()
    np.testing.assert_array_equal(after["m"].astype(bool), np.asarray(ref_before[1]).astype(bool))
    assert result.changed_semantics is True
    assert any("runtime-defined" in note and "drop" in note for note in result.notes)
    expected_ops = {"ConstantOfShape", "Shape"} if opset >= 9 else {"Less", "Not", "Cast"}
    assert expected_ops <= set(op_counts(model))
    assert_idempotent(model)


def test_opset_10_mask_consumed_by_nodes():
    proto = simple(10, attrs={"ratio": 0.2}, mask="consumed")
    model, _result = run_pass(proto)
    assert "Dropout" not in op_counts(model)
    assert {"mask_cast", "mask_mul", "relu", "sig"} <= node_names(model)
    after = ort_run(model, {"x": X})
    ref = ReferenceEvaluator(proto).run(None, {"x": X})
    np.testing.assert_allclose(after["z"], ref[1], rtol=1e-6)
    np.testing.assert_allclose(after["z"], after["y"], rtol=0)  # mask is ones


def test_opset_7_mask_dtype_unknown_is_refused_before_any_change():
    # An opset 7 mask has the input's type; if nothing says what that is the pass refuses, and the
    # Dropout it could remove (the first one) is still there: a refusal changes nothing.
    model = ir.from_onnx_text(
        """
        <ir_version: 9, opset_import: ["" : 7]>
        g (x) => (y, z) {
            a = Dropout <ratio: float = 0.5> (x)
            d, m = Dropout <ratio: float = 0.5> (a)
            y = Relu (d)
            z = Relu (m)
        }
        """
    )
    with pytest.raises(PassError, match="element type of its input 'a' is unknown"):
        RemoveDropout()(model)
    assert [n.op_type for n in model.graph] == ["Dropout", "Dropout", "Relu", "Relu"]


def test_chain_of_dropouts_into_a_graph_output():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Dropout", ["r"], ["d1"], name="drop1", ratio=0.1),
        helper.make_node("Dropout", ["d1"], ["y", "m"], name="drop2", ratio=0.2),
    ]
    proto = make_model(
        nodes,
        [vi("x", TP.FLOAT, [2, 3])],
        [vi("y", TP.FLOAT, [2, 3]), vi("m", TP.FLOAT, [2, 3])],
        opset=8,
    )
    model, result = run_pass(proto)
    assert result.stats["removed"] == 2 and result.stats["identities_kept"] == 0
    assert [o.name for o in model.graph.outputs] == ["y", "m"]
    assert model.graph.outputs[0].producer().name == "relu"
    out = ort_run(model, {"x": X})
    np.testing.assert_array_equal(out["y"], np.maximum(X, 0))
    np.testing.assert_array_equal(out["m"], np.ones((2, 3), np.float32))


# -- opset <= 6: is_test ------------------------------------------------------------------------


def test_opset_6_is_test_and_training():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Dropout", ["r"], ["d1"], name="test_mode", is_test=1, ratio=0.5),
        helper.make_node("Dropout", ["d1"], ["d2", "m"], name="train_mode", ratio=0.5),
        helper.make_node("Neg", ["d2"], ["y"], name="neg"),
        helper.make_node("Neg", ["m"], ["z"], name="neg_mask"),
    ]
    proto = make_model(
        nodes,
        [vi("x", TP.FLOAT, [2, 3])],
        [vi("y", TP.FLOAT, [2, 3]), vi("z", TP.FLOAT, [2, 3])],
        opset=6,
    )
    model, result = run_pass(proto)
    assert result.stats == {
        "removed": 2,
        "training_mode": 1,
        "masks_replaced": 1,
        "identities_kept": 0,
        "hand_written": 0,
    }
    assert result.changed_semantics is True
    assert (
        len(result.notes) == 1
        and "train_mode" in result.notes[0]
        and "is_test=0" in result.notes[0]
    )
    assert op_counts(model) == {"Relu": 1, "Neg": 2, "Less": 1, "Not": 1, "Cast": 1}
    # ONNX Runtime has no kernels for opset 6 Dropout/Less: the onnx reference evaluator runs it.
    y, z = ReferenceEvaluator(ir.to_proto(model)).run(None, {"x": X_SPECIAL})
    np.testing.assert_array_equal(y, -np.maximum(X_SPECIAL, 0))
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z, -np.ones((2, 3), np.float32))
    assert_idempotent(model)


def test_opset_5_mask_consumed_is_refused():
    nodes = [
        helper.make_node("Dropout", ["x"], ["d", "m"], name="old", is_test=1),
        helper.make_node("Add", ["d", "m"], ["y"], name="add"),
    ]
    proto = make_model(nodes, [vi("x", TP.FLOAT, [2, 3])], [vi("y", TP.FLOAT, [2, 3])], opset=5)
    with pytest.raises(PassError, match="opset 5"):
        RemoveDropout()(ir.from_proto(proto))


# -- opset >= 12: ratio / training_mode inputs --------------------------------------------------


@pytest.mark.parametrize("opset", [12, 13, 17])
def test_constant_inputs_inference_mode_exact(opset):
    inits = {"ratio": np.array(0.4, np.float32), "train": np.array(False)}
    proto = simple(opset, inputs=("r", "ratio", "train"), inits=inits, mask="output")
    before = ort_run(proto, {"x": X_SPECIAL})
    model, result = run_pass(proto)
    assert result.changed_semantics is False and result.notes == []
    assert "Dropout" not in op_counts(model)
    assert not model.graph.initializers, (
        "ratio/training_mode initializers read only by Dropout are removed"
    )
    after = ort_run(model, {"x": X_SPECIAL})
    for key in ("y", "m"):
        np.testing.assert_array_equal(after[key], before[key])
    assert after["m"].dtype == np.bool_ and after["m"].all()
    assert_idempotent(model)


@pytest.mark.parametrize("opset", [12, 13, 17])
def test_no_optional_inputs(opset):
    proto = simple(opset, mask="consumed")
    before = ort_run(proto, {"x": X})
    model, result = run_pass(proto)
    assert result.modified and not result.changed_semantics
    after = ort_run(model, {"x": X})
    for key in ("y", "z"):
        np.testing.assert_array_equal(after[key], before[key])


def training_constants_model(ratio: float) -> onnx.ModelProto:
    """torch's training export: ratio and training_mode from Constant nodes."""
    nodes = [
        helper.make_node(
            "Constant",
            [],
            ["ratio"],
            name="ratio_const",
            value=helper.make_tensor("v", TP.FLOAT, [], [ratio]),
        ),
        helper.make_node(
            "Constant",
            [],
            ["train"],
            name="train_const",
            value=helper.make_tensor("v", TP.BOOL, [], [True]),
        ),
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Dropout", ["r", "ratio", "train"], ["y", "m"], name="/drop/Dropout"),
    ]
    return make_model(nodes, [vi("x", TP.FLOAT, [2, 3])], [vi("y", TP.FLOAT, [2, 3])], opset=17)


def test_training_mode_constant_true_changes_semantics():
    proto = training_constants_model(0.5)
    model, result = run_pass(proto)
    assert result.changed_semantics is True
    assert result.stats["training_mode"] == 1
    assert (
        len(result.notes) == 1
        and "/drop/Dropout" in result.notes[0]
        and "constant true" in result.notes[0]
    )
    assert op_counts(model) == {"Relu": 1}, (
        "the ratio/training_mode Constant nodes go with the Dropout"
    )
    # The graph output keeps its name: Relu's output took it, Relu kept its node name.
    assert [o.name for o in model.graph.outputs] == ["y"]
    assert model.graph.outputs[0].producer().name == "relu"
    assert result.renamed == {"r": "y"}
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], np.maximum(X, 0))
    assert_idempotent(model)


def test_training_mode_with_zero_ratio_is_exact():
    proto = training_constants_model(0.0)
    before = ort_run(proto, {"x": X})
    model, result = run_pass(proto)
    assert result.modified and result.changed_semantics is False
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], before["y"])


def test_training_mode_graph_input():
    proto = simple(13, inputs=("r", "", "train"), extra_inputs=[vi("train", TP.BOOL, [])])
    before = ort_run(proto, {"x": X, "train": np.array(False)})
    model, result = run_pass(proto)
    assert result.changed_semantics is True
    assert any("non-constant tensor 'train'" in n for n in result.notes)
    assert [i.name for i in model.graph.inputs] == ["x", "train"], "the signature is kept"
    after = ort_run(model, {"x": X, "train": np.array(True)})
    np.testing.assert_array_equal(after["y"], before["y"])


# -- graph outputs ------------------------------------------------------------------------------


def test_dropout_between_graph_input_and_output_keeps_an_identity():
    nodes = [helper.make_node("Dropout", ["x"], ["y"], name="drop")]
    proto = make_model(nodes, [vi("x", TP.FLOAT, [2, 3])], [vi("y", TP.FLOAT, [2, 3])], opset=13)
    model, result = run_pass(proto)
    assert op_counts(model) == {"Identity": 1}
    assert result.stats["identities_kept"] == 1
    assert [o.name for o in model.graph.outputs] == ["y"]
    assert [i.name for i in model.graph.inputs] == ["x"]
    assert model.graph.outputs[0].producer().name == "drop/identity"
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], X)
    assert_idempotent(model)
    # cleanup must keep that Identity too (its input is a graph input).
    assert Cleanup()(model).stats["identities"] == 0


def test_dropout_output_that_is_also_read_by_nodes():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Dropout", ["r"], ["d"], name="drop"),
        helper.make_node("Neg", ["d"], ["n"], name="neg"),
    ]
    outputs = [vi("d", TP.FLOAT, [2, 3]), vi("n", TP.FLOAT, [2, 3]), vi("r", TP.FLOAT, [2, 3])]
    proto = make_model(nodes, [vi("x", TP.FLOAT, [2, 3])], outputs, opset=13)
    before = ort_run(proto, {"x": X})
    model, _result = run_pass(proto)
    # `r` is itself a graph output, so it cannot take the name `d`: an Identity keeps both names.
    assert op_counts(model) == {"Relu": 1, "Neg": 1, "Identity": 1}
    assert [o.name for o in model.graph.outputs] == ["d", "n", "r"]
    after = ort_run(model, {"x": X})
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


# -- subgraphs and functions --------------------------------------------------------------------


def if_model() -> onnx.ModelProto:
    then_graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["t_r"], name="then_relu"),
            helper.make_node("Dropout", ["t_r"], ["t_d", "t_m"], name="then_drop"),
            helper.make_node("Cast", ["t_m"], ["t_mf"], name="then_cast", to=TP.FLOAT),
            helper.make_node("Add", ["t_d", "t_mf"], ["t_out"], name="then_add"),
        ],
        "then",
        [],
        [vi("t_out", TP.FLOAT, [2, 3])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Dropout", ["x"], ["e_out"], name="else_drop")],  # reads an outer value
        "else",
        [],
        [vi("e_out", TP.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node(
            "If", ["c"], ["y"], name="if", then_branch=then_graph, else_branch=else_graph
        )
    ]
    return make_model(
        nodes,
        [vi("x", TP.FLOAT, [2, 3]), vi("c", TP.BOOL, [])],
        [vi("y", TP.FLOAT, [2, 3])],
        opset=13,
    )


def test_dropout_inside_if_branches():
    proto = if_model()
    feeds = [{"x": X, "c": np.array(flag)} for flag in (True, False)]
    before = [ort_run(proto, f) for f in feeds]
    model, result = run_pass(proto)
    assert result.stats["removed"] == 2 and result.stats["masks_replaced"] == 1
    assert "Dropout" not in op_counts(model)
    # the else branch returns an outer-scope value: an Identity keeps the branch output.
    else_branch = model.graph.node(0).attributes["else_branch"].as_graph()
    assert [n.op_type for n in else_branch] == ["Identity"]
    assert else_branch.outputs[0].name == "e_out"
    assert {"then_relu", "then_cast", "then_add", "if"} <= node_names(model)
    for f, b in zip(feeds, before, strict=True):
        np.testing.assert_array_equal(ort_run(model, f)["y"], b["y"])
    assert_idempotent(model)


def test_dropout_inside_model_local_function():
    fn = helper.make_function(
        "local",
        "ReluDrop",
        ["a"],
        ["b"],
        [
            helper.make_node("Relu", ["a"], ["ra"], name="fn_relu"),
            helper.make_node(
                "Constant",
                [],
                ["ratio"],
                name="fn_ratio",
                value=helper.make_tensor("v", TP.FLOAT, [], [0.1]),
            ),
            helper.make_node(
                "Constant",
                [],
                ["train"],
                name="fn_train",
                value=helper.make_tensor("v", TP.BOOL, [], [False]),
            ),
            helper.make_node("Dropout", ["ra", "ratio", "train"], ["b"], name="fn_drop"),
        ],
        [helper.make_opsetid("", 17)],
    )
    nodes = [
        helper.make_node("ReluDrop", ["x"], ["h"], name="call", domain="local"),
        helper.make_node("Dropout", ["h"], ["y"], name="main_drop"),
    ]
    proto = make_model(
        nodes,
        [vi("x", TP.FLOAT, [2, 3])],
        [vi("y", TP.FLOAT, [2, 3])],
        opset=17,
        functions=[fn],
        extra_opsets={"local": 1},
    )
    before = ort_run(proto, {"x": X})
    model, result = run_pass(proto)
    assert result.stats["removed"] == 2
    assert "Dropout" not in op_counts(model)
    function = model.functions[("local", "ReluDrop", "")]
    assert [n.op_type for n in function] == ["Relu"], "the Constant inputs went with the Dropout"
    assert function.outputs[0].name == "b"
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], before["y"])
    assert_idempotent(model)


def test_no_dropout_is_a_no_op():
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        [vi("x", TP.FLOAT, [2])],
        [vi("y", TP.FLOAT, [2])],
    )
    model = ir.from_proto(proto)
    result = RemoveDropout()(model)
    assert result.modified is False and result.stats["removed"] == 0


# -- torch exports ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_exports():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(6, 8)
            self.drop1 = torch.nn.Dropout(0.3)
            self.fc2 = torch.nn.Linear(8, 4)
            self.drop2 = torch.nn.Dropout(0.5)

        def forward(self, x):
            return self.drop2(self.fc2(self.drop1(torch.relu(self.fc1(x)))))

    net = Net()
    x = torch.randn(3, 6)
    exports = {}
    for key, mode, opset in [
        ("train17", torch.onnx.TrainingMode.TRAINING, 17),
        ("train11", torch.onnx.TrainingMode.TRAINING, 11),
        ("eval17", torch.onnx.TrainingMode.EVAL, 17),
    ]:
        net.train(mode is torch.onnx.TrainingMode.TRAINING)
        buffer = io.BytesIO()
        torch.onnx.export(
            net,
            (x,),
            buffer,
            dynamo=False,
            training=mode,
            do_constant_folding=False,
            opset_version=opset,
            input_names=["x"],
            output_names=["y"],
        )
        exports[key] = onnx.load_from_string(buffer.getvalue())
    net.eval()
    with torch.no_grad():
        expected = net(x).numpy()
    return exports, x.numpy(), expected


@pytest.mark.torch
def test_torch_training_export(torch_exports):
    exports, x, expected = torch_exports
    proto = exports["train17"]
    assert op_counts(proto)["Dropout"] == 2
    names_before = node_names(proto)
    model, result = run_pass(proto)
    assert "Dropout" not in op_counts(model)
    assert result.stats["removed"] == 2 and result.stats["training_mode"] == 2
    assert result.changed_semantics is True and len(result.notes) == 2
    assert {"/drop1/Dropout", "/drop2/Dropout"} == {n.split("'")[1] for n in result.notes}
    survivors = {n for n in names_before if "Dropout" not in n and "drop" not in n}
    assert survivors <= node_names(model)
    assert [o.name for o in model.graph.outputs] == ["y"]
    out = ort_run(model, {"x": x})["y"]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, ort_run(exports["eval17"], {"x": x})["y"], rtol=1e-6, atol=1e-6)
    assert_idempotent(model)


@pytest.mark.torch
def test_torch_training_export_opset_11(torch_exports):
    exports, x, _expected = torch_exports
    proto = exports["train11"]
    assert op_counts(proto)["Dropout"] == 2
    before = ort_run(proto, {"x": x})["y"]
    model, result = run_pass(proto)
    assert "Dropout" not in op_counts(model) and result.changed_semantics is False
    np.testing.assert_array_equal(ort_run(model, {"x": x})["y"], before)


@pytest.mark.torch
def test_torch_eval_export_has_nothing_to_remove(torch_exports):
    exports, _x, _ = torch_exports
    model = ir.from_proto(exports["eval17"])
    result = RemoveDropout()(model)
    assert result.modified is False


# -- through the runner's gates -------------------------------------------------------------------


def test_through_surgery_apply():

    proto = simple(
        13,
        inputs=("r", "ratio", "train"),
        inits={"ratio": np.array(0.4, np.float32), "train": np.array(False)},
        mask="consumed",
    )
    model, report = surgery.apply(proto, [RemoveDropout(), Cleanup()])
    assert [s.name for s in report.steps] == ["remove-dropout", "cleanup"]
    assert report.steps[0].modified and report.steps[0].stats["removed"] == 1
    assert "Dropout" not in op_counts(model)
    step = report.steps[0]
    assert step.checker == "ok" and step.ort == "ok" and step.parity_status == "ok", step
    assert {d.name for d in step.parity} == {"y", "z"} and all(d.ok for d in step.parity)
    # remove-dropout already dropped the ratio/training_mode initializers: nothing left to clean.
    assert report.steps[1].modified is False


def test_training_mode_through_surgery_apply():
    model, report = surgery.apply(training_constants_model(0.5), [RemoveDropout(), Cleanup()])
    assert "Dropout" not in op_counts(model)
    step = report.steps[0]
    assert step.modified and step.checker == "ok" and step.ort == "ok"
    assert step.parity_status == "deviation reported"
    assert any("/drop/Dropout" in note for note in step.notes)


# -- hand-written dropout: x * (rand_like(x) > p).float() / (1 - p) -------------------------------


def hand_written(
    *,
    random="RandomUniformLike",
    compare="Greater",
    p_first=False,
    rescale="div",
    p=0.3,
    scale=None,
    mask_cast=True,
    output_is_mul=False,
):
    """x -> Relu -> [random → compare → Cast → Mul(r, ·) → rescale] -> Sigmoid -> y (shape [2, 3])."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu")]
    inits = {} if random == "Bernoulli" else {"p": np.array(p, np.float32)}
    if random == "Bernoulli":
        inits["keep"] = np.full((2, 3), 1 - p, np.float32)
        nodes.append(helper.make_node("Bernoulli", ["keep"], ["mask_f"], name="bern"))
        mask = "mask_f"
    else:
        if random == "RandomUniform":
            nodes.append(helper.make_node("RandomUniform", [], ["u"], name="rand", shape=[2, 3]))
        else:
            nodes.append(helper.make_node(random, ["r"], ["u"], name="rand"))
        cmp_inputs = ["p", "u"] if p_first else ["u", "p"]
        nodes.append(helper.make_node(compare, cmp_inputs, ["keepmask"], name="cmp"))
        mask = "keepmask"
        if mask_cast:
            nodes.append(
                helper.make_node("Cast", ["keepmask"], ["mask_f"], name="cast", to=TP.FLOAT)
            )
            mask = "mask_f"
    nodes.append(helper.make_node("Mul", ["r", mask], ["masked"], name="mul"))
    out = "masked"
    if rescale == "div":
        inits["denom"] = np.array(1 - p if scale is None else 1 / scale, np.float32)
        nodes.append(helper.make_node("Div", ["masked", "denom"], ["scaled"], name="div"))
        out = "scaled"
    elif rescale == "mul":
        inits["factor"] = np.array(1 / (1 - p) if scale is None else scale, np.float32)
        nodes.append(helper.make_node("Mul", ["factor", "masked"], ["scaled"], name="rescale"))
        out = "scaled"
    if output_is_mul:
        proto = make_model(
            nodes, [vi("x", TP.FLOAT, [2, 3])], [vi(out, TP.FLOAT, [2, 3])], inits, opset=17
        )
    else:
        nodes.append(helper.make_node("Sigmoid", [out], ["y"], name="sig"))
        proto = make_model(
            nodes, [vi("x", TP.FLOAT, [2, 3])], [vi("y", TP.FLOAT, [2, 3])], inits, opset=17
        )
    # RandomUniform reads no tensor: the mask's shape must be known to equal x's
    return onnx.shape_inference.infer_shapes(proto, strict_mode=True)


def _expected(x):
    return 1 / (1 + np.exp(-np.maximum(x, 0)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"compare": "GreaterOrEqual"},
        {"compare": "Less", "p_first": True},  # p < rand: kept above p
        {
            "compare": "Less",
            "p": 0.7,
        },  # rand < keep: kept below 0.7, keep probability 0.7 → rescale 1/0.7
        {"rescale": "mul"},
        {"rescale": "none"},
        {"random": "RandomUniform"},
        {"random": "RandomNormalLike", "p": 0.0, "scale": 2.0},  # N(0,1) > 0 keeps half
        {"random": "Bernoulli"},
    ],
)
def test_hand_written_dropout_becomes_its_input(kwargs):
    if kwargs.get("compare") == "Less" and not kwargs.get("p_first"):
        kwargs = {**kwargs, "scale": 1 / 0.7}
    model, result = run_pass(hand_written(**kwargs))
    counts = op_counts(model)
    assert set(counts) == {"Relu", "Sigmoid"}, counts
    assert result.stats["hand_written"] == 1 and result.changed_semantics
    assert any("hand-written" in note and "inference semantics" in note for note in result.notes)
    assert (
        not model.graph.initializers
    )  # threshold, rescale and keep probabilities went with the chain
    out = ort_run(model, {"x": X})["y"]
    np.testing.assert_allclose(out, _expected(X), rtol=1e-6)
    assert_idempotent(model)


def test_hand_written_dropout_before_the_fix_stays_random():
    """The bug: the chain survived, so the 'deployed' model gave different outputs run to run."""
    proto = hand_written()
    model, _ = run_pass(proto)
    runs = [ort_run(model, {"x": np.ones((2, 3), np.float32) * 5})["y"] for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_allclose(runs[0], _expected(np.full((2, 3), 5.0, np.float32)), rtol=1e-6)


def test_rescale_that_is_not_one_over_keep_is_left_alone():
    proto = hand_written(scale=3.0)
    model, result = run_pass(proto)
    assert op_counts(model)["RandomUniformLike"] == 1
    assert result.stats["hand_written"] == 0 and not result.modified
    assert any("left" in note and "rescale 3" in note for note in result.notes)


def test_random_op_read_elsewhere_is_not_dropout():
    proto = hand_written()
    proto.graph.node.append(helper.make_node("Identity", ["u"], ["noise"], name="noise_out"))
    proto.graph.output.append(vi("noise", TP.FLOAT, [2, 3]))
    model, result = run_pass(proto)
    assert result.stats["hand_written"] == 0 and op_counts(model)["RandomUniformLike"] == 1


def test_hand_written_dropout_into_a_graph_output_keeps_the_output_name():
    model, result = run_pass(hand_written(output_is_mul=True))
    assert [o.name for o in model.graph.outputs] == ["scaled"]
    assert set(op_counts(model)) == {"Relu"}
    np.testing.assert_allclose(ort_run(model, {"x": X})["scaled"], np.maximum(X, 0))
    assert result.stats["identities_kept"] == 0


def test_hand_written_dropout_inside_an_if_branch():
    body = hand_written()
    branch = helper.make_graph(
        [n for n in body.graph.node if n.op_type != "Relu"]
        + [helper.make_node("Identity", ["y"], ["y_then"])],
        "then",
        [],
        [vi("y_then", TP.FLOAT, [2, 3])],
        list(body.graph.initializer),
    )
    for node in branch.node:
        node.input[:] = ["xr" if i == "r" else i for i in node.input]
    other = helper.make_graph(
        [helper.make_node("Neg", ["xr"], ["y_else"])], "else", [], [vi("y_else", TP.FLOAT, [2, 3])]
    )
    proto = make_model(
        [
            helper.make_node("Relu", ["x"], ["xr"], name="relu"),
            helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch, else_branch=other),
        ],
        [vi("x", TP.FLOAT, [2, 3]), vi("c", TP.BOOL, [])],
        [vi("y", TP.FLOAT, [2, 3])],
    )
    model, result = run_pass(proto)
    assert result.stats["hand_written"] == 1 and "RandomUniformLike" not in op_counts(model)
    out = ort_run(model, {"x": X, "c": np.array(True)})["y"]
    np.testing.assert_allclose(out, _expected(X), rtol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_torch_hand_written_dropout_layer_in_training_mode(dynamo, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class DropoutLayer(torch.nn.Module):
        """The custom layer users write when the compiler rejects Dropout."""

        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def forward(self, x):
            if self.training:
                return x * (torch.rand_like(x) > self.p).float() / (1 - self.p)
            return x

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(6, 4)
            self.drop = DropoutLayer(0.25)

        def forward(self, x):
            return torch.relu(self.drop(self.fc(x)))

    net = Net().train()
    x = torch.randn(3, 6)
    path = tmp_path / "drop.onnx"
    kwargs = (
        {}
        if dynamo
        else {"training": torch.onnx.TrainingMode.TRAINING, "do_constant_folding": False}
    )
    torch.onnx.export(net, (x,), str(path), dynamo=dynamo, **kwargs)
    assert "RandomUniformLike" in op_counts(onnx.load(str(path)))
    net.eval()
    with torch.no_grad():
        expected = net(x).numpy()
    model, report = surgery.apply(str(path), [RemoveDropout(), Cleanup()])
    step = report.steps[0]
    assert step.stats["hand_written"] == 1 and step.checker == "ok" and step.ort == "ok"
    assert step.parity_status == "deviation reported"
    assert set(op_counts(model)) == {"Gemm", "Relu"}
    out = ort_run(model, {model.graph.inputs[0].name: x.numpy()})
    np.testing.assert_allclose(next(iter(out.values())), expected, rtol=1e-5, atol=1e-6)
