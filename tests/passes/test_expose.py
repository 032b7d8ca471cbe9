"""The ``expose`` pass: intermediate tensors become graph outputs, by name or glob."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import InputError
from surgery.passes.expose import Expose
from surgery.testing import make_model, ort_run, vi


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    then_g = h.make_graph(
        [
            h.make_node(
                "Relu", ["/l2/Relu_output_0"], ["/if/then/Relu_output_0"], name="/if/then/Relu"
            )
        ],
        "then",
        [],
        [vi("/if/then/Relu_output_0", T.FLOAT, [1, 4])],
    )
    else_g = h.make_graph(
        [h.make_node("Neg", ["/l2/Relu_output_0"], ["/if/else/Neg_output_0"], name="/if/else/Neg")],
        "else",
        [],
        [vi("/if/else/Neg_output_0", T.FLOAT, [1, 4])],
    )
    nodes = [
        h.make_node(
            "Constant",
            [],
            ["/c/Constant_output_0"],
            name="/c/Constant",
            value=onnx.numpy_helper.from_array(np.array(0.5, np.float32)),
        ),
        h.make_node("MatMul", ["x", "W1"], ["/l1/MatMul_output_0"], name="/l1/MatMul"),
        h.make_node("Relu", ["/l1/MatMul_output_0"], ["/l1/Relu_output_0"], name="/l1/Relu"),
        h.make_node(
            "Mul",
            ["/l1/Relu_output_0", "/c/Constant_output_0"],
            ["/l2/Mul_output_0"],
            name="/l2/Mul",
        ),
        h.make_node("Relu", ["/l2/Mul_output_0"], ["/l2/Relu_output_0"], name="/l2/Relu"),
        h.make_node("If", ["flag"], ["y"], name="/if/If", then_branch=then_g, else_branch=else_g),
    ]
    return make_model(
        nodes,
        [vi("x", T.FLOAT, [1, 8]), vi("flag", T.BOOL, [])],
        [vi("y", T.FLOAT, [1, 4])],
        {"W1": rng.standard_normal((8, 4)).astype(np.float32)},
        ir_version=8,
        opset=13,
    )


FEEDS = {
    "x": np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32),
    "flag": np.array(False),
}


def test_expose_by_glob_is_gated_typed_and_idempotent(tmp_path):
    model, report = surgery.apply(
        ir.from_proto(_model()),
        [Expose(tensors=["*/Relu_output_0"])],
        inputs=FEEDS,
        reproducer_dir=tmp_path / "r",
    )
    step = report.steps[0]
    assert step.modified and (step.checker, step.ort, step.parity_status) == ("ok", "ok", "ok")
    # subgraph tensors do not match: only main-graph tensors, in graph order, after the original output
    assert [v.name for v in model.graph.outputs] == ["y", "/l1/Relu_output_0", "/l2/Relu_output_0"]
    assert all(
        v.dtype == ir.DataType.FLOAT and list(v.shape) == [1, 4] for v in model.graph.outputs[1:]
    )
    out = ort_run(model, FEEDS)
    np.testing.assert_array_equal(out["y"], -out["/l2/Relu_output_0"])
    np.testing.assert_allclose(out["/l2/Relu_output_0"], out["/l1/Relu_output_0"] * 0.5)
    _, again = surgery.apply(
        model, [Expose(tensors=["*/Relu_output_0"])], inputs=FEEDS, reproducer_dir=tmp_path / "r2"
    )
    assert not again.steps[0].modified


def test_expose_by_name_and_constants_only_when_asked():
    model = ir.from_proto(_model())
    result = Expose(tensors=["/l2/Mul_output_0", "/c/*"], include_constants=True)(model)
    assert result.stats == {"exposed": 2, "already_outputs": 0}
    assert [v.name for v in model.graph.outputs] == [
        "y",
        "/c/Constant_output_0",
        "/l2/Mul_output_0",
    ]
    with pytest.raises(InputError, match=r"pattern '/c/\*' matches no tensor"):
        Expose(tensors=["/c/*"])(ir.from_proto(_model()))


def test_expose_refusals():
    with pytest.raises(
        InputError,
        match=r"tensor '/l2/Mull_output_0': no such tensor .*did you mean '/l2/Mul_output_0'",
    ):
        Expose(tensors=["/l2/Mull_output_0"])(ir.from_proto(_model()))
    with pytest.raises(InputError, match="exists only inside a subgraph"):
        Expose(tensors=["/if/then/Relu_output_0"])(ir.from_proto(_model()))
    with pytest.raises(InputError, match="'x' is a graph input"):
        Expose(tensors=["x"])(ir.from_proto(_model()))
    with pytest.raises(InputError, match="'W1' is an initializer"):
        Expose(tensors=["W1"])(ir.from_proto(_model()))
