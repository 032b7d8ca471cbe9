"""slice: ATC's Slice needs step 1 on the last axis and a rank of at least 2."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.slice import check_slice
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def _slice(shape, axes, steps, starts, ends):
    out = [None] * len(shape)
    return make_model(
        [h.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"], name="sl")],
        [vi("x", T.FLOAT, shape)],
        [vi("y", T.FLOAT, out)],
        {
            "s": np.array(starts, np.int64),
            "e": np.array(ends, np.int64),
            "a": np.array(axes, np.int64),
            "st": np.array(steps, np.int64),
        },
    )


def test_reversal_on_the_last_axis_will_fail(run_check):
    # torch.flip(x, [-1]) exports as Slice with step -1 on the last axis.
    (finding,) = run_check(check_slice, _slice([2, 6], [-1], [-1], [-1], [-(2**63)]))
    assert finding.severity is Severity.WILL_FAIL and finding.details == {"kind": "step"}
    (positive_axis,) = run_check(check_slice, _slice([2, 6], [1], [2], [0], [6]))
    assert positive_axis.title == "Slice with step 2 on the last axis"


def test_rank_one_runtime_slice_will_fail(run_check):
    (finding,) = run_check(check_slice, _slice([6], [0], [1], [1], [4]))
    assert finding.details == {"kind": "rank"}


def test_step_on_other_axes_and_shape_slices_pass(run_check):
    assert run_check(check_slice, _slice([6, 2], [0], [2], [0], [6])) == []
    shape_slice = make_model(
        [
            h.make_node("Shape", ["x"], ["s"], name="shape"),
            h.make_node("Slice", ["s", "b", "e"], ["d"], name="dims"),
        ],  # rank 1, but folds
        [vi("x", T.FLOAT, ["n", 3])],
        [vi("d", T.INT64, [1])],
        {"b": np.array([1], np.int64), "e": np.array([2], np.int64)},
    )
    assert run_check(check_slice, shape_slice) == []
