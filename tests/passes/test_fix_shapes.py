"""fix-shapes: every accepted syntax, dim bindings (named, axis, -1/?), errors, hints, idempotence."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.errors import InputError, PassError, PipelineError
from surgery.passes.fix_shapes import FixShapes
from surgery.shapes.spec import format_atc_shapes, parse_bucket_spec, parse_shapes
from surgery.testing import make_model, ort_run, vi


def two_input_model(x_shape=("batch", 3, "h", "w"), y_shape=("batch", 10)):
    """x [batch,3,h,w] → ReduceMean → [batch,3]; y [batch,10]; a scalar 's' scales the sum."""
    return make_model(
        [
            h.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0, name="pool"),
            h.make_node("MatMul", ["m", "W"], ["p"], name="proj"),
            h.make_node("Add", ["p", "y"], ["q"], name="add"),
            h.make_node("Mul", ["q", "s"], ["out"], name="scale"),
        ],
        [vi("x", T.FLOAT, list(x_shape)), vi("y", T.FLOAT, list(y_shape)), vi("s", T.FLOAT, [])],
        [vi("out", T.FLOAT, ["batch", 10])],
        {"W": np.arange(30, dtype=np.float32).reshape(3, 10) / 30},
    )


def _shapes(model: ir.Model) -> dict[str, list]:
    return {
        v.name: [d if isinstance(d, int) else d.value for d in v.shape] for v in model.graph.inputs
    }


@pytest.mark.parametrize(
    "spec",
    [
        "x:2,3,8,8;y:2,10;s:",  # ATC, scalar as 's:'
        "x:2,3,8,8 y:2,10 s:",  # onnxsim, several args
        "x:[2,3,8,8] y:[2,10] s:[]",  # Polygraphy
        {"x": [2, 3, 8, 8], "y": [2, 10], "s": []},  # TOML table
    ],
)
def test_every_syntax_fixes_every_input(spec):
    model = ir.from_proto(two_input_model())
    result = FixShapes(shapes=spec)(model)
    assert result.modified
    assert _shapes(model) == {"x": [2, 3, 8, 8], "y": [2, 10], "s": []}
    assert result.stats["dims_bound"] == {"batch": 2, "h": 8, "w": 8}
    # the bound name is substituted in annotations too: the output now says 2, not 'batch'
    assert list(model.graph.outputs[0].shape) == [2, 10]


def test_dim_bindings_reach_every_input_carrying_the_name():
    model = ir.from_proto(two_input_model())
    FixShapes(dims={"batch": 4, "h": 16, "w": 16})(model)
    assert _shapes(model) == {"x": [4, 3, 16, 16], "y": [4, 10], "s": []}


def test_binding_through_one_input_reaches_the_others():
    model = ir.from_proto(two_input_model())
    hints = FixShapes(shapes="x:5,3,7,7").feed_hints(model)
    FixShapes(shapes="x:5,3,7,7")(model)
    assert _shapes(model)["y"] == [5, 10]  # y shares 'batch' with x
    assert hints.shapes == {"x": (5, 3, 7, 7), "y": (5, 10), "s": ()}
    assert hints.dims == {"batch": 5, "h": 7, "w": 7}


def test_unnamed_and_minus_one_dims_via_input_axis_keys():
    # Paddle-style: -1 batch, '?' spatial dims: no names to bind, so address them through the input
    model = ir.from_proto(two_input_model(x_shape=(-1, 3, "?", "?"), y_shape=(-1, 10)))
    FixShapes(dims={"x[0]": 1, "x[2]": 32, "x[-1]": 24, "y[0]": 1})(model)
    assert _shapes(model)["x"] == [1, 3, 32, 24]
    assert _shapes(model)["y"] == [1, 10]
    # '?' is not a name: binding x[2] must not leak into x[3]
    model = ir.from_proto(two_input_model(x_shape=(-1, 3, "?", "?")))
    FixShapes(dims={"x[2]": 32})(model)
    assert _shapes(model)["x"][2:] == [32, "?"]


def test_minus_one_in_spec_keeps_the_dim():
    model = ir.from_proto(two_input_model())
    FixShapes(shapes="x:1,3,-1,-1")(model)
    assert _shapes(model)["x"] == [1, 3, "h", "w"]


def test_dynamo_expression_dims_are_evaluated():
    model = ir.from_proto(two_input_model())
    # what torch's dynamo exporter writes for intermediate tensors
    model.graph.node(0).outputs[0].shape = ir.Shape(
        ["batch", ir.SymbolicDim("3*((((h - 1)//8)) + 1)")]
    )
    FixShapes(dims={"batch": 2, "h": 17, "w": 17})(model)
    assert list(model.graph.node(0).outputs[0].shape) == [2, 9]


def test_unknown_input_lists_the_real_ones():
    with pytest.raises(InputError, match=r"no input 'image'.*inputs are: x, y, s"):
        FixShapes(shapes="image:1,3,8,8")(ir.from_proto(two_input_model()))


def test_rank_mismatch():
    with pytest.raises(PassError, match=r"input 'x' has rank 4.*rank 3"):
        FixShapes(shapes="x:1,3,8")(ir.from_proto(two_input_model()))


def test_contradicting_a_fixed_dim():
    with pytest.raises(PassError, match=r"input 'x' dim 1 is fixed to 3; the spec asks for 4"):
        FixShapes(shapes="x:1,4,8,8")(ir.from_proto(two_input_model()))


def test_one_name_bound_to_two_sizes():
    with pytest.raises(PassError, match=r"dim 'batch' is bound to 1 and to 2"):
        FixShapes(shapes="x:1,3,8,8;y:2,10")(ir.from_proto(two_input_model()))


def test_unknown_dim_name_lists_known_names():
    with pytest.raises(InputError, match=r"no input has a dim named 'btach'.*batch, h, w"):
        FixShapes(dims={"btach": 1})(ir.from_proto(two_input_model()))


@pytest.mark.parametrize("bad", ["x", "x:1,a,3", "x:1,,3;", "x:-2,3"])
def test_malformed_specs_are_pipeline_errors(bad):
    with pytest.raises(PipelineError):
        FixShapes(shapes=bad)


def test_nothing_to_fix_is_an_error():
    with pytest.raises(PipelineError, match="nothing to fix"):
        FixShapes()


def test_idempotent_and_outputs_unchanged():
    proto = two_input_model()
    model = ir.from_proto(proto)
    FixShapes(shapes="x:2,3,8,8;y:2,10;s:")(model)
    assert not FixShapes(shapes="x:2,3,8,8;y:2,10;s:")(model).modified
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.random((2, 3, 8, 8), np.float32),
        "y": rng.random((2, 10), np.float32),
        "s": np.array(2.0, np.float32),
    }
    np.testing.assert_allclose(
        ort_run(model, feeds)["out"], ort_run(proto, feeds)["out"], rtol=1e-6
    )


def test_spec_helpers():
    assert parse_shapes("input:0:1,3;b:") == {"input:0": (1, 3), "b": ()}
    assert format_atc_shapes({"x": (1, 3, 224, 224), "s": ()}) == "x:1,3,224,224;s:"
    assert parse_bucket_spec("batch=1,4,8") == {"batch": (1, 4, 8)}
    with pytest.raises(PipelineError):
        parse_bucket_spec("batch=1,4;seq=8")
