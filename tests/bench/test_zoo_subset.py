"""bench/zoo: the zoo's own checks on small graphs, and the CI subset of real models end to end.

The subset (``ci`` in bench/zoo/models.toml) runs each model through the same code as
``python bench/zoo/run.py --subset ci``: doctor -> emitted pipeline + the user's decisions ->
apply -> independent checks (full checker, ORT, static by onnx inference, no control flow,
opset <= 18, no float64, parity on a fresh sample) -> doctor clean -> OpenVINO static and
matching. It needs the ``zoo`` extra (transformers, openvino, onnxslim, polygraphy) and PyPI
access for ``pip download``; without the extra it is skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

ZOO = Path(__file__).resolve().parents[2] / "bench" / "zoo"
sys.path.insert(0, str(ZOO))
import checks  # noqa: E402 - bench/zoo is not a package: importable only after the sys.path line above

_spec = importlib.util.spec_from_file_location("zoo_run", ZOO / "run.py")
assert _spec is not None and _spec.loader is not None
zoo_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo_run)

EXTRA = ("transformers", "openvino", "onnxslim", "polygraphy", "torch", "onnxscript")
MISSING = [name for name in EXTRA if importlib.util.find_spec(name) is None]


def _model(nodes, inputs, outputs, opset=17, initializers=()):
    graph = h.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=8)


def _save(model, tmp_path, name="m.onnx") -> Path:
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------ the independent checks catch what they must

def test_static_check_sees_a_dynamic_tensor_the_annotations_hide():
    # y is annotated static but its real shape follows the dynamic input: inference must win
    model = _model([h.make_node("Relu", ["x"], ["y"])], [h.make_tensor_value_info("x", T.FLOAT, ["n", 4])],
                   [h.make_tensor_value_info("y", T.FLOAT, [1, 4])])
    ok, detail = checks.check_static(model)
    assert not ok and "not static" in detail
    static = _model([h.make_node("Relu", ["x"], ["y"])], [h.make_tensor_value_info("x", T.FLOAT, [2, 4])],
                    [h.make_tensor_value_info("y", T.FLOAT, [2, 4])])
    assert checks.check_static(static) == (True, "")


def test_static_check_folds_shape_arithmetic_by_data_propagation():
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("Reshape", ["x", "s"], ["y"])]
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [2, 3])], [h.make_tensor_value_info("y", T.FLOAT, None)])
    assert checks.check_static(model) == (True, "")


def test_control_flow_float64_and_opset_checks():
    then = h.make_graph([h.make_node("Identity", ["x"], ["t"])], "then", [], [h.make_tensor_value_info("t", T.FLOAT, [1])])
    other = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [], [h.make_tensor_value_info("e", T.FLOAT, [1])])
    model = _model([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                   [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [1])],
                   [h.make_tensor_value_info("y", T.FLOAT, [1])], opset=19)
    assert checks.check_no_control_flow(model) == (False, "1 If")
    assert checks.check_opset(model)[0] is False
    assert checks.node_count(model) == 3
    double = _model([h.make_node("Cast", ["x"], ["d"], to=T.DOUBLE), h.make_node("Cast", ["d"], ["y"], to=T.FLOAT)],
                    [h.make_tensor_value_info("x", T.FLOAT, [1])], [h.make_tensor_value_info("y", T.FLOAT, [1])])
    ok, detail = checks.check_no_float64(double)
    assert not ok and "float64" in detail


def test_parity_catches_a_changed_model(tmp_path):
    x = h.make_tensor_value_info("x", T.FLOAT, [2, 3])
    y = h.make_tensor_value_info("y", T.FLOAT, [2, 3])
    relu = _save(_model([h.make_node("Relu", ["x"], ["y"])], [x], [y]), tmp_path, "relu.onnx")
    neg = _save(_model([h.make_node("Neg", ["x"], ["y"])], [x], [y]), tmp_path, "neg.onnx")
    feeds = {"x": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)}
    assert checks.check_parity(relu, relu, feeds, 1e-3, 1e-4) == (True, "")
    ok, detail = checks.check_parity(relu, neg, feeds, 1e-3, 1e-4)
    assert not ok and "'y'" in detail


def test_user_pipeline_puts_pins_first_and_samples_follow_the_table(tmp_path):
    emitted = 'schema_version = 1\n\n[[pass]]\nname = "fix-shapes"\n'
    text = zoo_run.user_pipeline(emitted, {"pins": {"sr": 16000}})
    assert text.index('name = "pin-inputs"') < text.index('name = "fix-shapes"')
    assert "values = { \"sr\" = 16000 }" in text
    model = _model([h.make_node("Cast", ["sr"], ["f"], to=T.FLOAT), h.make_node("Mul", ["x", "f"], ["y"])],
                   [h.make_tensor_value_info("x", T.FLOAT, ["b", "n"]), h.make_tensor_value_info("sr", T.INT64, [])],
                   [h.make_tensor_value_info("y", T.FLOAT, ["b", "n"])])
    path = _save(model, tmp_path)
    entry = {"input_shape": "x:1,8", "pins": {"sr": 16000}, "feeds": {"x": {"low": 0.0, "high": 1.0}}}
    first, fresh = zoo_run.make_sample(path, entry, 1), zoo_run.make_sample(path, entry, 2)
    assert first["x"].shape == (1, 8) and first["sr"].dtype == np.int64 and int(first["sr"]) == 16000
    assert not np.array_equal(first["x"], fresh["x"]) and float(first["x"].min()) >= 0.0
    with pytest.raises(ValueError, match="no shape"):
        zoo_run.make_sample(path, {}, 1)


def test_table_has_the_promised_zoo():
    rows = zoo_run.load_table()
    hf = {r["arch"] for r in rows if r["kind"] == "hf"}
    assert len(hf) >= 12
    assert all({f"{a}-legacy", f"{a}-dynamo"} <= {r["name"] for r in rows} for a in hf)
    assert len({r["publisher"] for r in rows if r["kind"] == "wheel"}) >= 6
    assert {r["exporter"] for r in rows if r["kind"] == "detector"} == {"legacy", "dynamo"}
    assert len(rows) >= 40
    assert all(r.get("input_shape") for r in rows), "every row states the user's input shapes"


# ------------------------------------------------------------------ the CI subset, end to end

CI_ROWS = [r for r in zoo_run.load_table() if r["ci"]]


def _param(row):
    marks = [pytest.mark.zoo, pytest.mark.slow]
    if row.get("known_failure"):
        marks.append(pytest.mark.xfail(reason=row["known_failure"], strict=True))
    return pytest.param(row, id=row["name"], marks=marks)


@pytest.mark.skipif(bool(MISSING), reason=f"zoo extra not installed (pip install '.[zoo]'): missing {', '.join(MISSING)}")
@pytest.mark.parametrize("entry", [_param(r) for r in CI_ROWS])
def test_zoo_model_is_ready(entry):
    row = zoo_run.run_child(entry, zoo_run.DEFAULT_CACHE)
    assert "error" not in row, row["error"]
    failed = {key: row[key][1] for key in zoo_run.SURGERY_CHECKS if not row[key][0]}
    assert not failed, f"{entry['name']}: {failed}"
    assert row["nodes"] <= row["orig_nodes"]
    # the peers ran on the same shapes (their readiness is reported, not asserted)
    assert set(row["peers"]) == {"onnxsim", "onnxslim", "polygraphy"}
