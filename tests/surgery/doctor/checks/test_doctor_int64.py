"""int64: documented dtype lists (Gather, GatherElements, TopK) broken at run time; int64 compute (info)."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.int64 import check_int64
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def test_runtime_int64_gather_data_is_slow(run_check):
    model = make_model(
        [h.make_node("Gather", ["ids", "idx"], ["y"], axis=0, name="pick")],
        [vi("ids", T.INT64, [8])],
        [vi("y", T.INT64, [2])],
        {"idx": np.array([0, 3], np.int64)},
    )
    findings = run_check(check_int64, model)
    limit = next(f for f in findings if f.severity is Severity.SLOW)
    assert limit.nodes == ["pick"] and limit.fix == ["narrow-int64"]
    assert limit.details == {
        "op": "Gather",
        "input": 0,
        "dtype": "int64",
        "allowed": ["float16", "float32"],
    }
    # the Gather's own int64 output is covered by that finding, not repeated as information
    assert all(f.severity is not Severity.INFO for f in findings)


def test_int64_compute_elsewhere_is_info(run_check):
    model = make_model(
        [h.make_node("Add", ["a", "b"], ["y"], name="add")],
        [vi("a", T.INT64, [2]), vi("b", T.INT64, [2])],
        [vi("y", T.INT64, [2])],
    )
    (finding,) = run_check(check_int64, model)
    assert finding.severity is Severity.INFO and finding.nodes == ["add"]


def test_shape_arithmetic_and_float_data_pass(run_check):
    # Gather over a Shape output folds once shapes are fixed; Gather over float data is documented.
    model = make_model(
        [
            h.make_node("Shape", ["x"], ["s"], name="shape"),
            h.make_node("Gather", ["s", "i0"], ["n"], axis=0, name="dim0"),
            h.make_node("Gather", ["x", "i1"], ["y"], axis=0, name="rows"),
        ],
        [vi("x", T.FLOAT, [4, 2])],
        [vi("y", T.FLOAT, [2, 2]), vi("n", T.INT64, [])],
        {"i0": np.array(0, np.int64), "i1": np.array([0, 1], np.int64)},
    )
    assert run_check(check_int64, model) == []
