"""nms: NonMaxSuppression with 3 or 4 inputs crashes ATC; its output is padded on ATC."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.nms import check_nms
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi

IO = {
    "inputs": [vi("boxes", T.FLOAT, [1, 8, 4]), vi("scores", T.FLOAT, [1, 2, 8])],
    "outputs": [vi("sel", T.INT64, [None, 3])],
}


def _nms(n_inputs, limit=10):
    names = ["boxes", "scores", "max_out", "iou", "score_th"][:n_inputs]
    inits = {
        "max_out": np.array([limit], np.int64),
        "iou": np.array([0.5], np.float32),
        "score_th": np.array([0.1], np.float32),
    }
    return make_model(
        [h.make_node("NonMaxSuppression", names, ["sel"], name="nms")],
        IO["inputs"],
        IO["outputs"],
        {k: v for k, v in inits.items() if k in names},
    )


def test_three_inputs_will_fail(run_check):
    findings = {f.severity: f for f in run_check(check_nms, _nms(3))}
    assert findings[Severity.WILL_FAIL].fix == ["complete-nms-inputs"]
    assert findings[Severity.WILL_FAIL].nodes == ["nms"]
    assert findings[Severity.PRECISION_RISK].fix == ["split-postprocess"]


def test_five_inputs_only_carry_the_padding_risk(run_check):
    (finding,) = run_check(check_nms, _nms(5))
    assert (
        finding.severity is Severity.PRECISION_RISK
        and finding.details["max_output_boxes_over_limit"] == []
    )
    (big,) = run_check(check_nms, _nms(5, limit=1000))
    assert big.details["max_output_boxes_over_limit"] == ["nms"]


def test_no_nms_passes(run_check):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
    )
    assert run_check(check_nms, model) == []


def test_float32_boxes_on_socs_that_need_float16(run_check):
    for soc in ("Ascend310", "Ascend910B"):
        found = [f for f in run_check(check_nms, _nms(5), soc=soc) if "float32 boxes" in f.title]
        assert (
            len(found) == 1
            and found[0].fix == ["split-postprocess"]
            and found[0].details == {"soc": soc}
        )
    for soc in (None, "Ascend310P3"):
        assert not [f for f in run_check(check_nms, _nms(5), soc=soc) if "float32 boxes" in f.title]


def test_over_700_boxes_per_class(run_check):
    padded = next(f for f in run_check(check_nms, _nms(5, limit=701)) if "padded" in f.title)
    assert padded.details["max_output_boxes_over_limit"] == ["nms"] and "700" in padded.why
    padded = next(f for f in run_check(check_nms, _nms(5, limit=700)) if "padded" in f.title)
    assert padded.details["max_output_boxes_over_limit"] == []
