"""Exact integer comparison, NaN/Inf placement, and the extra parity samples."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from surgery.pass_base import FeedHints, Tolerance
from surgery.testing import make_model, vi
from surgery.verify.compare import diff_arrays
from surgery.verify.inputs import InputsConfig, InputSpec, plan_inputs
from surgery.verify.samples import candidate_samples

TOL = Tolerance(1e-4, 1e-5)


def test_int64_compared_in_its_own_dtype():
    big = np.array([2**60, 7], np.int64)
    d = diff_arrays("o", big + np.array([1, 0]), big, Tolerance(0.0, 0.0))
    assert not d.ok and d.max_abs == 1 and "1 of 2 integer values differ" in d.problem
    # a float tolerance never loosens an integer comparison
    d = diff_arrays("o", big + 50, big, Tolerance(1e-4, 1e-5))
    assert not d.ok and d.max_abs == 50
    assert diff_arrays("o", big + 50, big, TOL, int_tolerance=50).ok
    assert diff_arrays("o", np.array([1, 2], np.int32), np.array([1, 2], np.int64), TOL).ok


def test_bool_and_kind_mismatch():
    assert not diff_arrays("b", np.array([True, False]), np.array([True, True]), TOL).ok
    d = diff_arrays("b", np.array([1.0, 0.0], np.float32), np.array([1, 0], np.int64), TOL)
    assert not d.ok and "element type float32 where the original has int64" in d.problem


def test_inf_must_be_in_the_same_places():
    e = np.array([np.inf, 1.0], np.float32)
    assert diff_arrays("f", e.copy(), e, TOL).ok
    d = diff_arrays("f", np.array([3e38, 1.0], np.float32), e, TOL)
    assert not d.ok and "Inf at 1 positions" in d.problem
    assert not diff_arrays("f", np.array([-np.inf, 1.0], np.float32), e, TOL).ok
    assert not diff_arrays(
        "f", np.array([np.nan, 1.0], np.float32), np.array([0.0, 1.0], np.float32), TOL
    ).ok


def _model() -> ir.Model:
    table = np.zeros((7, 2), np.float32)
    proto = make_model(
        [
            h.make_node("Gather", ["table", "ids"], ["g"], name="emb"),
            h.make_node("Relu", ["x"], ["y"], name="relu"),
            h.make_node("Add", ["n", "n"], ["n2"], name="add"),
        ],
        [vi("x", T.FLOAT, ["batch", 4]), vi("ids", T.INT64, ["batch", 3]), vi("n", T.INT32, [2])],
        [vi("y", T.FLOAT, ["batch", 4]), vi("g", T.FLOAT, ["batch", 3, 2]), vi("n2", T.INT32, [2])],
        {"table": table},
    )
    return ir.from_proto(proto)


def test_candidates_reach_further_and_keep_index_ranges():
    model = _model()
    config = InputsConfig(specs={"x": InputSpec(range=(0.0, 2.0))})
    plan = plan_inputs(model, config, FeedHints())
    samples = {s.name: s for s in candidate_samples(model, config, FeedHints(), plan)}
    assert list(samples)[:3] == ["second size", "wide x10", "wide x1000"]
    second = samples["second size"]
    assert (
        second.feeds["x"].shape
        == (plan.feeds["x"].shape[0] + 1, 4)
        == (*second.feeds["ids"].shape[:1], 4)
    )
    wide = samples["wide x1000"]
    assert (
        wide.feeds["x"].min() >= 0.0 and wide.feeds["x"].max() > 100
    )  # declared non-negative range, wider
    assert (
        wide.feeds["ids"].min() >= 0 and wide.feeds["ids"].max() < 7
    )  # index input: the indexed size
    assert (
        np.abs(wide.feeds["n"]).max() > 10 and wide.feeds["n"].dtype == np.int32
    )  # beyond [0, 10)
    assert wide.scale == 1000.0


def test_given_inputs_are_not_varied():
    model = _model()
    arrays = {
        "x": np.ones((2, 4), np.float32),
        "ids": np.zeros((2, 3), np.int64),
        "n": np.ones(2, np.int32),
    }
    config = InputsConfig(arrays=arrays)
    plan = plan_inputs(model, config, FeedHints())
    assert list(candidate_samples(model, config, FeedHints(), plan)) == []


def test_dropped_samples_are_reported():
    import surgery
    from surgery.pass_base import SurgeryPass, SurgeryResult

    class Claim(SurgeryPass):
        name = "test-claim-change"

        def call(self, model):
            return SurgeryResult(model, True)

    # Exp overflows to Inf for inputs beyond ~88: the x1000 sample is dropped and replaced
    proto = make_model(
        [h.make_node("Exp", ["x"], ["y"], name="exp")],
        [vi("x", T.FLOAT, [2, 4])],
        [vi("y", T.FLOAT, [2, 4])],
    )
    _, report = surgery.apply(proto, [Claim()])
    assert any("'wide x1000' (the original gives NaN/Inf)" in n for n in report.notes)
    samples = report.steps[0].gates["parity"].samples
    assert len(samples) == 3 and "wide x1000" not in samples
    onnx.checker.check_model(proto)


def test_string_outputs_are_equal_or_incomparable_never_measured():
    same = diff_arrays("s", np.array(["a", "b"]), np.array(["a", "b"]), TOL)
    assert same.ok and (same.max_abs, same.max_rel, same.cosine, same.problem) == (0, 0, 1, None)
    differ = diff_arrays("s", np.array(["a", "c"]), np.array(["a", "b"]), TOL)
    assert not differ.ok and differ.problem == "string values differ"
    assert (differ.max_abs, differ.max_rel, differ.cosine) == (np.inf, np.inf, 0.0)
