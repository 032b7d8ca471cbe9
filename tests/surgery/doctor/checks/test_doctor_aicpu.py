"""aicpu-only: CANN ops with only an AICPU kernel (per SoC) run slowly."""

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.aicpu import check_aicpu
from surgery.doctor.finding import Severity
from surgery.errors import InputError
from surgery.testing import make_model, vi


def _einsum():
    return make_model(
        [h.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik", name="mm")],
        [vi("a", T.FLOAT, [2, 3]), vi("b", T.FLOAT, [3, 4])],
        [vi("y", T.FLOAT, [2, 4])],
    )


def test_einsum_is_slow_with_its_fix(run_check):
    (finding,) = run_check(check_aicpu, _einsum())
    assert (
        finding.severity is Severity.SLOW
        and finding.nodes == ["mm"]
        and finding.fix == ["einsum-to-matmul"]
    )
    assert finding.details["cann_kernels"] == {"Einsum": ["Ascend310", "Ascend310P", "Ascend910"]}


def _nonzero():
    return make_model(
        [h.make_node("NonZero", ["x"], ["y"], name="nz")],
        [vi("x", T.FLOAT, [4])],
        [vi("y", T.INT64, [1, None])],
    )


def test_soc_selects_the_aicpu_list(run_check):
    # NonZero is AICPU-only on Ascend310 only.
    (on_310,) = run_check(check_aicpu, _nonzero(), soc="Ascend310")
    assert on_310.details["socs_checked"] == ["Ascend310"]
    assert run_check(check_aicpu, _nonzero(), soc="Ascend310P3") == []
    (unknown,) = run_check(check_aicpu, _nonzero(), soc="Ascend910B1")
    assert "no AICPU list for Ascend910B1" in unknown.why


def test_bad_soc_name_is_input_error(run_check):
    with pytest.raises(InputError, match="not an Ascend SoC"):
        run_check(check_aicpu, _einsum(), soc="rtx4090")


def test_topk_with_constant_k_may_use_ai_core_but_runtime_k_is_slow(run_check):
    def topk(k_is_input):
        inputs = [vi("x", T.FLOAT, [1, 8])] + ([vi("k", T.INT64, [1])] if k_is_input else [])
        inits = {} if k_is_input else {"k": np.array([3], np.int64)}
        return make_model(
            [h.make_node("TopK", ["x", "k"], ["v", "i"], name="topk")],
            inputs,
            [vi("v", T.FLOAT, [1, None]), vi("i", T.INT64, [1, None])],
            inits,
        )

    assert run_check(check_aicpu, topk(False)) == []
    (finding,) = run_check(check_aicpu, topk(True))
    assert finding.nodes == ["topk"] and finding.fix == [] and "TopKD" in finding.fix_note


def test_slice_with_shape_arithmetic_bounds_is_fixed_by_make_static(run_check):
    model = make_model(
        [
            h.make_node("Shape", ["x"], ["s"], name="shape"),
            h.make_node("Slice", ["s", "zero", "one"], ["end"], name="dim0"),
            h.make_node("Slice", ["x", "zero", "end", "zero"], ["y"], name="crop"),
        ],
        [vi("x", T.FLOAT, ["n", 4])],
        [vi("y", T.FLOAT, ["n", 4])],
        {"zero": np.array([0], np.int64), "one": np.array([1], np.int64)},
    )
    (finding,) = run_check(check_aicpu, model)
    assert finding.nodes == ["crop"]  # 'dim0' is shape arithmetic: it folds, it never runs
    assert finding.fix == ["make-static"]


def test_plain_ops_pass(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
    )
    assert run_check(check_aicpu, model) == []
