"""A Loop left in the model: ATC has no Loop; a constant trip count is unrolled by make-static."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor import diagnose
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def _loop_model():
    body = h.make_graph(
        [
            h.make_node("Identity", ["cond_in"], ["cond_out"], name="body/cond"),
            h.make_node("Add", ["acc_in", "one"], ["acc_out"], name="body/add"),
        ],
        "body",
        [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("acc_in", T.FLOAT, [1, 4])],
        [vi("cond_out", T.BOOL, []), vi("acc_out", T.FLOAT, [1, 4])],
    )
    return make_model(
        [h.make_node("Loop", ["trips", "", "x"], ["y"], name="repeat", body=body)],
        [vi("x", T.FLOAT, [1, 4])],
        [vi("y", T.FLOAT, [1, 4])],
        {"trips": np.array(3, np.int64), "one": np.array(1.0, np.float32)},
    )


def test_loop_left_will_fail_with_unroll_fix():
    report = diagnose(_loop_model())
    loop = next(f for f in report.findings if "Loop" in f.title)
    assert loop.severity is Severity.WILL_FAIL and loop.nodes == ["repeat"]
    assert loop.fix == ["make-static"] and "unroll" in loop.fix_note
