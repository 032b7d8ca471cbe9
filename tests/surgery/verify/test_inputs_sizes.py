"""Generated inputs the model can take: sizes its ops need, audio-like lengths, sizes checked before allocating, low-precision dtypes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import InputError
from surgery.pass_base import FeedHints
from surgery.registry import get
from surgery.testing import make_model, ort_run, vi
from surgery.verify.inputs import InputsConfig, InputSpec, plan_inputs


def _plan(proto, config: InputsConfig | None = None, **kwargs):
    return plan_inputs(ir.from_proto(proto), config or InputsConfig(), FeedHints(), **kwargs)


def _stft(signal_shape: list, name: str = "x") -> object:
    window = np.hanning(400).astype(np.float32)
    nodes = [
        h.make_node("Unsqueeze", [name, "axes"], ["u"], name="unsq"),
        h.make_node("STFT", ["u", "step", "window"], ["spec"], name="stft"),
    ]
    return make_model(
        nodes,
        [vi(name, T.FLOAT, signal_shape)],
        [vi("spec", T.FLOAT, ["b", "frames", "bins", 2])],
        {"axes": np.array([-1], np.int64), "step": np.array(160, np.int64), "window": window},
    )


def test_audio_input_defaults_to_a_realistic_length_and_runs():
    model = _stft(["batch", "samples"], name="waveform")
    plan = _plan(model)
    assert plan.feeds["waveform"].shape == (2, 16000)
    assert "audio-like" in plan.provenance["waveform"]
    out = ort_run(model, plan.feeds)["spec"]
    assert out.shape[1] == (16000 - 400) // 160 + 1
    _, report = surgery.apply(model, [get("cleanup")()])
    assert report.steps[0].parity_status in ("ok", "unchanged")


def test_stft_frame_is_a_lower_bound_even_on_the_ones_retry():
    plan = _plan(_stft(["batch", "n"]), ones=True)
    assert plan.feeds["x"].shape == (1, 400)
    assert "needs at least 400" in plan.provenance["x"]
    ort_run(_stft(["batch", "n"]), plan.feeds)


def test_conv_kernel_bounds_the_length_through_a_conv_chain():
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", dilations=[2]),
        h.make_node("Relu", ["c1"], ["r"], name="relu"),
        h.make_node("Conv", ["r", "w2"], ["y"], name="conv2", strides=[2]),
    ]
    model = make_model(
        nodes,
        [vi("x", T.FLOAT, [1, 4, "t"])],
        [vi("y", T.FLOAT, [1, 2, "ty"])],
        {
            "w1": rng.standard_normal((4, 4, 11)).astype(np.float32),
            "w2": rng.standard_normal((2, 4, 5)).astype(np.float32),
        },
    )
    plan = _plan(model)
    # conv2 needs 5, so conv1 must output 5: 4 + (11 - 1) * 2 + 1 = 25
    assert plan.feeds["x"].shape == (1, 4, 25)
    assert ort_run(model, plan.feeds)["y"].shape == (1, 2, 1)


def test_reflect_pad_and_slice_bounds():
    nodes = [
        h.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="reflect"),
        h.make_node("Slice", ["p", "starts", "ends", "axes"], ["y"], name="slice"),
    ]
    model = make_model(
        nodes,
        [vi("x", T.FLOAT, [1, "t"])],
        [vi("y", T.FLOAT, [1, "ty"])],
        {
            "pads": np.array([0, 20, 0, 20], np.int64),
            "starts": np.array([30], np.int64),
            "ends": np.array([70], np.int64),
            "axes": np.array([1], np.int64),
        },
    )
    plan = _plan(model)
    # reflect needs t > 20; the slice needs 70 after padding 40: t >= 30
    assert plan.feeds["x"].shape == (1, 30)
    assert ort_run(model, plan.feeds)["y"].shape == (1, 40)


def test_a_named_dim_gets_one_size_across_inputs():
    nodes = [
        h.make_node("Add", ["a", "b"], ["s"], name="add"),
        h.make_node("Slice", ["s", "starts", "ends", "axes"], ["y"], name="slice"),
    ]
    model = make_model(
        nodes,
        [vi("a", T.FLOAT, [1, "n"]), vi("b", T.FLOAT, [1, "n"])],
        [vi("y", T.FLOAT, [1, "ny"])],
        {
            "starts": np.array([0], np.int64),
            "ends": np.array([12], np.int64),
            "axes": np.array([1], np.int64),
        },
    )
    plan = _plan(model)
    assert plan.feeds["a"].shape == plan.feeds["b"].shape == (1, 12)


def test_minus_one_dims_are_symbolic():
    model = ir.from_proto(
        make_model(
            [h.make_node("Relu", ["x"], ["y"], name="relu")],
            [vi("x", T.FLOAT, [2, 3])],
            [vi("y", T.FLOAT, [2, 3])],
        )
    )
    model.graph.inputs[0].shape = ir.Shape([-1, 3])  # as Paddle writes an unknown dim
    plan = plan_inputs(model, InputsConfig(), FeedHints())
    assert plan.feeds["x"].shape == (2, 3)


@pytest.mark.parametrize("shape", [[2**40], [1 << 20, 1 << 20, 16]], ids=["2^40", "64TiB"])
def test_huge_declared_shape_is_refused_before_allocating(shape):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="relu")],
        [vi("x", T.FLOAT, ["n"] * len(shape))],
        [vi("y", T.FLOAT, ["n"] * len(shape))],
    )
    config = InputsConfig(specs={"x": InputSpec(shape=tuple(shape))})
    with pytest.raises(InputError, match=r"input 'x': shape .* float32 needs \d+ bytes"):
        _plan(model, config)
    with pytest.raises(InputError, match="input 'x'"):
        surgery.apply(
            model,
            surgery.pipeline.Pipeline([surgery.pipeline.Step(get("cleanup")())], inputs=config),
        )


def test_huge_static_dim_and_negative_declared_dim_are_refused():
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="relu")],
        [vi("x", T.FLOAT, [2**40])],
        [vi("y", T.FLOAT, [2**40])],
    )
    with pytest.raises(InputError, match=r"needs 4398046511104 bytes"):
        _plan(model)
    small = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="relu")],
        [vi("x", T.FLOAT, ["n"])],
        [vi("y", T.FLOAT, ["n"])],
    )
    with pytest.raises(InputError, match="negative dimension"):
        _plan(small, InputsConfig(specs={"x": InputSpec(shape=(-4,))}))


@pytest.mark.parametrize(
    ("elem", "dtype"),
    [
        (T.BFLOAT16, ml_dtypes.bfloat16),
        (T.FLOAT8E4M3FN, ml_dtypes.float8_e4m3fn),
        (T.INT4, ml_dtypes.int4),
        (T.UINT4, ml_dtypes.uint4),
    ],
    ids=["bfloat16", "float8e4m3fn", "int4", "uint4"],
)
def test_low_precision_inputs_are_generated_and_fed(elem, dtype):
    nodes = [
        h.make_node("Cast", ["x"], ["f"], to=T.FLOAT, name="cast"),
        h.make_node("Relu", ["f"], ["y"], name="relu"),
    ]
    model = make_model(
        nodes,
        [vi("x", elem, ["batch", 6])],
        [vi("y", T.FLOAT, ["batch", 6])],
        opset=21,
        ir_version=10,
    )
    plan = _plan(model)
    x = plan.feeds["x"]
    assert x.dtype == np.dtype(dtype) and x.shape == (2, 6)
    if elem in (T.INT4, T.UINT4):
        assert x.astype(np.int32).min() >= 0 and x.astype(np.int32).max() < 8 + 2 * (
            elem == T.UINT4
        )
    _, report = surgery.apply(model, [get("cleanup")()])
    assert report.oracle == "onnxruntime"
    assert np.dtype(dtype).name in report.inputs["x"]
