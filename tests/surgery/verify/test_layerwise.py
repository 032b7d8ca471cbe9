"""Layerwise comparison: streamed, matched by name and rename maps, first divergence explained."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.errors import InputError
from surgery.partition import split
from surgery.pass_base import Tolerance
from surgery.testing import make_model, vi
from surgery.verify.layerwise import (
    compare_layerwise,
    divergence_message,
    first_divergence,
    resolve_renames,
    run_exposing,
)

TOL = Tolerance(1e-4, 1e-5)


def _net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node(
            "Conv", ["images", "c1.w"], ["/c1/Conv_output_0"], name="/c1/Conv", pads=[1, 1, 1, 1]
        ),
        h.make_node("Relu", ["/c1/Conv_output_0"], ["/c1/Relu_output_0"], name="/c1/Relu"),
        h.make_node("Conv", ["/c1/Relu_output_0", "c2.w"], ["/c2/Conv_output_0"], name="/c2/Conv"),
        h.make_node("Relu", ["/c2/Conv_output_0"], ["/c2/Relu_output_0"], name="/c2/Relu"),
        h.make_node("GlobalAveragePool", ["/c2/Relu_output_0"], ["/pool/Out"], name="/pool/GAP"),
        h.make_node("Flatten", ["/pool/Out"], ["/flat/Out"], name="/flat/Flatten"),
        h.make_node("Gemm", ["/flat/Out", "fc.w"], ["logits"], name="/fc/Gemm", transB=1),
    ]
    inits = {
        "c1.w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "c2.w": rng.standard_normal((8, 8, 3, 3)).astype(np.float32),
        "fc.w": rng.standard_normal((4, 8)).astype(np.float32),
    }
    return make_model(
        nodes,
        [vi("images", T.FLOAT, [1, 3, 12, 12])],
        [vi("logits", T.FLOAT, [1, 4])],
        inits,
        ir_version=8,
    )


FEEDS = {"images": np.random.default_rng(1).standard_normal((1, 3, 12, 12)).astype(np.float32)}
NAMES = [
    "/c1/Conv_output_0",
    "/c1/Relu_output_0",
    "/c2/Conv_output_0",
    "/c2/Relu_output_0",
    "/pool/Out",
    "/flat/Out",
    "logits",
]


def _perturbed_conv() -> ir.Model:
    model = ir.from_proto(_net())
    value = model.graph.initializers["c2.w"]
    w = value.const_value.numpy().copy()
    w[3, 2, 1, 1] += 0.5
    value.const_value = ir.tensor(w, name="c2.w")
    return model


def test_identical_models_compare_clean():
    report = compare_layerwise(ir.from_proto(_net()), ir.from_proto(_net()), FEEDS, TOL)
    assert report.ok and [c.name for c in report.compared] == NAMES
    assert all(
        c.diff.max_abs == 0.0 and c.diff.cosine == pytest.approx(1.0) for c in report.compared
    )
    assert report.runs == 1 and not report.only_in_reference and not report.only_in_candidate
    assert report.compared[2].shape == [1, 8, 10, 10] and report.compared[2].op_type == "Conv"


def test_perturbed_conv_weight_is_the_first_divergence():
    original = ir.from_proto(_net())
    seen: list[str] = []
    report = compare_layerwise(
        original, _perturbed_conv(), FEEDS, TOL, on_result=lambda c: seen.append(c.name)
    )
    assert seen == NAMES  # streamed in topological order
    assert [c.ok for c in report.compared[:2]] == [True, True]
    assert (
        report.first is not None
        and report.first.name == "/c2/Conv_output_0"
        and report.first.node == "/c2/Conv"
    )
    assert (
        report.suspects == [report.suspects[0]]
        and "initializer input 'c2.w' differs" in report.suspects[0]
    )
    text = report.first_text()
    assert (
        text.startswith("first divergent tensor: '/c2/Conv_output_0' (output of Conv '/c2/Conv')")
        and "c2.w" in text
    )
    assert first_divergence(original, _perturbed_conv(), FEEDS, TOL) == "/c2/Conv_output_0"
    assert "c2.w" in divergence_message(original, _perturbed_conv(), FEEDS, TOL)
    assert first_divergence(original, ir.from_proto(_net()), FEEDS, TOL) is None
    # loose enough a tolerance, nothing diverges
    assert compare_layerwise(original, _perturbed_conv(), FEEDS, Tolerance(10.0, 10.0)).ok


def test_a_node_that_computes_differently_is_named_with_matching_inputs():
    model = ir.from_proto(_net())
    node = next(n for n in model.graph if n.name == "/c2/Relu")
    node.op_type = "Sigmoid"
    report = compare_layerwise(ir.from_proto(_net()), model, FEEDS, TOL)
    assert report.first.name == "/c2/Relu_output_0"
    assert report.suspects == [
        "its inputs match the reference, so Sigmoid '/c2/Relu' itself computes differently"
    ]


def test_renamed_tensors_match_through_the_map_and_one_sided_ones_are_listed():
    model = ir.from_proto(_net())
    relu = next(n for n in model.graph if n.name == "/c1/Relu")
    relu.outputs[0].name = "relu1"
    plain = compare_layerwise(ir.from_proto(_net()), model, FEEDS, TOL)
    assert plain.only_in_reference == ["/c1/Relu_output_0"] and plain.only_in_candidate == ["relu1"]
    assert "1 tensors only in the reference: '/c1/Relu_output_0'" in plain.summary()
    mapped = compare_layerwise(
        ir.from_proto(_net()),
        model,
        FEEDS,
        TOL,
        renamed=[{"/c1/Relu_output_0": "tmp"}, {"tmp": "relu1"}],
    )
    assert mapped.ok and len(mapped.compared) == 7 and mapped.compared[1].candidate_name == "relu1"
    assert resolve_renames({"a": "b", "b": "c", "c": "c"})("a") == "c"


def test_streaming_in_small_chunks_gives_the_same_statistics():
    whole = compare_layerwise(ir.from_proto(_net()), _perturbed_conv(), FEEDS, TOL)
    # without shapes in the model: a first chunk of a few tensors, then chunks sized by what was fetched
    chunked = compare_layerwise(
        ir.from_proto(_net()), _perturbed_conv(), FEEDS, TOL, budget_bytes=1
    )
    assert [c.to_dict() for c in chunked.compared] == [c.to_dict() for c in whole.compared]
    # with shapes in the model (value_info): every chunk fits the budget from the start
    typed = onnx.shape_inference.infer_shapes(_net())
    perturbed = _perturbed_conv()
    perturbed_typed = ir.from_proto(onnx.shape_inference.infer_shapes(ir.to_proto(perturbed)))
    per_tensor = compare_layerwise(
        ir.from_proto(typed), perturbed_typed, FEEDS, TOL, budget_bytes=1
    )
    assert per_tensor.runs == 7 and whole.runs == 1
    assert [c.to_dict() for c in per_tensor.compared] == [c.to_dict() for c in whole.compared]
    two_convs = 2 * 4 * (8 * 12 * 12 + 8 * 12 * 12)  # both sides of the first two tensors
    assert (
        compare_layerwise(
            ir.from_proto(typed), perturbed_typed, FEEDS, TOL, budget_bytes=two_convs
        ).runs
        < 7
    )


def test_stop_at_first_ends_with_the_chunk_that_diverges():
    typed = ir.from_proto(onnx.shape_inference.infer_shapes(_net()))
    perturbed = ir.from_proto(onnx.shape_inference.infer_shapes(ir.to_proto(_perturbed_conv())))
    report = compare_layerwise(typed, perturbed, FEEDS, TOL, budget_bytes=1, stop_at_first=True)
    assert (
        report.first.name == "/c2/Conv_output_0"
        and len(report.compared) == 3
        and report.stopped_early
    )


def test_chains_compare_a_split_model_with_the_original():
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["feat"], name="mm"),
        h.make_node("Sigmoid", ["feat"], ["scores"], name="sig"),
        h.make_node("Greater", ["scores", "thr"], ["mask"], name="gt"),
        h.make_node("NonZero", ["mask"], ["nz"], name="nz"),
        h.make_node("ReduceSum", ["nz"], ["y"], name="sum", keepdims=0),
    ]
    proto = make_model(
        nodes,
        [vi("x", T.FLOAT, [1, 8])],
        [vi("y", T.INT64, [])],
        {"W": rng.standard_normal((8, 6)).astype(np.float32), "thr": np.array(0.5, np.float32)},
    )
    model = ir.from_proto(proto)
    parts = split(model)
    feeds = {"x": rng.standard_normal((1, 8)).astype(np.float32)}
    report = compare_layerwise(model, [parts.head, parts.tail], feeds, Tolerance(0.0, 0.0))
    assert report.ok and [c.name for c in report.compared] == ["feat", "scores", "mask", "nz", "y"]
    values = run_exposing([parts.head, parts.tail], feeds, ["x", "mask", "nz", "y", "thr"])
    assert (
        values["nz"].shape[0] == 2
        and values["y"] == values["nz"].sum()
        and values["thr"] == np.float32(0.5)
    )
    with pytest.raises(InputError, match="tensors not found in the model: 'nope'"):
        run_exposing(model, feeds, ["nope"])
