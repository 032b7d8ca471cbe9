"""The JSON reports follow surgery/data/report.schema.json: single, bucket, failed and prepare runs.

jsonschema is not a dependency: a small validator for the subset the schema uses (type, required,
properties, items, enum, additionalProperties, $ref) checks every report; when jsonschema is
installed it checks them too.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.cli import main
from surgery.testing import make_model, vi

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _resolve(root: dict, ref: str) -> dict:
    assert ref.startswith("#"), ref
    node: Any = root
    for part in [p for p in ref[1:].split("/") if p]:
        node = node[part]
    return node


def errors(value: Any, schema: dict, root: dict | None = None, where: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (the subset of JSON Schema the report schema uses)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        return errors(value, _resolve(root, schema["$ref"]), root, where)
    out: list[str] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, n) for n in names):
            return [f"{where}: {type(value).__name__} is not {'/'.join(names)}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} not one of {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{where}: missing {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                out += errors(item, props[key], root, f"{where}.{key}")
            elif extra is False:
                out.append(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                out += errors(item, extra, root, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += errors(item, schema["items"], root, f"{where}[{i}]")
    return out


@pytest.fixture(scope="module")
def schema() -> dict:
    # shipped in the package (package-data), read the way an installed copy is
    return json.loads(resources.files("surgery").joinpath("data/report.schema.json").read_text(encoding="utf-8"))


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
    m = make_model([h.make_node("MatMul", ["x", "w"], ["m"], name="/fc/MatMul"),
                    h.make_node("Relu", ["m"], ["y"], name="/act/Relu")],
                   [vi("x", T.FLOAT, ["batch", 8])], [vi("y", T.FLOAT, ["batch", 4])], {"w": w})
    path = tmp_path / "net.onnx"
    onnx.save(m, path)
    return path


TOP = ["schema_version", "kind", "tool", "timestamp", "source", "ok", "error", "outputs", "seconds", "steps", "buckets"]


def test_single_and_bucket_runs_have_the_same_top_level_keys(model, tmp_path, schema):
    single, bucket = tmp_path / "single.json", tmp_path / "bucket.json"
    assert main(["apply", "make-static,cleanup", str(model), "-o", str(tmp_path / "o.onnx"),
                 "--input-shape", "x:1,8", "--report", str(single)]) == 0
    assert main(["apply", "make-static,cleanup", str(model), "-o", str(tmp_path / "b.onnx"),
                 "--buckets", "batch=1,2", "--report", str(bucket)]) == 0
    a, b = json.loads(single.read_text()), json.loads(bucket.read_text())
    for doc in (a, b):
        _validate(doc, schema)
        assert list(doc)[: len(TOP)] == TOP
    assert a["kind"] == "single" and [s["name"] for s in a["steps"]] == ["fix-shapes", "make-static", "cleanup"]
    assert b["kind"] == "buckets" and b["steps"] == [] and [x["label"] for x in b["buckets"]] == ["batch1", "batch2"]
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
        "    def build(self, b, m):\n        return [b.op('LeakyRelu', m['x'], alpha=0.5)]\n\nRULES = [R]\n")
    report = tmp_path / "fail.json"
    code = main(["apply", "rewrite", str(model), "-o", str(tmp_path / "o.onnx"), "--set", "rewrite.rules=leaky:RULES",
                 "--set", f"rewrite.path={json.dumps(str(rules))}", "--input-shape", "x:2,8", "--report", str(report),
                 "--allow-code"])
    assert code == 1 and not (tmp_path / "o.onnx").exists()
    doc = json.loads(report.read_text())
    _validate(doc, schema)
    assert doc["ok"] is False and "parity" in doc["error"]


def test_prepare_reports_follow_the_schema(model, tmp_path, schema, capsys):
    out = tmp_path / "p.json"
    assert main(["prepare", str(model), "-o", str(tmp_path / "p.onnx"), "--input-shape", "x:1,8",
                 "--report", str(out), "--progress", "never"]) == 0
    doc = json.loads(out.read_text())
    _validate(doc, schema)
    assert doc["kind"] == "prepare" and doc["ready"] is True and doc["steps"] and doc["runs"][0]["kind"] == "single"
    capsys.readouterr()
    assert main(["prepare", str(model), "-o", str(tmp_path / "q.onnx"), "--buckets", "batch=1,2",
                 "--report", "-", "--progress", "never"]) == 0
    printed = capsys.readouterr()
    doc = json.loads(printed.out)  # stdout is the JSON alone; the atc lines went to stderr
    _validate(doc, schema)
    assert doc["kind"] == "prepare" and len(doc["buckets"]) == 2 and printed.err.count("atc: atc ") == 2


def test_the_validator_rejects_what_breaks_the_schema(schema, model, tmp_path):
    report = tmp_path / "r.json"
    assert main(["apply", "make-static", str(model), "-o", str(tmp_path / "o.onnx"), "--input-shape", "x:1,8",
                 "--report", str(report)]) == 0
    doc = json.loads(report.read_text())
    broken = dict(doc, ok="yes")
    del broken["steps"]
    found = errors(broken, schema)
    assert "$: missing 'steps'" in found and "$.ok: str is not boolean" in found
    step = dict(doc["steps"][0], surprise=1)
    assert errors(dict(doc, steps=[step]), schema) == ["$.steps[0]: unexpected key 'surprise'"]
