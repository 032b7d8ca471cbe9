"""dropout: GE removes Dropout and never produces the mask."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.dropout import check_dropout
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def test_used_mask_will_fail_and_plain_dropout_is_info(run_check):
    model = make_model(
        [
            h.make_node("Dropout", ["x", "r", "t"], ["d1", "mask"], name="drop_mask"),
            h.make_node("Cast", ["mask"], ["mf"], to=T.FLOAT, name="use_mask"),
            h.make_node("Dropout", ["d1"], ["y"], name="drop_plain"),
        ],
        [vi("x", T.FLOAT, [4])],
        [vi("y", T.FLOAT, [4]), vi("mf", T.FLOAT, [4])],
        {"r": np.array(0.5, np.float32), "t": np.array(True)},
    )
    findings = {f.severity: f for f in run_check(check_dropout, model)}
    assert findings[Severity.WILL_FAIL].nodes == ["drop_mask"]
    assert findings[Severity.INFO].nodes == ["drop_plain"]
    assert all(f.fix == ["remove-dropout"] for f in findings.values())


def test_training_mode_is_mentioned(run_check):
    model = make_model(
        [h.make_node("Dropout", ["x", "r", "t"], ["y"], name="drop_train")],
        [vi("x", T.FLOAT, [4])],
        [vi("y", T.FLOAT, [4])],
        {"r": np.array(0.1, np.float32), "t": np.array(True)},
    )
    (finding,) = run_check(check_dropout, model)
    assert finding.details["training_mode"] == ["drop_train"] and "training mode" in finding.why


def test_no_dropout_passes(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [4])],
        [vi("y", T.FLOAT, [4])],
    )
    assert run_check(check_dropout, model) == []
