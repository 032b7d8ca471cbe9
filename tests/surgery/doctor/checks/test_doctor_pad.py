"""pad: ATC's Pad takes constant/reflect/edge with a zero pad value only."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.pad import check_pad
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def _pad(value=None, mode="constant", opset=17):
    inputs = ["x", "pads"] + (["v"] if value is not None else [])
    inits = {"pads": np.array([0, 1, 0, 1], np.int64)}
    if value is not None:
        inits["v"] = np.array(value, np.float32)
    return make_model(
        [h.make_node("Pad", inputs, ["y"], mode=mode, name="pad")],
        [vi("x", T.FLOAT, [2, 3])],
        [vi("y", T.FLOAT, [2, 5])],
        inits,
        opset=opset,
    )


def test_non_zero_constant_will_fail(run_check):
    (finding,) = run_check(check_pad, _pad(1.5))
    assert finding.severity is Severity.WILL_FAIL and finding.title == "Pad with constant value 1.5"
    assert finding.fix == []


def test_wrap_mode_will_fail(run_check):
    (finding,) = run_check(check_pad, _pad(mode="wrap", opset=19))
    assert finding.details == {"kind": "mode", "value": "wrap"}


def test_zero_constant_and_reflect_pass(run_check):
    assert run_check(check_pad, _pad(0.0)) == []
    assert run_check(check_pad, _pad()) == []
    assert run_check(check_pad, _pad(mode="reflect")) == []
