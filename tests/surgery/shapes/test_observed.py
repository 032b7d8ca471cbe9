"""Shapes that contradict execution: onnx 1.23's STFT inference ignores the default ``onesided=1``.

It promises ``n_fft`` = 512 bins where ONNX Runtime (and the spec) compute 257. Before: a model
that runs got 512-bin shapes written by ``make-static`` (the gates did not notice: ORT runs it
anyway); once the true shapes are annotated the checker's strict inference rejects it.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.instruments import checker
from surgery.model_io import LightProto
from surgery.passes.assert_static import AssertStatic
from surgery.passes.fix_shapes import FixShapes
from surgery.passes.make_static import MakeStatic
from surgery.shapes.dims import is_static_shape
from surgery.shapes.infer import OBSERVED_KEY, clear_shapes, refresh_shapes
from surgery.shapes.observed import (
    contradiction_notes,
    contradictions,
    correct_observed_shapes,
    observe_shapes,
    only_tolerated_errors,
    tolerated_nodes,
)
from surgery.testing import make_model, vi

N_FFT, HOP, SAMPLES = 512, 160, 16000
FRAMES = 1 + (SAMPLES - N_FFT) // HOP  # 97
BINS = N_FFT // 2 + 1  # 257 with the default onesided=1


def stft_model(samples: int | str = SAMPLES) -> onnx.ModelProto:
    """A power spectrogram, opset 17, ``onesided`` left at its default; outputs exported with symbolic dims."""
    nodes = [
        h.make_node("STFT", ["signal", "step", "window", ""], ["spec"], name="stft"),
        h.make_node("ReduceSumSquare", ["spec"], ["power"], axes=[3], keepdims=0, name="power"),
        h.make_node("Log", ["power"], ["logpow"], name="log"),
        h.make_node("Identity", ["logpow"], ["features"], name="out"),
    ]
    return make_model(
        nodes,
        [vi("signal", T.FLOAT, [1, samples, 1])],
        [vi("features", T.FLOAT, [1, "frames", "bins"])],
        {"step": np.array(HOP, np.int64), "window": np.hanning(N_FFT).astype(np.float32)},
    )


def _feeds() -> dict[str, np.ndarray]:
    return {"signal": np.random.default_rng(0).uniform(-1, 1, (1, SAMPLES, 1)).astype(np.float32)}


def test_onnx_inference_of_stft_is_wrong_here():
    """The premise: if onnx fixes its STFT inference, this test says so (and the others still hold)."""
    inferred = onnx.shape_inference.infer_shapes(stft_model())
    spec = next(v for v in inferred.graph.value_info if v.name == "spec")
    assert [d.dim_value for d in spec.type.tensor_type.shape.dim] == [1, FRAMES, N_FFT, 2]


def test_contradictions_name_the_op_at_fault_and_its_consequences():
    model = ir.from_proto(stft_model())
    observed = observe_shapes(model, _feeds())
    assert observed["spec"] == (1, FRAMES, BINS, 2) and observed["features"] == (1, FRAMES, BINS)
    notes = correct_observed_shapes(model, _feeds())
    found = contradictions(model)
    roots = [c for c in found if c.root]
    assert [(c.op_type, c.node, c.value, c.inferred) for c in roots] == [
        ("STFT", "stft", "spec", "[1, 97, 512, 2]")
    ]
    assert {c.value for c in found if not c.root} == {"power", "logpow", "features"}
    assert notes[0] == (
        "onnx shape inference of STFT 'stft' is wrong: it gives 'spec' [1, 97, 512, 2], "
        "ONNX Runtime computes [1, 97, 257, 2]; the observed shape is used"
    )
    assert "3 tensor(s) downstream" in notes[1] and contradiction_notes(model) == []  # said once
    spec = model.graph.node("stft").outputs[0]
    assert list(spec.shape) == [1, FRAMES, BINS, 2] and list(model.graph.outputs[0].shape) == [
        1,
        FRAMES,
        BINS,
    ]
    clear_shapes(model)
    refresh_shapes(model)  # later inference from scratch does not bring 512 back
    assert list(spec.shape) == [1, FRAMES, BINS, 2] and list(model.graph.outputs[0].shape) == [
        1,
        FRAMES,
        BINS,
    ]
    assert tolerated_nodes(model) == {"stft"}


def test_symbolic_dims_are_not_made_static_from_one_sample():
    model = ir.from_proto(stft_model("samples"))
    correct_observed_shapes(model, _feeds())
    assert OBSERVED_KEY in model.graph.node("stft").outputs[0].meta
    assert not is_static_shape(model.graph.outputs[0].shape)  # frames stay dynamic


def test_checker_tolerates_exactly_the_contradicted_op():
    model = ir.from_proto(stft_model())
    correct_observed_shapes(model, _feeds())
    light = LightProto(model)
    strict = checker.check(light, full=True)
    assert not strict and "op_type:STFT, node name: stft" in strict.message
    assert checker.check(light, full=True, tolerate=tolerated_nodes(model))
    # another node's inference error is never tolerated
    model.graph.outputs[0].shape = ir.Shape([1, FRAMES, 3])
    assert not checker.check(LightProto(model), full=True, tolerate=tolerated_nodes(model))


def test_only_tolerated_errors_parses_onnx_messages():
    one = (
        "[ShapeInferenceError] Inference error(s): (op_type:STFT, node name: stft): [ShapeInferenceError] "
        "Inferred shape and existing shape differ in dimension 2: (512) vs (257)"
    )
    two = (
        one
        + "\n(op_type:Relu, node name: relu): [ShapeInferenceError] Inferred shape and existing shape differ"
    )
    assert only_tolerated_errors(one, {"stft"})
    assert not only_tolerated_errors(two, {"stft"}) and not only_tolerated_errors(one, set())
    assert not only_tolerated_errors("Field 'shape' of 'type' is required but missing.", {"stft"})


@pytest.mark.parametrize("checker_mode", ["each", "off"])
def test_make_static_writes_the_shapes_execution_gives(checker_mode):
    # before: make-static wrote 512 bins (spec [1, 97, 512, 2], features [1, 97, 512])
    proto = stft_model(
        "samples"
    )  # a dynamic length, as exported: the frames are symbolic, the bins are not
    model, report = surgery.apply(
        ir.from_proto(proto),
        [FixShapes(shapes={"signal": [1, SAMPLES, 1]}), MakeStatic(), AssertStatic()],
        inputs=_feeds(),
        verify={"checker": checker_mode},
    )
    assert report.ok, report.error
    assert list(model.graph.outputs[0].shape) == [1, FRAMES, BINS]
    assert list(model.graph.node("stft").outputs[0].shape) == [1, FRAMES, BINS, 2]
    notes = report.notes + [n for step in report.steps for n in step.notes]
    assert sum("onnx shape inference of STFT 'stft' is wrong" in n for n in notes) == 1, notes
    first = report.steps[0]
    assert first.modified and first.checker == ("ok" if checker_mode == "each" else "off"), first
    assert first.parity_status == "ok"


def test_make_static_itself_never_writes_a_contradicted_shape():
    """From scratch (every shape cleared, re-inferred, folded), make-static keeps the observed bins."""
    model = ir.from_proto(stft_model("samples"))
    correct_observed_shapes(model, _feeds())
    FixShapes(shapes={"signal": [1, SAMPLES, 1]})(model)
    MakeStatic()(model)
    assert list(model.graph.node("stft").outputs[0].shape) == [1, FRAMES, BINS, 2]
    assert list(model.graph.outputs[0].shape) == [1, FRAMES, BINS]
    AssertStatic()(model)


def _wrongly_declared_output() -> onnx.ModelProto:
    """ddddocr's common.onnx in small: a Reshape whose graph output is declared [1, seqlen] (rank 2),
    while the model computes a rank-3 tensor (ORT warns "Expected shape from model of {1,-1} does
    not match actual shape"). onnx's inference agrees with execution; the annotation is what is wrong."""
    nodes = [
        h.make_node("Shape", ["x"], ["shp"], name="shape"),
        h.make_node("Gather", ["shp", "i3"], ["w0"], name="width", axis=0),
        h.make_node(
            "Unsqueeze", ["w0"], ["w"], name="unsqueeze", axes=[0]
        ),  # opset 12: the length is lost
        h.make_node("Concat", ["w", "one", "eight"], ["target"], name="target", axis=0),
        h.make_node("Reshape", ["x", "target"], ["y"], name="reshape"),
    ]
    return make_model(
        nodes,
        [vi("x", T.FLOAT, [1, 1, 8, "width"])],
        [vi("y", T.FLOAT, [1, "seqlen"])],
        {
            "i3": np.array(3, np.int64),
            "one": np.array([1], np.int64),
            "eight": np.array([8], np.int64),
        },
        opset=12,
        ir_version=7,
    )


def test_a_declared_output_shape_execution_contradicts_is_replaced_not_held_against_passes():
    """Before: fix-shapes failed with "signature gate: output 'y': rank 2 -> 3, not declared by the pass"."""
    model = ir.from_proto(_wrongly_declared_output())
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 1, 8, 16)).astype(np.float32)}
    out, report = surgery.apply(
        model, [FixShapes(shapes={"x": [1, 1, 8, 16]}), MakeStatic()], inputs=feeds
    )
    assert list(out.graph.outputs[0].shape) == [16, 1, 8]
    assert any(
        "output 'y'" in n and "declares [1, seqlen]" in n and "[16, 1, 8]" in n
        for n in report.notes
    ), report.notes


def test_correct_observed_shapes_fixes_the_declared_rank():
    model = ir.from_proto(_wrongly_declared_output())
    feeds = {"x": np.zeros((1, 1, 8, 5), np.float32)}
    notes = correct_observed_shapes(model, feeds)
    shape = model.graph.outputs[0].shape
    assert (
        shape is not None and len(shape) == 3
    )  # the rank execution gives; sizes left to inference
    assert any("declares [1, seqlen]" in n and "computes [5, 1, 8]" in n for n in notes)
