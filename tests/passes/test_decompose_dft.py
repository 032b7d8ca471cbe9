"""decompose-dft: DFT as one MatMul, STFT as one Conv, matching ONNX Runtime's FFT."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import surgery
from surgery.doctor import diagnose, emit_pipeline
from surgery.passes.decompose_dft import DecomposeDft, dft_matrix
from surgery.testing import op_counts, ort_run, vi

RNG = np.random.default_rng(0)


def _model(node, inputs, inits, opset):
    graph = helper.make_graph(
        [node],
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TP.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 10
    return onnx.shape_inference.infer_shapes(proto)


def dft_model(shape, *, opset=17, axis=None, inverse=0, onesided=0, length=None):
    inputs, inits, attrs = ["x", ""], {}, {"inverse": inverse, "onesided": onesided}
    if length is not None:
        inputs[1] = "n"
        inits["n"] = np.array(length, np.int64)
    if opset >= 20:
        if axis is not None:
            inputs.append("axis")
            inits["axis"] = np.array(axis, np.int64)
    elif axis is not None:
        attrs["axis"] = axis
    while inputs[-1] == "":
        inputs.pop()
    node = helper.make_node("DFT", inputs, ["y"], name="dft", **attrs)
    return _model(node, [vi("x", TP.FLOAT, shape)], inits, opset)


def stft_model(
    length=64, channels=1, *, step=4, window="hann", frame_length=None, onesided=None, batch=2
):
    inputs, inits = ["x", "step", "", ""], {"step": np.array(step, np.int64)}
    graph_inputs = [vi("x", TP.FLOAT, [batch, length, channels])]
    if window == "hann":
        inputs[2] = "w"
        inits["w"] = np.hanning(16).astype(np.float32)
    elif window == "input":
        inputs[2] = "w"
        graph_inputs.append(vi("w", TP.FLOAT, [16]))
    if frame_length is not None:
        inputs[3] = "fl"
        inits["fl"] = np.array(frame_length, np.int64)
    while inputs[-1] == "":
        inputs.pop()
    attrs = {} if onesided is None else {"onesided": onesided}
    node = helper.make_node("STFT", inputs, ["y"], name="stft", **attrs)
    return _model(node, graph_inputs, inits, 17)


def check(proto, feeds, rule="decompose-dft"):
    expected = ort_run(proto, feeds)["y"]
    model = ir.from_proto(proto)
    result = DecomposeDft()(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    assert result.stats["by_rule"] == {rule: 1}, result.notes
    counts = op_counts(model)
    assert "DFT" not in counts and "STFT" not in counts
    got = ort_run(model, feeds)["y"]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    (out,) = model.graph.outputs
    assert out.dtype == ir.DataType.FLOAT and list(out.shape) == list(expected.shape)
    assert DecomposeDft()(model).modified is False
    return model


@pytest.mark.parametrize(
    "shape,kwargs",
    [
        ([2, 8, 10, 1], {}),  # defaults: axis 1, forward, two-sided, real
        ([2, 8, 10, 2], {}),  # complex input
        ([2, 8, 10, 1], {"onesided": 1}),
        ([2, 8, 10, 2], {"inverse": 1}),
        (
            [2, 8, 10, 1],
            {"axis": 2, "onesided": 1},
        ),  # already next to the complex axis: no Transpose
        ([2, 8, 10, 1], {"length": 12, "onesided": 1}),  # zero-padded
        ([2, 8, 10, 1], {"length": 6}),  # truncated
        ([3, 16, 1], {"axis": -2}),
        ([2, 8, 10, 1], {"opset": 20, "onesided": 1}),  # DFT-20: axis input, default -2
        ([2, 8, 10, 2], {"opset": 20, "axis": 1}),
    ],
)
def test_dft_matches_onnxruntime(shape, kwargs):
    model = check(dft_model(shape, **kwargs), {"x": RNG.standard_normal(shape).astype(np.float32)})
    assert op_counts(model)["MatMul"] == 1
    if (
        kwargs.get("axis") == 2
        or (kwargs.get("opset") == 20 and "axis" not in kwargs)
        or shape == [3, 16, 1]
    ):
        assert "Transpose" not in op_counts(model)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # defaults: onesided, hann window as a constant
        {"onesided": 0},
        {"channels": 2, "onesided": 0},  # complex signal
        {"window": None, "frame_length": 16, "step": 5},  # rectangular window
        {"frame_length": 16, "step": 8},
        {"window": "input"},  # a window given at run time
    ],
)
def test_stft_matches_onnxruntime(kwargs):
    channels = kwargs.get("channels", 1)
    feeds = {"x": RNG.standard_normal((2, 64, channels)).astype(np.float32)}
    if kwargs.get("window") == "input":
        feeds["w"] = np.hamming(16).astype(np.float32)
    model = check(stft_model(**kwargs), feeds, rule="decompose-stft")
    assert op_counts(model)["Conv"] == 1


def test_stft_with_a_dynamic_signal_length():
    proto = stft_model(length="samples", batch="batch")
    model = ir.from_proto(proto)
    DecomposeDft()(model)
    assert "STFT" not in op_counts(model)
    for n in (40, 97):
        feeds = {"x": RNG.standard_normal((1, n, 1)).astype(np.float32)}
        np.testing.assert_allclose(
            ort_run(model, feeds)["y"], ort_run(proto, feeds)["y"], rtol=1e-4, atol=1e-4
        )


def test_what_it_cannot_decompose_is_left_with_a_note():
    cases = [
        (dft_model([2, "n", 1]), "not static"),
        (dft_model([2, 8, 2], onesided=1), "onesided"),
        (stft_model(window=None), "frame_length"),
    ]
    for proto, reason in cases:
        model = ir.from_proto(proto)
        result = DecomposeDft()(model)
        assert not result.modified
        assert any(reason in note for note in result.notes), result.notes
    model = ir.from_proto(dft_model([2, 64, 1]))
    result = DecomposeDft(max_matrix_elements=100)(model)
    assert not result.modified and any("max_matrix_elements" in note for note in result.notes)


def test_dft_matrix_is_the_definition():
    x = RNG.standard_normal(12) + 1j * RNG.standard_normal(12)
    interleaved = np.stack([x.real, x.imag], -1).reshape(-1)
    out = (interleaved @ dft_matrix(12, 12, 12, True, False)).reshape(12, 2)
    np.testing.assert_allclose(out[:, 0] + 1j * out[:, 1], np.fft.fft(x), atol=1e-9)
    back = (interleaved @ dft_matrix(12, 12, 12, True, True)).reshape(12, 2)
    np.testing.assert_allclose(back[:, 0] + 1j * back[:, 1], np.fft.ifft(x), atol=1e-9)


def test_inside_an_if_branch():
    inner = stft_model()
    branch = helper.make_graph(
        list(inner.graph.node),
        "then",
        [],
        [vi("y", TP.FLOAT, [2, 13, 9, 2])],
        list(inner.graph.initializer),
    )
    other = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["z"])],
        "else",
        [],
        [vi("z", TP.FLOAT, [2, 13, 9, 2])],
        [numpy_helper.from_array(np.array([2, 13, 9, 2], np.int64), "shape")],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["out"], then_branch=branch, else_branch=other)],
        "g",
        [vi("x", TP.FLOAT, [2, 64, 1]), vi("c", TP.BOOL, [])],
        [vi("out", TP.FLOAT, [2, 13, 9, 2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 10
    feeds = {"x": RNG.standard_normal((2, 64, 1)).astype(np.float32), "c": np.array(True)}
    model = ir.from_proto(proto)
    assert DecomposeDft()(model).stats["rewritten"] == 1 and "STFT" not in op_counts(model)
    np.testing.assert_allclose(
        ort_run(model, feeds)["out"], ort_run(proto, feeds)["out"], rtol=1e-4, atol=1e-4
    )


def test_through_surgery_apply_and_the_doctor(tmp_path):
    """Before: the doctor flagged STFT/DFT with no fix. Now it points at decompose-dft, whose pipeline removes them."""
    proto = stft_model()
    report = diagnose(ir.from_proto(proto))
    (finding,) = [f for f in report.findings if "STFT" in f.title]
    assert finding.fix == ["decompose-dft"]
    emitted = emit_pipeline(report, ir.from_proto(proto))
    assert "decompose-dft" in emitted.steps
    path, toml = tmp_path / "stft.onnx", tmp_path / "passes.toml"
    onnx.save(proto, path)
    toml.write_text(emitted.text)
    _, applied = surgery.apply(path, toml, output=tmp_path / "out.onnx")
    step = next(s for s in applied.steps if s.name == "decompose-dft")
    assert step.parity_status == "ok" and step.checker == "ok", step
    assert "STFT" not in op_counts(ir.load(tmp_path / "out.onnx"))
    assert diagnose(tmp_path / "out.onnx").exit_code == 0


def test_stft_of_a_batch_length_signal_as_torch_exports_it():
    """torch.stft writes a [batch, length] signal, which ONNX Runtime reads as real."""
    inits = {"step": np.array(16, np.int64), "w": np.hanning(64).astype(np.float32)}
    node = helper.make_node("STFT", ["x", "step", "w"], ["y"], name="stft", onesided=1)
    proto = _model(node, [vi("x", TP.FLOAT, [1, 1024])], inits, 17)
    check(proto, {"x": RNG.standard_normal((1, 1024)).astype(np.float32)}, rule="decompose-stft")
