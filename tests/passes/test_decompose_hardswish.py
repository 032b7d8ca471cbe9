"""decompose-hardswish: both forms equal HardSwish."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.errors import PipelineError
from surgery.passes.decompose_hardswish import DecomposeHardSwish
from surgery.testing import make_model, op_counts, ort_run, vi

X = np.linspace(-5, 5, 41, dtype=np.float32)


@pytest.mark.parametrize(
    "form, ops",
    [
        ("hardsigmoid", {"HardSigmoid": 1, "Mul": 1}),
        ("relu6", {"Add": 1, "Clip": 1, "Mul": 1, "Div": 1, "Constant": 3}),
    ],
)
def test_forms_equal_hardswish(form, ops):
    proto = make_model(
        [h.make_node("HardSwish", ["x"], ["y"], name="/act/HardSwish")],
        [vi("x", T.FLOAT, [41])],
        [vi("y", T.FLOAT, [41])],
        opset=14,
    )
    expected = ort_run(proto, {"x": X})["y"]
    np.testing.assert_allclose(expected, X * np.clip(X / 6 + 0.5, 0, 1), atol=1e-6)
    model = ir.from_proto(proto)
    assert DecomposeHardSwish(form=form)(model).stats["rewritten"] == 1
    assert op_counts(model) == ops
    assert all(n.name.startswith("/act/HardSwish/") for n in model.graph)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_allclose(ort_run(model, {"x": X})["y"], expected, rtol=1e-6, atol=1e-6)
    assert not DecomposeHardSwish(form=form)(model).modified


def test_unknown_form_is_a_pipeline_error():
    with pytest.raises(PipelineError, match="expected one of 'hardsigmoid', 'relu6'"):
        DecomposeHardSwish(form="sigmoid")
