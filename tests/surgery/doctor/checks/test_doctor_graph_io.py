"""graph-io: ATC refuses a root graph without inputs or outputs."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.graph_io import check_graph_io
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def test_graph_without_inputs_will_fail(run_check):
    model = make_model(
        [h.make_node("Relu", ["w"], ["y"], name="r")],
        [],
        [vi("y", T.FLOAT, [2])],
        {"w": np.ones(2, np.float32)},
    )
    (finding,) = run_check(check_graph_io, model)
    assert finding.severity is Severity.WILL_FAIL and finding.title == "the graph has no inputs"
    assert "E16001" in finding.why and finding.fix == []


def test_graph_with_inputs_and_outputs_passes(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
    )
    assert run_check(check_graph_io, model) == []
