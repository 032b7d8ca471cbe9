"""value-dependent-if: an If on an input's value gets a pin-inputs suggestion with the compared values."""

import numpy as np
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.doctor import diagnose, emit_pipeline
from surgery.doctor.checks.value_if import check_value_dependent_if
from surgery.doctor.finding import Severity
from surgery.passes.make_static import MakeStatic
from surgery.passes.pin_inputs import PinInputs
from surgery.testing import make_model, op_counts, ort_run, vi


def _sample_rate_model():
    """What voice-activity detectors do: one branch per sample rate, chosen by an input."""
    then = h.make_graph(
        [h.make_node("Mul", ["x", "k16"], ["a"])],
        "sr16k",
        [],
        [vi("a", T.FLOAT, [1, 8])],
        [h.make_tensor("k16", T.FLOAT, [], [2.0])],
    )
    other = h.make_graph(
        [h.make_node("Mul", ["x", "k8"], ["b"])],
        "sr8k",
        [],
        [vi("b", T.FLOAT, [1, 8])],
        [h.make_tensor("k8", T.FLOAT, [], [3.0])],
    )
    return make_model(
        [
            h.make_node("Equal", ["sr", "rate16k"], ["is16k"], name="eq"),
            h.make_node(
                "If", ["is16k"], ["y"], name="by_rate", then_branch=then, else_branch=other
            ),
        ],
        [vi("x", T.FLOAT, [1, 8]), vi("sr", T.INT64, [])],
        [vi("y", T.FLOAT, [1, 8])],
        {"rate16k": np.array(16000, np.int64)},
    )


def test_if_on_an_input_value_suggests_pin_inputs_with_the_compared_value(run_check):
    (finding,) = run_check(check_value_dependent_if, _sample_rate_model())
    assert finding.nodes == ["by_rate"] and finding.fix == ["pin-inputs"]
    assert finding.details["inputs"] == ["sr"] and finding.details["compared_with"] == [16000]
    assert "16000" in finding.title and "sr = 16000" in finding.fix_note
    assert finding.severity is Severity.INFO


def test_if_on_shapes_or_on_a_data_tensor(run_check):
    shape_if = make_model(
        [
            h.make_node("Shape", ["x"], ["s"]),
            h.make_node("ReduceSum", ["s"], ["n"], keepdims=0),
            h.make_node("Greater", ["n", "zero"], ["c"]),
            h.make_node(
                "If",
                ["c"],
                ["y"],
                name="on_shape",
                then_branch=h.make_graph(
                    [h.make_node("Neg", ["x"], ["a"])], "t", [], [vi("a", T.FLOAT, [1, 8])]
                ),
                else_branch=h.make_graph(
                    [h.make_node("Abs", ["x"], ["b"])], "e", [], [vi("b", T.FLOAT, [1, 8])]
                ),
            ),
        ],
        [vi("x", T.FLOAT, [1, 8])],
        [vi("y", T.FLOAT, [1, 8])],
        {"zero": np.array(0, np.int64)},
    )
    assert run_check(check_value_dependent_if, shape_if) == []
    data_if = make_model(
        [
            h.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
            h.make_node("Greater", ["m", "one"], ["c"]),
            h.make_node(
                "If",
                ["c"],
                ["y"],
                name="on_data",
                then_branch=h.make_graph(
                    [h.make_node("Neg", ["x"], ["a"])], "t", [], [vi("a", T.FLOAT, [1, 64])]
                ),
                else_branch=h.make_graph(
                    [h.make_node("Abs", ["x"], ["b"])], "e", [], [vi("b", T.FLOAT, [1, 64])]
                ),
            ),
        ],
        [vi("x", T.FLOAT, [1, 64])],
        [vi("y", T.FLOAT, [1, 64])],
        {"one": np.array(1.0, np.float32)},
    )
    (finding,) = run_check(check_value_dependent_if, data_if)
    assert finding.fix == [] and finding.details["inputs"] == ["x"]


def test_the_suggested_pin_folds_the_if(tmp_path):
    """Before: no suggestion at all. After: the values in the finding, applied, leave no If."""
    proto = _sample_rate_model()
    report = diagnose(ir.from_proto(proto))
    (finding,) = [f for f in report.findings if f.check == "value-dependent-if"]
    emitted = emit_pipeline(report, ir.from_proto(proto))
    assert '# name = "pin-inputs"' in emitted.text and "16000" in emitted.text
    model, _run = surgery.apply(
        proto, [PinInputs(values={"sr": finding.details["compared_with"][0]}), MakeStatic()]
    )
    assert "If" not in op_counts(model) and [i.name for i in model.graph.input] == ["x"]
    x = np.arange(8, dtype=np.float32).reshape(1, 8)
    np.testing.assert_allclose(ort_run(model, {"x": x})["y"], 2 * x)
