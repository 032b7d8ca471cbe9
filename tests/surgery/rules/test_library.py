"""The ready-made rules of surgery.rules.library."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from surgery.rules import apply_rules
from surgery.rules.library import EXACT
from surgery.testing import make_model, op_counts, ort_run, vi

X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


def test_transposes_fuse_or_cancel():
    proto = make_model(
        [
            h.make_node("Transpose", ["x"], ["a"], perm=[1, 0, 2], name="t1"),
            h.make_node("Transpose", ["a"], ["b"], perm=[1, 0, 2], name="t2"),  # cancels t1
            h.make_node("Transpose", ["b"], ["c"], perm=[2, 0, 1], name="t3"),
            h.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 1], name="t4"),
        ],  # t3 then t4 = one Transpose
        [vi("x", T.FLOAT, [2, 3, 4])],
        [vi("y", T.FLOAT, [4, 3, 2])],
    )
    expected = ort_run(proto, {"x": X})["y"]
    model = ir.from_proto(proto)
    stats = apply_rules(model, EXACT)
    assert stats.applied["fuse-transposes"] == 2
    assert op_counts(model) == {"Transpose": 1}
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], expected)


def test_mul_by_one_only_when_it_cannot_broadcast():
    proto = make_model(
        [
            h.make_node("Mul", ["x", "one"], ["a"], name="same"),
            h.make_node("Mul", ["a", "ones"], ["y"], name="broadcasts"),
        ],
        [vi("x", T.FLOAT, [2, 3, 4])],
        [vi("y", T.FLOAT, [5, 2, 3, 4])],
        {"one": np.ones((1, 4), np.float32), "ones": np.ones((5, 1, 1, 1), np.float32)},
    )
    model = ir.from_proto(proto)
    stats = apply_rules(model, EXACT)
    assert stats.applied["mul-by-one"] == 1
    assert "may broadcast x to a higher rank" in stats.miss_reasons["mul-by-one"][0]
    assert [n.name for n in model.graph] == ["broadcasts"]
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], np.broadcast_to(X, (5, 2, 3, 4)))
