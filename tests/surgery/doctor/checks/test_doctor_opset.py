"""opset: ATC registers each op at exact opsets only (8-18 for standard ops)."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.opset import check_opset
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def _conv(opset):
    return make_model(
        [
            h.make_node("Conv", ["x", "w"], ["c"], name="conv"),
            h.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        [vi("x", T.FLOAT, [1, 1, 4, 4])],
        [vi("y", T.FLOAT, [1, 1, 2, 2])],
        {"w": np.ones((1, 1, 3, 3), np.float32)},
        opset=opset,
    )


def test_opset_20_conv_will_fail(run_check):
    (finding,) = run_check(check_opset, _conv(20))
    assert finding.severity is Severity.WILL_FAIL
    assert finding.nodes == ["conv", "relu"] and finding.fix == ["convert-opset"]
    assert finding.details == {
        "domain": "ai.onnx",
        "model_opset": 20,
        "registered": {"Conv": "8-18", "Relu": "8-18"},
    }
    assert "'ai.onnx::20::<op>'" in finding.why


def test_opset_18_passes(run_check):
    assert run_check(check_opset, _conv(18)) == []


def test_op_registered_below_model_opset_only(run_check):
    # GridSample is registered at 11 and 16-18: opset 19 is not one of them.
    model = make_model(
        [h.make_node("GridSample", ["x", "g"], ["y"], name="gs")],
        [vi("x", T.FLOAT, [1, 1, 4, 4]), vi("g", T.FLOAT, [1, 2, 2, 2])],
        [vi("y", T.FLOAT, [1, 1, 2, 2])],
        opset=19,
    )
    (finding,) = run_check(check_opset, model)
    assert finding.details["registered"] == {"GridSample": "11,16-18"}
