"""gather-negative-indices: ATC's Gather does not take negative indices."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.gather import check_gather_negative
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def _gather(indices):
    return make_model(
        [h.make_node("Gather", ["x", "i"], ["y"], axis=1, name="last")],
        [vi("x", T.FLOAT, [2, 5])],
        [vi("y", T.FLOAT, [2, len(indices)])],
        {"i": np.array(indices, np.int64)},
    )


def test_negative_constant_indices_will_fail(run_check):
    (finding,) = run_check(check_gather_negative, _gather([-1, 0]))
    assert finding.severity is Severity.WILL_FAIL and finding.nodes == ["last"]
    assert finding.fix == ["normalize-gather-indices"]


def test_positive_indices_pass(run_check):
    assert run_check(check_gather_negative, _gather([4, 0])) == []
