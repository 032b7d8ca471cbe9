"""maxpool-indices: ATC's MaxPool mapping rejects the Indices output."""

from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.maxpool_indices import check_maxpool_indices
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi

X = vi("x", T.FLOAT, [1, 1, 4, 4])


def test_unused_indices_are_dropped_by_a_pass(run_check):
    model = make_model(
        [h.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="pool")],
        [X],
        [vi("y", T.FLOAT, [1, 1, 3, 3])],
    )
    (finding,) = run_check(check_maxpool_indices, model)
    assert finding.severity is Severity.WILL_FAIL and finding.fix == ["drop-maxpool-indices"]
    assert finding.nodes == ["pool"]


def test_used_indices_have_no_fix_and_name_the_consumer(run_check):
    model = make_model(
        [
            h.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="pool"),
            h.make_node("Cast", ["idx"], ["idx_f"], to=T.FLOAT, name="use_idx"),
        ],
        [X],
        [vi("y", T.FLOAT, [1, 1, 3, 3]), vi("idx_f", T.FLOAT, [1, 1, 3, 3])],
    )
    (finding,) = run_check(check_maxpool_indices, model)
    assert finding.fix == [] and "use_idx" in finding.why


def test_maxpool_without_indices_passes(run_check):
    model = make_model(
        [h.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], name="pool")],
        [X],
        [vi("y", T.FLOAT, [1, 1, 3, 3])],
    )
    assert run_check(check_maxpool_indices, model) == []
