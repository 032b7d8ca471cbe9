"""The JSON reports follow surgery/data/report.schema.json: single, bucket, failed and prepare runs.

jsonschema is not a dependency: :func:`surgery.testing.schema_errors`, a small validator for the subset
the schema uses (type, required, properties, items, enum, additionalProperties, $ref), checks every
report; when jsonschema is installed it checks them too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.cli import main
from surgery.testing import make_model, report_schema, schema_errors, vi


def errors(value: Any, schema: dict) -> list[str]:
    return schema_errors(value, schema)


@pytest.fixture(scope="module")
def schema() -> dict:
    # shipped in the package (package-data), read the way an installed copy is
    return report_schema()


def _validate(doc: dict, schema: dict) -> None:
    assert errors(doc, schema) == []
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(doc, schema)


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    """x[batch, 8] → MatMul → Relu: a dynamic batch to fix or bucket."""
    w = (np.random.default_rng(0).standard_normal((8, 4)) * 0.5).astype(np.float32)
    m = make_model(
        [
            h.make_node("MatMul", ["x", "w"], ["m"], name="/fc/MatMul"),
            h.make_node("Relu", ["m"], ["y"], name="/act/Relu"),
        ],
        [vi("x", T.FLOAT, ["batch", 8])],
        [vi("y", T.FLOAT, ["batch", 4])],
        {"w": w},
    )
    path = tmp_path / "net.onnx"
    onnx.save(m, path)
    return path


TOP = [
    "schema_version",
    "kind",
    "tool",
    "timestamp",
    "source",
    "ok",
    "error",
    "outputs",
    "seconds",
    "steps",
    "buckets",
]


def test_single_and_bucket_runs_have_the_same_top_level_keys(model, tmp_path, schema):
    single, bucket = tmp_path / "single.json", tmp_path / "bucket.json"
    assert (
        main(
            [
                "apply",
                "make-static,cleanup",
                str(model),
                "-o",
                str(tmp_path / "o.onnx"),
                "--input-shape",
                "x:1,8",
                "--report",
                str(single),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "apply",
                "make-static,cleanup",
                str(model),
                "-o",
                str(tmp_path / "b.onnx"),
                "--buckets",
                "batch=1,2",
                "--report",
                str(bucket),
            ]
        )
        == 0
    )
    a, b = json.loads(single.read_text()), json.loads(bucket.read_text())
    for doc in (a, b):
        _validate(doc, schema)
        assert list(doc)[: len(TOP)] == TOP
    assert a["kind"] == "single" and [s["name"] for s in a["steps"]] == [
        "fix-shapes",
        "make-static",
        "cleanup",
    ]
    assert (
        b["kind"] == "buckets"
        and b["steps"] == []
        and [x["label"] for x in b["buckets"]] == ["batch1", "batch2"]
    )
    assert b["outputs"] == [str(tmp_path / "b.batch1.onnx"), str(tmp_path / "b.batch2.onnx")]
    for x in b["buckets"]:
        assert x["report"]["kind"] == "single" and x["report"]["steps"]
    # float outputs carry an error histogram; the counts cover every element of y (1×4)
    parity = a["steps"][0]["parity"][0]
    assert parity["name"] == "y" and sum(parity["histogram"]) == 4


def test_a_failed_run_report_follows_the_schema(model, tmp_path, schema):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "leaky.py").write_text(
        "from surgery.rules import Op, Rule, Var\n\n"
        "class R(Rule):\n    name = 'leaky'\n    pattern = Op('Relu', Var('x'))\n\n"
        "    def build(self, b, m):\n        return [b.op('LeakyRelu', m['x'], alpha=0.5)]\n\nRULES = [R]\n"
    )
    report = tmp_path / "fail.json"
    code = main(
        [
            "apply",
            "rewrite",
            str(model),
            "-o",
            str(tmp_path / "o.onnx"),
            "--set",
            "rewrite.rules=leaky:RULES",
            "--set",
            f"rewrite.path={json.dumps(str(rules))}",
            "--input-shape",
            "x:2,8",
            "--report",
            str(report),
            "--allow-code",
        ]
    )
    assert code == 1 and not (tmp_path / "o.onnx").exists()
    doc = json.loads(report.read_text())
    _validate(doc, schema)
    assert doc["ok"] is False and "parity" in doc["error"]


def test_prepare_reports_follow_the_schema(model, tmp_path, schema, capsys):
    out = tmp_path / "p.json"
    assert (
        main(
            [
                "prepare",
                str(model),
                "-o",
                str(tmp_path / "p.onnx"),
                "--input-shape",
                "x:1,8",
                "--report",
                str(out),
                "--progress",
                "never",
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    _validate(doc, schema)
    assert (
        doc["kind"] == "prepare"
        and doc["ready"] is True
        and doc["steps"]
        and doc["runs"][0]["kind"] == "single"
    )
    capsys.readouterr()
    assert (
        main(
            [
                "prepare",
                str(model),
                "-o",
                str(tmp_path / "q.onnx"),
                "--buckets",
                "batch=1,2",
                "--report",
                "-",
                "--progress",
                "never",
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    doc = json.loads(printed.out)  # stdout is the JSON alone; the atc lines went to stderr
    _validate(doc, schema)
    # one atc line per bucket, then ATC's single-model gear alternative
    assert (
        doc["kind"] == "prepare"
        and len(doc["buckets"]) == 2
        and printed.err.count("atc: atc ") == 3
    )
    assert "--dynamic_batch_size=1,2" in printed.err.splitlines()[-1]


def test_the_validator_rejects_what_breaks_the_schema(schema, model, tmp_path):
    report = tmp_path / "r.json"
    assert (
        main(
            [
                "apply",
                "make-static",
                str(model),
                "-o",
                str(tmp_path / "o.onnx"),
                "--input-shape",
                "x:1,8",
                "--report",
                str(report),
            ]
        )
        == 0
    )
    doc = json.loads(report.read_text())
    broken = dict(doc, ok="yes")
    del broken["steps"]
    found = errors(broken, schema)
    assert "$: missing 'steps'" in found and "$.ok: str is not boolean" in found
    step = dict(doc["steps"][0], surprise=1)
    assert errors(dict(doc, steps=[step]), schema) == ["$.steps[0]: unexpected key 'surprise'"]


def test_report_files_stay_under_the_artifacts_key_and_the_old_attribute_name_still_works():
    """``Report.artifacts`` (paths written) was renamed ``files``: a pass's
    ``SurgeryResult.artifacts`` are products, not paths. The JSON key and the old name stay."""
    from surgery.report import Report

    report = Report(source="m.onnx")
    report.files["manifest"] = "out.split.json"
    assert report.to_dict()["artifacts"] == {"manifest": "out.split.json"}
    assert "wrote manifest: out.split.json" in report.table()
    assert report.artifacts is report.files
    report.artifacts = {"tail": "out.tail.onnx"}
    assert report.files == {"tail": "out.tail.onnx"}
