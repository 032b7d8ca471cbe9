"""gridsample: ATC's GridSample is 4-D, bilinear/nearest."""

from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.gridsample import check_gridsample
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def _gs(mode, rank=4, opset=16):
    x = [1, 1] + [4] * (rank - 2)
    g = [1] + [2] * (rank - 2) + [rank - 2]
    return make_model(
        [h.make_node("GridSample", ["x", "g"], ["y"], mode=mode, name="gs")],
        [vi("x", T.FLOAT, x), vi("g", T.FLOAT, g)],
        [vi("y", T.FLOAT, [1, 1] + [2] * (rank - 2))],
        opset=opset,
    )


def test_bicubic_and_5d_will_fail(run_check):
    (bicubic,) = run_check(check_gridsample, _gs("bicubic"))
    assert bicubic.severity is Severity.WILL_FAIL and bicubic.details == {
        "kind": "mode",
        "value": "bicubic",
    }
    found = {
        f.details["kind"]: f for f in run_check(check_gridsample, _gs("linear", rank=5, opset=20))
    }
    assert found["rank"].details == {"kind": "rank", "value": "5"}


def test_bilinear_4d_at_opset_16_passes(run_check):
    assert run_check(check_gridsample, _gs("bilinear")) == []
    assert run_check(check_gridsample, _gs("bilinear"), soc="Ascend910B") == []


def test_opset_other_than_16(run_check):
    (seventeen,) = run_check(check_gridsample, _gs("bilinear", opset=17))
    assert (
        seventeen.details == {"kind": "opset", "value": "17"}
        and seventeen.severity is Severity.PRECISION_RISK
    )
    assert seventeen.fix == ["decompose-gridsample"]
    (twenty,) = run_check(check_gridsample, _gs("linear", opset=20))
    assert (
        twenty.details == {"kind": "opset", "value": "20"} and twenty.severity is Severity.WILL_FAIL
    )


def test_no_kernel_on_310p_and_310b(run_check):
    for soc in ("Ascend310P3", "Ascend310B1"):
        (finding,) = run_check(check_gridsample, _gs("bilinear"), soc=soc)
        assert (
            finding.details == {"kind": "soc", "value": soc}
            and finding.severity is Severity.WILL_FAIL
        )
        assert finding.fix == ["decompose-gridsample"]
