"""Silent edits in place: a pass that mutates an initializer's numpy array and says modified=False."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import GateError
from surgery.gates.fingerprint import fingerprint
from surgery.pass_base import SurgeryPass, SurgeryResult
from surgery.testing import make_model, vi


def _matmul(rows: int, cols: int) -> ir.Model:
    """An in-memory model whose weight is a writable numpy array (as a model built in Python, or
    a weight an earlier pass created, has)."""
    w = (np.random.default_rng(0).standard_normal((rows, cols)) * 0.05).astype(np.float32)
    model = ir.from_proto(
        make_model(
            [h.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
            [vi("x", T.FLOAT, [2, rows])],
            [vi("y", T.FLOAT, [2, cols])],
            {"W": w},
        )
    )
    model.graph.initializers["W"].const_value = ir.tensor(w, name="W")
    return model


class InPlace(SurgeryPass):
    """User pass: edits W's numpy array in place (a slice, or all of it) and reports no change."""

    name = "user-in-place"
    where = slice(None)

    def call(self, model):
        array = model.graph.initializers["W"].const_value.numpy()
        array[self.where] *= 1.5
        return SurgeryResult(model, False)


def _edit(where) -> InPlace:
    p = InPlace()
    p.where = where
    return p


@pytest.mark.parametrize(
    "rows, cols, where",
    [
        (4, 8, (0, 0)),  # 128 bytes: hashed whole, one element edited
        (1024, 2048, slice(None)),  # 8 MB: every element scaled
        (1024, 2048, slice(512, 640)),  # 8 MB: a block of rows in the middle (1 MB of the 8)
    ],
)
def test_in_place_edit_reported_unmodified_is_gated(rows, cols, where):
    with pytest.raises(GateError) as info:
        surgery.apply(_matmul(rows, cols), [_edit(where)])
    text = str(info.value)
    assert "user-in-place" in text and "output y" in text, text
    assert any("silent edit: pass 'user-in-place'" in n for n in info.value.report.notes)


def test_large_weight_fingerprint_reads_samples_not_the_buffer():
    model = _matmul(1024, 2048)
    before = fingerprint(model)
    assert fingerprint(model) == before  # stable
    model.graph.initializers["W"].const_value.numpy()[1000:1002, :] += (
        1.0  # two rows (16 KB) of 8 MB
    )
    assert fingerprint(model) != before
