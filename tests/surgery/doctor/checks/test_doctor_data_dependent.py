"""data-dependent: NonZero/Unique are forbidden with ATC's gear options."""

from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.data_dependent import check_data_dependent
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def test_nonzero_is_reported(run_check):
    model = make_model(
        [h.make_node("NonZero", ["x"], ["y"], name="nz")],
        [vi("x", T.FLOAT, [4])],
        [vi("y", T.INT64, [1, None])],
    )
    (finding,) = run_check(check_data_dependent, model)
    assert (
        finding.severity is Severity.INFO
        and finding.nodes == ["nz"]
        and finding.fix == ["split-postprocess"]
    )


def test_static_ops_pass(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [4])],
        [vi("y", T.FLOAT, [4])],
    )
    assert run_check(check_data_dependent, model) == []
