"""The onnx-graphsurgeon adapter: user-style functions become passes that keep the model object."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnx_ir as ir
import pytest
from onnx import TensorProto as TP
from onnx import helper

import surgery
from surgery import Numerics, registry
from surgery.errors import PassError
from surgery.interop.graphsurgeon import GraphSurgeonPass, gs_pass
from surgery.options import option
from surgery.pass_base import SurgeryPass
from surgery.passes.cleanup import Cleanup
from surgery.testing import make_model, node_names, op_counts, ort_run, vi

ROOT = Path(__file__).resolve().parents[3]
RNG = np.random.default_rng(2)
X = RNG.standard_normal((2, 4)).astype(np.float32)


# -- user-style passes --------------------------------------------------------------------------------


@gs_pass(name="relu-to-clip", numerics=Numerics.EXACT)
def relu_to_clip(graph: gs.Graph) -> bool:
    """Replace every Relu by Clip(x, 0)."""
    relus = [n for n in graph.nodes if n.op == "Relu"]
    for node in relus:
        zero = gs.Constant(f"{node.name}/zero", np.array(0.0, np.float32))
        x, y = node.inputs[0], node.outputs[0]
        node.outputs.clear()
        graph.nodes.append(gs.Node("Clip", name=f"{node.name}/clip", inputs=[x, zero], outputs=[y]))
    graph.cleanup()  # no toposort: the adapter sorts the result
    return bool(relus)


@dataclasses.dataclass(frozen=True)
class RemoveOptions:
    op_types: list[str] = option(
        default_factory=lambda: ["Identity"], help="single-input ops to bypass"
    )


@gs_pass(name="bypass-ops", options=RemoveOptions)
def bypass_ops(graph: gs.Graph, options: RemoveOptions) -> None:
    """Bypass single-input nodes of the given types (the onnx-graphsurgeon tutorial way)."""
    for node in [n for n in graph.nodes if n.op in options.op_types]:
        x, y = node.inputs[0], node.outputs[0]
        if y in graph.outputs:  # keep graph output names: reroute the producer instead
            producer = x.inputs[0] if x.inputs else None
            if producer is None or x in graph.outputs:
                continue
            producer.outputs = [y if t is x else t for t in producer.outputs]
            for consumer in list(x.outputs):
                consumer.inputs = [y if t is x else t for t in consumer.inputs]
        else:
            for consumer in list(y.outputs):
                consumer.inputs = [x if t is y else t for t in consumer.inputs]
        node.outputs.clear()
    graph.cleanup().toposort()
    return None


def mlp() -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="/fc1/MatMul"),
        helper.make_node("Relu", ["h"], ["a"], name="/act1/Relu"),
        helper.make_node("Identity", ["a"], ["a_id"], name="/Identity"),
        helper.make_node("MatMul", ["a_id", "W2"], ["h2"], name="/fc2/MatMul"),
        helper.make_node("Relu", ["h2"], ["y"], name="/act2/Relu"),
    ]
    inits = {
        "W1": RNG.standard_normal((4, 8)).astype(np.float32),
        "W2": RNG.standard_normal((8, 3)).astype(np.float32),
    }
    return make_model(
        nodes,
        [vi("x", TP.FLOAT, ["batch", 4])],
        [vi("y", TP.FLOAT, ["batch", 3])],
        inits,
        opset=13,
        ir_version=8,
    )


def test_decorator_builds_a_pass_class():
    assert issubclass(relu_to_clip, GraphSurgeonPass) and issubclass(relu_to_clip, SurgeryPass)
    assert relu_to_clip.name == "relu-to-clip" and relu_to_clip.numerics is Numerics.EXACT
    assert relu_to_clip.summary() == "Replace every Relu by Clip(x, 0)."
    assert bypass_ops(op_types=["Dropout"]).options.op_types == ("Dropout",)


def test_relu_to_clip_in_place_with_parity():
    proto = mlp()
    before = ort_run(proto, {"x": X})
    model = ir.from_proto(proto)
    graph_object = model.graph
    result = relu_to_clip()(model)
    assert result.model is model and model.graph is graph_object, "the same model and graph objects"
    assert result.modified is True
    assert op_counts(model) == {"MatMul": 2, "Clip": 2, "Identity": 1}
    assert {
        "/fc1/MatMul",
        "/fc2/MatMul",
        "/Identity",
        "/act1/Relu/clip",
        "/act2/Relu/clip",
    } == node_names(model)
    assert model.ir_version == 8 and model.opset_imports == {"": 13}
    assert [o.name for o in model.graph.outputs] == ["y"] and [
        i.name for i in model.graph.inputs
    ] == ["x"]
    assert str(model.graph.inputs[0].shape[0]) == "batch"
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], before["y"])
    again = relu_to_clip()(model)
    assert again.modified is False


def test_modified_from_comparison_when_function_returns_none():
    proto = mlp()
    model = ir.from_proto(proto)
    result = bypass_ops()(model)
    assert result.modified is True and op_counts(model)["Identity"] == 0
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], ort_run(proto, {"x": X})["y"])
    nodes = list(model.graph)
    again = bypass_ops()(model)
    assert again.modified is False
    assert all(a is b for a, b in zip(model.graph, nodes, strict=True)), (
        "an unchanged run leaves the ir graph untouched"
    )


def test_options_reach_the_function_and_output_names_are_kept():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Dropout", ["r"], ["y"], name="drop"),
    ]
    proto = make_model(nodes, [vi("x", TP.FLOAT, [2, 4])], [vi("y", TP.FLOAT, [2, 4])], opset=13)
    model = ir.from_proto(proto)
    assert bypass_ops()(model).modified is False  # default op_types: Identity only
    result = bypass_ops(op_types=["Dropout"])(model)
    assert result.modified and op_counts(model) == {"Relu": 1}
    assert [o.name for o in model.graph.outputs] == ["y"]
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], np.maximum(X, 0))


def test_returning_false_leaves_the_model_alone():
    @gs_pass(name="changes-but-says-no")
    def says_no(graph: gs.Graph) -> bool:
        graph.nodes.clear()
        return False

    model = ir.from_proto(mlp())
    nodes = list(model.graph)
    assert says_no()(model).modified is False
    assert list(model.graph) == nodes


def test_subgraphs_functions_and_custom_opsets_survive():
    then_graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"], name="then_relu")],
        "then",
        [],
        [vi("t", TP.FLOAT, [2, 4])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"], name="else_neg")],
        "else",
        [],
        [vi("e", TP.FLOAT, [2, 4])],
    )
    fn = helper.make_function(
        "local",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"], name="fn_add")],
        [helper.make_opsetid("", 17)],
    )
    nodes = [
        helper.make_node(
            "If", ["c"], ["i"], name="if", then_branch=then_graph, else_branch=else_graph
        ),
        helper.make_node("Twice", ["i"], ["tw"], name="call", domain="local"),
        helper.make_node("Relu", ["tw"], ["y"], name="relu"),
    ]
    proto = make_model(
        nodes,
        [vi("x", TP.FLOAT, [2, 4]), vi("c", TP.BOOL, [])],
        [vi("y", TP.FLOAT, [2, 4])],
        functions=[fn],
        extra_opsets={"local": 1},
    )
    model = ir.from_proto(proto)
    result = relu_to_clip()(model)
    assert result.modified
    # the function only sees the main graph: the Relu in the branch stays
    assert op_counts(model) == {"If": 1, "Relu": 1, "Neg": 1, "Twice": 1, "Add": 1, "Clip": 1}
    assert set(model.functions) == {("local", "Twice", "")}
    assert model.opset_imports == {"": 17, "local": 1}
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    for flag in (True, False):
        feeds = {"x": X, "c": np.array(flag)}
        np.testing.assert_array_equal(ort_run(model, feeds)["y"], ort_run(proto, feeds)["y"])


def test_gs_toposort_recursion_is_reported_with_a_hint():
    @gs_pass(name="calls-toposort")
    def calls_toposort(graph: gs.Graph) -> bool:
        graph.toposort()
        return True

    proto = make_model(
        [
            helper.make_node(
                "If",
                ["c"],
                ["i"],
                name="if",
                then_branch=helper.make_graph(
                    [helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", TP.FLOAT, [2])]
                ),
                else_branch=helper.make_graph(
                    [helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", TP.FLOAT, [2])]
                ),
            ),
            helper.make_node("Twice", ["i"], ["y"], name="call", domain="local"),
        ],
        [vi("x", TP.FLOAT, [2]), vi("c", TP.BOOL, [])],
        [vi("y", TP.FLOAT, [2])],
        functions=[
            helper.make_function(
                "local",
                "Twice",
                ["a"],
                ["b"],
                [helper.make_node("Add", ["a", "a"], ["b"])],
                [helper.make_opsetid("", 17)],
            )
        ],
        extra_opsets={"local": 1},
    )
    # measured with onnx-graphsurgeon 0.6.1: graph.toposort() never returns on this model
    with pytest.raises(PassError, match=r"RecursionError.*toposort\(mode='nodes'\)"):
        calls_toposort()(ir.from_proto(proto))


def test_external_data_weights_are_read(tmp_path):
    big = {
        "W1": RNG.standard_normal((4, 512)).astype(np.float32),
        "W2": RNG.standard_normal((512, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("MatMul", ["a", "W2"], ["y"], name="fc2"),
    ]
    proto = make_model(nodes, [vi("x", TP.FLOAT, [2, 4])], [vi("y", TP.FLOAT, [2, 3])], big)
    path = tmp_path / "m.onnx"
    surgery.save(ir.from_proto(proto), path, external_data=True)
    assert (tmp_path / "m.onnx.data").exists()
    model = surgery.load(path)
    assert isinstance(model.graph.initializers["W1"].const_value, ir.ExternalTensor)
    result = relu_to_clip()(model)
    assert result.modified and op_counts(model) == {"MatMul": 2, "Clip": 1}
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], ort_run(proto, {"x": X})["y"])


def test_errors_become_pass_errors():
    @gs_pass(name="broken-gs-pass")
    def broken(graph: gs.Graph) -> bool:
        raise KeyError("no such tensor")

    @gs_pass(name="wrong-return")
    def wrong(graph: gs.Graph):
        return 3

    with pytest.raises(PassError, match=r"broken-gs-pass: .*broken\(\) raised KeyError"):
        broken()(ir.from_proto(mlp()))
    with pytest.raises(PassError, match="True, False or None"):
        wrong()(ir.from_proto(mlp()))
    with pytest.raises(TypeError, match="options"):
        gs_pass(name="no-param", options=RemoveOptions)(lambda graph: None)


def test_register_and_apply_with_gates():
    cls = registry.register(relu_to_clip)
    try:
        assert registry.get("relu-to-clip") is cls
        proto = mlp()
        out, report = surgery.apply(proto, [relu_to_clip(), Cleanup()], inputs={"x": X})
        first, second = report.steps
        assert (
            first.modified
            and first.checker == "ok"
            and first.ort == "ok"
            and first.parity_status == "ok"
        )
        assert first.parity and all(d.ok for d in first.parity)
        assert second.modified and second.stats["identities"] == 1
        assert op_counts(out) == {"MatMul": 2, "Clip": 2}
        assert out.ir_version == 8
    finally:
        registry.unregister("relu-to-clip")


def test_example_script_runs(tmp_path):
    script = ROOT / "examples" / "02_graphsurgeon_pass" / "run.py"
    out = tmp_path / "block.onnx"
    proc = subprocess.run(
        [sys.executable, str(script), "-o", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("hardswish-to-hardsigmoid") and "modified=True" in lines[0]
    assert "checker=ok ort=ok parity=ok" in lines[0]
    saved = onnx.load(out)
    assert saved.ir_version == 8 and [o.version for o in saved.opset_import if o.domain == ""] == [
        17
    ]
    counts = op_counts(saved)
    assert counts["HardSwish"] == 0 and counts["HardSigmoid"] == 2 and counts["Mul"] == 2
    assert "/act1/HardSwish/HardSigmoid" in node_names(saved)
