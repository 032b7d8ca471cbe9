"""gridsample: ATC's GridSample is 4-D, bilinear/nearest."""

from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.gridsample import check_gridsample
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def _gs(mode, rank=4, opset=17):
    x = [1, 1] + [4] * (rank - 2)
    g = [1] + [2] * (rank - 2) + [rank - 2]
    return make_model([h.make_node("GridSample", ["x", "g"], ["y"], mode=mode, name="gs")],
                      [vi("x", T.FLOAT, x), vi("g", T.FLOAT, g)], [vi("y", T.FLOAT, [1, 1] + [2] * (rank - 2))],
                      opset=opset)


def test_bicubic_and_5d_will_fail(run_check):
    (bicubic,) = run_check(check_gridsample, _gs("bicubic"))
    assert bicubic.severity is Severity.WILL_FAIL and bicubic.details == {"kind": "mode", "value": "bicubic"}
    (five_d,) = run_check(check_gridsample, _gs("linear", rank=5, opset=20))
    assert five_d.details == {"kind": "rank", "value": "5"}


def test_bilinear_4d_passes(run_check):
    assert run_check(check_gridsample, _gs("bilinear")) == []
    assert run_check(check_gridsample, _gs("linear", opset=20)) == []
