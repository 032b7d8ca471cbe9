"""empty-tensors: zero-size tensors, except the empty placeholders ONNX defines."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.empty import check_empty
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def test_empty_constant_in_a_concat_is_reported(run_check):
    model = make_model(
        [h.make_node("Concat", ["x", "nothing"], ["y"], axis=0, name="cat")],
        [vi("x", T.FLOAT, [3])],
        [vi("y", T.FLOAT, [3])],
        {"nothing": np.zeros(0, np.float32)},
    )
    (finding,) = run_check(check_empty, model)
    assert finding.severity is Severity.INFO and finding.nodes == ["nothing"] and finding.fix == []


def test_unused_empty_initializer_is_cleaned_up(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [3])],
        [vi("y", T.FLOAT, [3])],
        {"dead": np.zeros((2, 0), np.float32)},
    )
    (finding,) = run_check(check_empty, model)
    assert finding.fix == ["cleanup"]


def test_resize_empty_roi_passes(run_check):
    model = make_model(
        [h.make_node("Resize", ["x", "roi", "scales"], ["y"], name="up")],
        [vi("x", T.FLOAT, [1, 1, 2, 2])],
        [vi("y", T.FLOAT, [1, 1, 4, 4])],
        {"roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 2, 2], np.float32)},
    )
    assert run_check(check_empty, model) == []


def test_empty_parameter_lists_pass(run_check):
    # ReduceSum with an empty axes list means "reduce all" (noop_with_empty_axes=0): a parameter, not data.
    model = make_model(
        [h.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0, name="sum")],
        [vi("x", T.FLOAT, [2, 3])],
        [vi("y", T.FLOAT, [])],
        {"axes": np.zeros(0, np.int64)},
    )
    assert run_check(check_empty, model) == []
