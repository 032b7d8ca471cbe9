"""names: op names repeated within a graph (as ATC names them), and inputs ATC's syntax cannot express."""

from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.names import check_names
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def test_repeated_names_will_fail(run_check):
    model = make_model(
        [
            h.make_node("Relu", ["x"], ["a"], name="act"),
            h.make_node("Relu", ["a"], ["b"], name="act"),
        ],
        [vi("x", T.FLOAT, [2])],
        [vi("b", T.FLOAT, [2])],
    )
    (finding,) = run_check(check_names, model)
    assert (
        finding.severity is Severity.WILL_FAIL
        and finding.nodes == ["act (x2)"]
        and "E13009" in finding.why
    )


def test_atc_generated_names_and_input_names_collide(run_check):
    # ATC names the unnamed Relu 'Relu_0', which a named node already holds; a node named like
    # the input collides with the Data node ATC creates for it.
    model = make_model(
        [
            h.make_node("Relu", ["x"], ["a"], name="Relu_0"),
            h.make_node("Relu", ["a"], ["b"]),
            h.make_node("Neg", ["b"], ["c"], name="x"),
        ],
        [vi("x", T.FLOAT, [2])],
        [vi("c", T.FLOAT, [2])],
    )
    (finding,) = run_check(check_names, model)
    assert sorted(finding.nodes) == ["Relu_0 (x2)", "x (x2)"]


def test_input_name_with_separator_is_info(run_check):
    model = make_model(
        [h.make_node("Relu", ["a;b"], ["y"], name="r")],
        [vi("a;b", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
    )
    (finding,) = run_check(check_names, model)
    assert finding.severity is Severity.INFO and finding.nodes == ["a;b"]


def test_unique_names_pass(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["a"], name="r1"), h.make_node("Relu", ["a"], ["b"])],
        [vi("x", T.FLOAT, [2])],
        [vi("b", T.FLOAT, [2])],
    )
    assert run_check(check_names, model) == []
