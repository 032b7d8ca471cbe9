"""simplify: onnxsim folding, gated; refused when it bloats tied weights (pitfall 13)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import PassError
from surgery.passes.simplify import Simplify
from surgery.testing import make_model, op_counts, vi


def _foldable():
    # a Shape→Gather→Unsqueeze→Concat→Reshape chain on a static input, plus constant arithmetic
    nodes = [
        h.make_node("Shape", ["x"], ["shape"], name="/Shape"),
        h.make_node("Gather", ["shape", "zero"], ["b"], name="/Gather", axis=0),
        h.make_node("Unsqueeze", ["b", "axes"], ["b1"], name="/Unsqueeze"),
        h.make_node("Concat", ["b1", "minus1"], ["target"], name="/Concat", axis=0),
        h.make_node("Reshape", ["x", "target"], ["flat"], name="/Reshape"),
        h.make_node("Add", ["c1", "c2"], ["c3"], name="/ConstAdd"),
        h.make_node("Mul", ["flat", "c3"], ["y"], name="/Mul"),
    ]
    return make_model(
        nodes,
        [vi("x", T.FLOAT, [2, 3, 4])],
        [vi("y", T.FLOAT, [2, 12])],
        {
            "zero": np.array(0, np.int64),
            "axes": np.array([0], np.int64),
            "minus1": np.array([-1], np.int64),
            "c1": np.full((12,), 0.5, np.float32),
            "c2": np.full((12,), 1.5, np.float32),
        },
    )


def test_folds_shape_chain_and_keeps_versions():
    proto = _foldable()
    model, report = surgery.apply(ir.from_proto(proto), [Simplify()])
    step = report.steps[0]
    assert step.modified and step.parity_status == "ok" and step.checker == "ok"
    counts = op_counts(model)
    assert counts["Shape"] == 0 and counts["Gather"] == 0 and counts["Add"] == 0
    assert counts["Reshape"] == 1 and counts["Mul"] == 1
    assert model.ir_version == proto.ir_version and model.opset_imports[""] == 17
    assert {n.name for n in model.graph} <= {"/Reshape", "/Mul"}
    _, again = surgery.apply(model, [Simplify()])
    assert not again.steps[0].modified


def _tied_embedding(vocab: int = 512, dim: int = 256):
    w = np.random.default_rng(0).standard_normal((vocab, dim)).astype(np.float32)
    nodes = [
        h.make_node("Gather", ["embed.weight", "ids"], ["emb"], name="/embed/Gather"),
        h.make_node("Transpose", ["embed.weight"], ["wT"], name="/lm_head/Transpose", perm=[1, 0]),
        h.make_node("MatMul", ["emb", "wT"], ["logits"], name="/lm_head/MatMul"),
    ]
    return make_model(
        nodes,
        [vi("ids", T.INT64, [1, 4])],
        [vi("logits", T.FLOAT, [1, 4, vocab])],
        {"embed.weight": w},
    )


def test_tied_weight_transpose_growth_is_refused():
    proto = _tied_embedding()
    model, report = surgery.apply(ir.from_proto(proto), [Simplify(max_growth_bytes=1024)])
    step = report.steps[0]
    assert not step.modified
    assert (
        step.stats["weight_bytes_delta"] == 512 * 256 * 4
    )  # onnxsim would add a full transposed copy
    assert any("grows the weights" in note for note in step.notes)
    assert op_counts(model)["Transpose"] == 1
    with pytest.raises(PassError, match="grows the weights"):
        surgery.apply(ir.from_proto(proto), [Simplify(max_growth_bytes=1024, on_growth="error")])
    # allowed explicitly: applied, and the growth is in the report
    _, report = surgery.apply(ir.from_proto(proto), [Simplify(max_growth_bytes=1 << 30)])
    assert report.steps[0].modified and report.steps[0].after.initializer_bytes == 2 * 512 * 256 * 4


def test_model_with_if_stays_valid():
    # onnxsim 0.8 leaves branch-local constants alone; the main graph is folded and the If kept intact
    then_g = h.make_graph(
        [
            h.make_node("Add", ["k1", "k2"], ["k3"], name="/then/ConstAdd"),
            h.make_node("Mul", ["x", "k3"], ["t"], name="/then/Mul"),
        ],
        "then",
        [],
        [vi("t", T.FLOAT, [4])],
        [onnx_tensor("k1", np.ones(4, np.float32)), onnx_tensor("k2", np.ones(4, np.float32))],
    )
    else_g = h.make_graph(
        [h.make_node("Neg", ["x"], ["e"], name="/else/Neg")], "else", [], [vi("e", T.FLOAT, [4])]
    )
    proto = make_model(
        [
            h.make_node("ReduceSum", ["x"], ["s"], name="/ReduceSum", keepdims=0),
            h.make_node("Add", ["zero", "zero"], ["zero2"], name="/ConstAdd"),
            h.make_node("Greater", ["s", "zero2"], ["c"], name="/Greater"),
            h.make_node("If", ["c"], ["y"], name="/If", then_branch=then_g, else_branch=else_g),
        ],
        [vi("x", T.FLOAT, [4])],
        [vi("y", T.FLOAT, [4])],
        {"zero": np.array(0, np.float32)},
    )
    model, report = surgery.apply(
        ir.from_proto(proto), [Simplify()], inputs={"x": np.array([1, 2, 3, 4], np.float32)}
    )
    assert report.steps[0].modified and report.steps[0].parity_status == "ok"
    counts = op_counts(model)
    assert counts["If"] == 1 and counts["Neg"] == 1 and counts["Mul"] == 1
    assert "/ConstAdd" not in {n.name for n in model.graph}


def onnx_tensor(name, array):
    from onnx import numpy_helper

    return numpy_helper.from_array(array, name)
