"""unregistered-op: ops no ATC source registers (Gelu, GroupNormalization, Loop, Q/DQ …)."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.unregistered import check_unregistered
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def test_gelu_and_dequantize_have_no_parser(run_check):
    model = make_model(
        [
            h.make_node("DequantizeLinear", ["q", "s"], ["d"], name="dq"),
            h.make_node("Gelu", ["d"], ["y"], name="gelu"),
        ],
        [vi("q", T.INT8, [4])],
        [vi("y", T.FLOAT, [4])],
        {"s": np.array(0.5, np.float32)},
        opset=20,
    )
    findings = {f.details["op"]: f for f in run_check(check_unregistered, model)}
    assert set(findings) == {"DequantizeLinear", "Gelu"}
    assert all(f.severity is Severity.WILL_FAIL for f in findings.values())
    assert findings["Gelu"].fix == ["decompose-gelu"] and findings["Gelu"].details["function_op"]
    assert findings["DequantizeLinear"].fix == [] and findings["DequantizeLinear"].nodes == ["dq"]


def test_registered_ops_pass(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
    )
    assert run_check(check_unregistered, model) == []
