"""float64: no AI Core kernel takes float64."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.float64 import check_float64
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def test_float64_math_inside_a_float32_model_will_fail(run_check):
    model = make_model(
        [
            h.make_node("Cast", ["x"], ["xd"], to=T.DOUBLE, name="to_double"),
            h.make_node("Mul", ["xd", "k"], ["m"], name="scale"),
            h.make_node("Cast", ["m"], ["y"], to=T.FLOAT, name="to_float"),
        ],
        [vi("x", T.FLOAT, [3])],
        [vi("y", T.FLOAT, [3])],
        {"k": np.array([2.0], np.float64)},
    )
    (finding,) = run_check(check_float64, model)
    assert finding.severity is Severity.WILL_FAIL and finding.fix == ["narrow-float64"]
    assert finding.nodes == [
        "to_double",
        "scale",
        "to_float",
    ]  # found without value_info (shape inference)
    assert finding.details["graph_io"] == [] and "k" in finding.details["tensors"]


def test_float64_graph_io_is_named(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.DOUBLE, [3])],
        [vi("y", T.DOUBLE, [3])],
    )
    (finding,) = run_check(check_float64, model)
    assert finding.details["graph_io"] == ["x", "y"] and finding.nodes == ["r"]


def test_float32_model_passes(run_check):
    model = make_model(
        [h.make_node("Mul", ["x", "k"], ["y"], name="m")],
        [vi("x", T.FLOAT, [3])],
        [vi("y", T.FLOAT, [3])],
        {"k": np.array([2.0], np.float32)},
    )
    assert run_check(check_float64, model) == []
