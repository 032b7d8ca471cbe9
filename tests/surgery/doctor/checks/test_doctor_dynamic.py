"""dynamic-dims: ATC needs static input shapes (E10001)."""

from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.dynamic import check_dynamic_dims
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def test_dynamic_batch_and_spatial_dims_will_fail(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, ["batch", 3, "h", None])],
        [vi("y", T.FLOAT, ["batch", 3, "h", None])],
    )
    (finding,) = run_check(check_dynamic_dims, model)
    assert finding.severity is Severity.WILL_FAIL and "E10001" in finding.why
    assert finding.nodes == ["x [batch, 3, h, ?]"]
    assert finding.fix == ["fix-shapes", "make-static", "assert-static"]
    assert finding.details["dim_names"] == ["batch", "h"]


def test_unknown_rank_input_will_fail(run_check):
    graph = h.make_graph(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        "g",
        [vi("x", T.FLOAT, None)],
        [vi("y", T.FLOAT, None)],
    )
    model = h.make_model(
        graph, opset_imports=[h.make_opsetid("", 17)]
    )  # the checker wants a shape here
    (finding,) = run_check(check_dynamic_dims, model)
    assert finding.nodes == ["x unknown rank"]


def test_static_inputs_with_stale_annotations_are_info(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [1, 3])],
        [vi("y", T.FLOAT, ["n", 3])],
    )
    (finding,) = run_check(check_dynamic_dims, model)
    assert (
        finding.severity is Severity.INFO
        and finding.nodes == ["y"]
        and finding.fix == ["make-static"]
    )


def test_static_model_passes(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [1, 3])],
        [vi("y", T.FLOAT, [1, 3])],
    )
    assert run_check(check_dynamic_dims, model) == []


def test_dims_after_data_dependent_ops_are_not_stale(run_check):
    model = make_model(
        [
            h.make_node("NonZero", ["x"], ["nz"], name="nz"),
            h.make_node("Transpose", ["nz"], ["y"], name="t"),
        ],
        [vi("x", T.FLOAT, [4])],
        [vi("y", T.INT64, ["k", 1])],
    )
    assert run_check(check_dynamic_dims, model) == []
