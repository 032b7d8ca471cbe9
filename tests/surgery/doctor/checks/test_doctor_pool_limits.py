"""pool-limits: big MaxPool kernels fall back to AICPU; AveragePool kernels above 255 fail."""

from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.pool_limits import check_pool_limits
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def test_big_kernels_are_reported(run_check):
    model = make_model(
        [
            h.make_node("MaxPool", ["x"], ["m"], kernel_shape=[20, 20], name="big_max"),
            h.make_node("AveragePool", ["t"], ["a"], kernel_shape=[1, 300], name="long_avg"),
            h.make_node(
                "MaxPool", ["x"], ["d"], kernel_shape=[2, 2], dilations=[2, 2], name="dilated"
            ),
        ],
        [vi("x", T.FLOAT, [1, 1, 20, 20]), vi("t", T.FLOAT, [1, 1, 1, 300])],
        [
            vi("m", T.FLOAT, [1, 1, 1, 1]),
            vi("a", T.FLOAT, [1, 1, 1, 1]),
            vi("d", T.FLOAT, [1, 1, 18, 18]),
        ],
    )
    findings = {f.details["kind"]: f for f in run_check(check_pool_limits, model)}
    assert findings["limits"].severity is Severity.SLOW and findings["limits"].nodes == ["big_max"]
    assert findings["avg_kernel"].severity is Severity.WILL_FAIL and findings[
        "avg_kernel"
    ].nodes == ["long_avg"]
    assert findings["dilations"].nodes == ["dilated"]


def test_small_kernels_pass(run_check):
    model = make_model(
        [
            h.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2], name="mp"),
            h.make_node("AveragePool", ["x"], ["a"], kernel_shape=[16, 16], name="ap"),
        ],
        [vi("x", T.FLOAT, [1, 1, 16, 16])],
        [vi("m", T.FLOAT, [1, 1, 7, 7]), vi("a", T.FLOAT, [1, 1, 1, 1])],
    )
    assert run_check(check_pool_limits, model) == []
