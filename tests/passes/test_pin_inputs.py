"""pin-inputs: scalars, arrays, .npz, dtype and shape checks, feed hints, idempotence, parity."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import InputError, PassError, PipelineError
from surgery.passes.pin_inputs import PinInputs
from surgery.testing import make_model, ort_run, vi


def rate_model():
    """out = x * (sr == 16000 ? 1 : 2) + bias[0:2] — a value-dependent branch on a scalar int64."""
    then_g = h.make_graph(
        [h.make_node("Identity", ["one"], ["f_then"], name="then/id")],
        "then",
        [],
        [vi("f_then", T.FLOAT, [])],
    )
    else_g = h.make_graph(
        [h.make_node("Identity", ["two"], ["f_else"], name="else/id")],
        "else",
        [],
        [vi("f_else", T.FLOAT, [])],
    )
    return make_model(
        [
            h.make_node("Equal", ["sr", "c16k"], ["is16"], name="is16"),
            h.make_node(
                "If", ["is16"], ["factor"], name="if_rate", then_branch=then_g, else_branch=else_g
            ),
            h.make_node("Mul", ["x", "factor"], ["xs"], name="scale"),
            h.make_node("Add", ["xs", "bias"], ["out"], name="bias_add"),
        ],
        [vi("x", T.FLOAT, ["n", 2]), vi("sr", T.INT64, []), vi("bias", T.FLOAT, [1, 2])],
        [vi("out", T.FLOAT, ["n", 2])],
        {
            "c16k": np.array(16000, np.int64),
            "one": np.array(1.0, np.float32),
            "two": np.array(2.0, np.float32),
        },
    )


def test_pins_scalar_and_array_with_the_input_dtype():
    proto = rate_model()
    model = ir.from_proto(proto)
    result = PinInputs(values={"sr": 8000, "bias": [[0.5, -1]]})(model)
    assert result.modified
    assert [v.name for v in model.graph.inputs] == ["x"]
    sr = model.graph.initializers["sr"].const_value.numpy()
    assert sr.dtype == np.int64 and sr.shape == () and sr == 8000
    bias = model.graph.initializers["bias"].const_value.numpy()
    assert bias.dtype == np.float32 and bias.shape == (1, 2)
    x = np.ones((3, 2), np.float32)
    got = ort_run(model, {"x": x})["out"]
    want = ort_run(
        proto, {"x": x, "sr": np.array(8000), "bias": np.array([[0.5, -1]], np.float32)}
    )["out"]
    np.testing.assert_array_equal(got, want)


def test_npz_values(tmp_path):
    np.savez(tmp_path / "pins.npz", sr=np.array(16000), bias=np.zeros((1, 2), np.float64))
    model = ir.from_proto(rate_model())
    PinInputs(npz=str(tmp_path / "pins.npz"))(model)
    assert model.graph.initializers["bias"].const_value.numpy().dtype == np.float32
    assert int(model.graph.initializers["sr"].const_value.numpy()) == 16000


def test_feed_hints_give_the_original_the_pinned_values():
    hints = PinInputs(values={"sr": 8000}).feed_hints(ir.from_proto(rate_model()))
    assert (
        list(hints.values) == ["sr"]
        and hints.values["sr"].dtype == np.int64
        and hints.values["sr"] == 8000
    )


def test_gated_run_feeds_the_pinned_value_to_the_original():
    # 8000 drives the else branch: parity passes only if the original is fed 8000 too
    _model, report = surgery.apply(rate_model(), [PinInputs(values={"sr": 8000})])
    assert report.inputs["sr"] == "pinned value"
    assert report.steps[0].parity_status == "ok"


def test_idempotent_and_conflicting_second_pin():
    model = ir.from_proto(rate_model())
    PinInputs(values={"sr": 16000})(model)
    assert not PinInputs(values={"sr": 16000})(model).modified
    with pytest.raises(PassError, match="already a constant with another value"):
        PinInputs(values={"sr": 8000})(model)


def test_unknown_input():
    with pytest.raises(InputError, match=r"no input 'rate'.*inputs are: x, sr, bias"):
        PinInputs(values={"rate": 1})(ir.from_proto(rate_model()))


def test_fractional_value_for_integer_input():
    with pytest.raises(PassError, match="not whole"):
        PinInputs(values={"sr": 16000.5})(ir.from_proto(rate_model()))


def test_shape_mismatch():
    with pytest.raises(PassError, match=r"input 'bias' dim 1 is 2; the value has 3 there"):
        PinInputs(values={"bias": [[1, 2, 3]]})(ir.from_proto(rate_model()))
    with pytest.raises(PassError, match=r"input 'sr' has rank 0"):
        PinInputs(values={"sr": [1, 2]})(ir.from_proto(rate_model()))


def test_bad_options():
    with pytest.raises(PipelineError, match="nothing to pin"):
        PinInputs()
    with pytest.raises(PipelineError, match="must be a number"):
        PinInputs(values={"sr": "fast"})
    with pytest.raises(InputError, match=r"no such \.npz"):
        PinInputs(npz="/nonexistent/pins.npz")(ir.from_proto(rate_model()))
