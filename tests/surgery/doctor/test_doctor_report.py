"""diagnose(), the report (ordering, exit code, JSON) and the human table."""

import json

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor import Finding, Severity, diagnose, render_table
from surgery.doctor.finding import DoctorReport
from surgery.testing import make_model, vi


def _problem_model():
    return make_model(
        [
            h.make_node("Einsum", ["a", "b"], ["m"], equation="ij,jk->ik", name="mm"),
            h.make_node("Gather", ["m", "i"], ["y"], axis=1, name="last_col"),
            h.make_node("Dropout", ["y"], ["z"], name="drop"),
        ],
        [vi("a", T.FLOAT, ["n", 3]), vi("b", T.FLOAT, [3, 4])],
        [vi("z", T.FLOAT, ["n", 1])],
        {"i": np.array([-1], np.int64)},
        opset=17,
    )


def test_diagnose_orders_findings_worst_first_and_sets_exit_code():
    report = diagnose(_problem_model())
    severities = [f.severity for f in report.findings]
    assert severities == sorted(severities, key=lambda s: s.rank)
    assert {f.check for f in report.findings} == {
        "dynamic-dims",
        "gather-negative-indices",
        "aicpu-only",
        "dropout",
    }
    assert report.will_fail and report.exit_code == 1
    assert report.counts() == {"will-fail": 2, "slow": 1, "precision-risk": 0, "info": 1}
    assert report.opsets == {"ai.onnx": 17} and report.node_count == 3


def test_diagnose_accepts_paths_protos_and_ir_models_and_changes_none(tmp_path):
    proto = _problem_model()
    before = proto.SerializeToString()
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    ir_model = ir.from_proto(proto)
    reports = [diagnose(path), diagnose(proto), diagnose(ir_model)]
    assert len({tuple(f.title for f in r.findings) for r in reports}) == 1
    assert reports[0].model == str(path)
    assert proto.SerializeToString() == before
    assert (
        ir.to_proto(ir_model).SerializeToString()
        == ir.to_proto(ir.from_proto(proto)).SerializeToString()
    )


def test_clean_model_exits_0():
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [1, 4])],
        [vi("y", T.FLOAT, [1, 4])],
    )
    report = diagnose(model)
    assert report.findings == [] and report.exit_code == 0
    assert "No findings" in render_table(report)


def test_json_round_trip():
    data = json.loads(json.dumps(diagnose(_problem_model(), soc="Ascend310P3").to_dict()))
    assert (
        data["soc"] == "Ascend310P3"
        and data["soc_family"] == "Ascend310P"
        and data["will_fail"] is True
    )
    gather = next(f for f in data["findings"] if f["check"] == "gather-negative-indices")
    assert gather == {
        "check": "gather-negative-indices",
        "severity": "will-fail",
        "title": gather["title"],
        "nodes": ["last_col"],
        "why": gather["why"],
        "fix": ["normalize-gather-indices"],
        "fix_note": gather["fix_note"],
        "source": gather["source"],
        "details": {},
    }
    assert any("canndev-2022" in s for s in data["data_sources"])


def test_table_lists_each_finding_with_why_and_fix():
    report = diagnose(_problem_model(), soc="Ascend910B2")
    text = render_table(report)
    assert "SoC: Ascend910B2 (no AICPU list for it" in text
    for i, f in enumerate(report.findings, 1):
        assert f"{i}. [{f.severity.value}] {f.title}" in text
    assert "einsum-to-matmul" in text and "ATC will fail on this model (exit 1)" in text


def test_report_sorting_is_stable_by_severity_then_check():
    mk = lambda sev, check: Finding(check=check, severity=sev, title=check, nodes=[], why="")  # noqa: E731
    report = DoctorReport(
        [
            mk(Severity.INFO, "a"),
            mk(Severity.SLOW, "z"),
            mk(Severity.WILL_FAIL, "m"),
            mk(Severity.SLOW, "b"),
        ]
    )
    assert [f.check for f in report.findings] == ["m", "b", "z", "a"]
    assert DoctorReport([mk(Severity.SLOW, "z")]).exit_code == 0
