"""The ``extract`` pass: the model becomes the subgraph between tensor names."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import InputError, PipelineError
from surgery.partition import slice_reference
from surgery.passes.extract import Extract
from surgery.testing import make_model, node_names, ort_run, vi


def _model() -> onnx.ModelProto:
    """A legacy-export-like chain with an If whose branches read an outer tensor; no value_info."""
    rng = np.random.default_rng(0)
    then_g = h.make_graph(
        [h.make_node("Mul", ["/b/Relu_output_0", "s"], ["t"], name="/if/then/Mul")],
        "then",
        [],
        [vi("t", T.FLOAT, [1, 4])],
    )
    else_g = h.make_graph(
        [h.make_node("Neg", ["/b/Relu_output_0"], ["e"], name="/if/else/Neg")],
        "else",
        [],
        [vi("e", T.FLOAT, [1, 4])],
    )
    nodes = [
        h.make_node("MatMul", ["x", "W1"], ["/a/MatMul_output_0"], name="/a/MatMul"),
        h.make_node("Relu", ["/a/MatMul_output_0"], ["/b/Relu_output_0"], name="/b/Relu"),
        h.make_node(
            "If",
            ["flag"],
            ["/if/If_output_0"],
            name="/if/If",
            then_branch=then_g,
            else_branch=else_g,
        ),
        h.make_node("MatMul", ["/if/If_output_0", "W2"], ["y"], name="/c/MatMul"),
        h.make_node("Sigmoid", ["x"], ["/dead/Sigmoid_output_0"], name="/dead/Sigmoid"),
    ]
    return make_model(
        nodes,
        [vi("x", T.FLOAT, [1, 8]), vi("flag", T.BOOL, [])],
        [vi("y", T.FLOAT, [1, 3])],
        {
            "W1": rng.standard_normal((8, 4)).astype(np.float32),
            "W2": rng.standard_normal((4, 3)).astype(np.float32),
            "s": np.array(2.0, np.float32),
            "unused": np.zeros(5, np.float32),
        },
        ir_version=8,
        opset=13,
    )


FEEDS = {
    "x": np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32),
    "flag": np.array(True),
}


def test_extract_same_interface_is_gated_and_idempotent(tmp_path):
    """Full inputs to the output: only the dead node and the unused initializer go."""
    model, report = surgery.apply(
        ir.from_proto(_model()),
        [Extract(inputs=["x", "flag"], outputs=["y"])],
        inputs=FEEDS,
        reproducer_dir=tmp_path / "r",
    )
    step = report.steps[0]
    assert step.modified and (step.checker, step.ort, step.parity_status) == ("ok", "ok", "ok")
    assert step.stats["nodes_removed"] == 1
    assert "unused" not in model.graph.initializers and "/dead/Sigmoid" not in node_names(model)
    assert model.ir_version == 8
    _, again = surgery.apply(
        model,
        [Extract(inputs=["x", "flag"], outputs=["y"])],
        inputs=FEEDS,
        reproducer_dir=tmp_path / "r2",
    )
    assert not again.steps[0].modified


def test_extract_a_middle_part_with_a_captured_tensor():
    original = ir.from_proto(_model())
    model = ir.from_proto(_model())
    result = Extract(inputs=["/b/Relu_output_0", "flag"], outputs=["/if/If_output_0"])(model)
    assert result.modified and result.model is model  # in place
    assert [n.name for n in model.graph] == ["/if/If"]
    assert [v.name for v in model.graph.inputs] == ["/b/Relu_output_0", "flag"]
    relu_in = model.graph.inputs[0]
    assert relu_in.dtype == ir.DataType.FLOAT and list(relu_in.shape) == [
        1,
        4,
    ]  # typed by shape inference
    assert list(model.graph.initializers) == ["s"]  # read inside the then branch
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    feeds, expected = slice_reference(original, model, FEEDS)
    np.testing.assert_array_equal(
        ort_run(model, feeds)["/if/If_output_0"], expected["/if/If_output_0"]
    )
    # a second run with the same cut changes nothing
    assert not Extract(inputs=["/b/Relu_output_0", "flag"], outputs=["/if/If_output_0"])(
        model
    ).modified


def test_extract_refuses_bad_cuts_and_names():
    with pytest.raises(InputError, match="graph input 'flag' reaches an output"):
        Extract(inputs=["/b/Relu_output_0"], outputs=["y"])(ir.from_proto(_model()))
    with pytest.raises(
        InputError, match=r"input '/b/Relu': no such tensor .*did you mean '/b/Relu_output_0'"
    ):
        Extract(inputs=["/b/Relu", "flag"], outputs=["y"])(ir.from_proto(_model()))
    with pytest.raises(InputError, match="exists only inside a subgraph"):
        Extract(inputs=["x", "flag"], outputs=["t"])(ir.from_proto(_model()))
    with pytest.raises(PipelineError, match=r"extract\.outputs"):
        Extract(inputs=["x"], outputs=[])
    with pytest.raises(PipelineError, match=r"extract\.input_types"):
        Extract(inputs=["x"], outputs=["y"], input_types=["x-float32"])


def test_extract_with_explicit_input_type():
    model = ir.from_proto(_model())
    Extract(
        inputs=["/a/MatMul_output_0"],
        outputs=["/b/Relu_output_0"],
        input_types=["/a/MatMul_output_0:float32[n,4]"],
    )(model)
    (inp,) = model.graph.inputs
    assert inp.dtype == ir.DataType.FLOAT and [
        d if isinstance(d, int) else d.value for d in inp.shape
    ] == ["n", 4]
    out = ort_run(model, {"/a/MatMul_output_0": np.array([[-1.0, 2.0, -3.0, 4.0]] * 2, np.float32)})
    np.testing.assert_array_equal(out["/b/Relu_output_0"], [[0.0, 2.0, 0.0, 4.0]] * 2)
