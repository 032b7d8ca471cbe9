"""Batch dims found by propagation for the emitted pipeline's DECIDE shapes."""

import numpy as np
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor import pipeline as emit_mod
from surgery.doctor.batch_dims import batch_dims
from surgery.testing import make_model, ort_run, vi


def _vad_like(state_dim=None):
    """A recurrent model whose state comes first: state [2, ?, 16] feeds an LSTM with x [?, 10, 8]."""
    rng = np.random.default_rng(0)
    return make_model(
        [
            h.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2], name="to_seq_first"),
            h.make_node("Split", ["state", "two"], ["h0", "c0"], axis=0, name="split_state"),
            h.make_node(
                "LSTM",
                ["xt", "w", "r", "", "", "h0", "c0"],
                ["y", "hn", "cn"],
                hidden_size=16,
                name="lstm",
            ),
            h.make_node("Concat", ["hn", "cn"], ["new_state"], axis=0, name="state_out"),
        ],
        [vi("state", T.FLOAT, [2, state_dim, 16]), vi("x", T.FLOAT, [None, 10, 8])],
        [vi("new_state", T.FLOAT, [2, None, 16])],
        {
            "w": rng.standard_normal((1, 64, 8)).astype(np.float32),
            "r": rng.standard_normal((1, 64, 16)).astype(np.float32),
            "two": np.array([1, 1], np.int64),
        },
    )


def test_recurrent_state_batch_is_found_through_the_lstm():
    """The bug: the state [2, batch, 16] got [2, 128, 16], which ONNX Runtime rejects."""
    model = ir.from_proto(_vad_like())
    assert batch_dims(model) == {("state", 1): "x"}
    shapes, notes, _ = emit_mod.decide_shapes(model)
    assert shapes == {"state": [2, 1, 16], "x": [1, 10, 8]}
    assert any("dim 0 of 'x'" in n for n in notes)
    feeds = {"state": np.zeros(shapes["state"], np.float32), "x": np.ones(shapes["x"], np.float32)}
    assert ort_run(model, feeds)["new_state"].shape == (2, 1, 16)


def test_tied_dim_follows_the_given_batch():
    model = ir.from_proto(_vad_like())
    shapes, _, _ = emit_mod.decide_shapes(model, input_shapes={"x": [4, 10, 8]})
    assert shapes["state"] == [2, 4, 16]


def test_named_dims_shared_with_a_later_input_dim_0():
    model = ir.from_proto(
        make_model(
            [h.make_node("Add", ["a", "b"], ["y"], name="add")],
            [vi("a", T.FLOAT, [3, "n"]), vi("b", T.FLOAT, ["n", 1])],
            [vi("y", T.FLOAT, ["n", "n"])],
        )
    )
    shapes, notes, _ = emit_mod.decide_shapes(model)
    assert shapes == {"a": [3, 1], "b": [1, 1]}, notes


def test_dims_nothing_ties_keep_the_placeholder():
    model = ir.from_proto(
        make_model(
            [
                h.make_node("ReduceSum", ["a"], ["s"], keepdims=0, name="sum"),
                h.make_node("Add", ["s", "b"], ["y"]),
            ],
            [vi("a", T.FLOAT, [None, None]), vi("b", T.FLOAT, [None])],
            [vi("y", T.FLOAT, [None])],
        )
    )
    shapes, _, _ = emit_mod.decide_shapes(model)
    assert shapes["a"] == [1, 128]
