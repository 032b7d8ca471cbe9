"""random: random ops in an inference graph; hand-written training dropout points at remove-dropout."""

import numpy as np
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor import diagnose, emit_pipeline
from surgery.doctor.checks.random_ops import check_random_ops
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def _hand_written_dropout(rescale: float = 1 / 0.7):
    return make_model(
        [
            h.make_node("RandomUniformLike", ["x"], ["u"], name="rand"),
            h.make_node("Greater", ["u", "p"], ["keep"], name="gt"),
            h.make_node("Cast", ["keep"], ["m"], to=T.FLOAT, name="cast"),
            h.make_node("Mul", ["x", "m"], ["xm"], name="mul"),
            h.make_node("Mul", ["xm", "s"], ["y"], name="scale"),
        ],
        [vi("x", T.FLOAT, [2, 4])],
        [vi("y", T.FLOAT, [2, 4])],
        {"p": np.array(0.3, np.float32), "s": np.array(rescale, np.float32)},
    )


def test_hand_written_dropout_will_fail_and_points_at_remove_dropout(run_check):
    (finding,) = run_check(check_random_ops, _hand_written_dropout())
    assert finding.severity is Severity.WILL_FAIL and finding.nodes == ["rand"]
    assert finding.fix == ["remove-dropout"]


def test_other_random_ops_are_a_precision_risk_without_fix(run_check):
    (finding,) = run_check(check_random_ops, _hand_written_dropout(rescale=5.0))
    assert (
        finding.severity is Severity.PRECISION_RISK
        and finding.fix == []
        and finding.nodes == ["rand"]
    )
    noise = make_model(
        [
            h.make_node("RandomNormal", [], ["n"], shape=[2, 4], name="noise"),
            h.make_node("Add", ["x", "n"], ["y"], name="add"),
        ],
        [vi("x", T.FLOAT, [2, 4])],
        [vi("y", T.FLOAT, [2, 4])],
    )
    (finding,) = run_check(check_random_ops, noise)
    assert finding.nodes == ["noise"] and finding.severity is Severity.PRECISION_RISK


def test_deterministic_model_passes(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [4])],
        [vi("y", T.FLOAT, [4])],
    )
    assert run_check(check_random_ops, model) == []


def test_emitted_pipeline_removes_the_hand_written_dropout():
    model = ir.from_proto(_hand_written_dropout())
    emitted = emit_pipeline(diagnose(model), model)
    assert "remove-dropout" in emitted.steps
