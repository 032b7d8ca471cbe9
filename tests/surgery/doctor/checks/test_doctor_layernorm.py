"""layernorm: ATC's LayerNormalization takes float16 only; float32 data runs in float16 anyway."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.layernorm import check_layernorm
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def _ln(dtype=T.FLOAT):
    np_t = np.float32 if dtype == T.FLOAT else np.float16
    return make_model(
        [h.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln", axis=-1)],
        [vi("x", dtype, [1, 4, 8])],
        [vi("y", dtype, [1, 4, 8])],
        {"g": np.ones(8, np_t), "b": np.zeros(8, np_t)},
    )


def test_float32_layernorm_is_a_precision_risk(run_check):
    (finding,) = run_check(check_layernorm, _ln(), soc="Ascend310P3")
    assert finding.severity is Severity.PRECISION_RISK and finding.nodes == ["ln"]
    assert (
        "Ascend310P3" in finding.title
        and "float16 only" in finding.why
        and "surgery precision" in finding.fix_note
    )


def test_float16_layernorm_passes(run_check):
    assert run_check(check_layernorm, _ln(T.FLOAT16)) == []
