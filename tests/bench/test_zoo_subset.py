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
    model = _model(
        [h.make_node("Relu", ["x"], ["y"])],
        [h.make_tensor_value_info("x", T.FLOAT, ["n", 4])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 4])],
    )
    ok, detail = checks.check_static(model)
    assert not ok and "not static" in detail
    static = _model(
        [h.make_node("Relu", ["x"], ["y"])],
        [h.make_tensor_value_info("x", T.FLOAT, [2, 4])],
        [h.make_tensor_value_info("y", T.FLOAT, [2, 4])],
    )
    assert checks.check_static(static) == (True, "")


def test_static_check_folds_shape_arithmetic_by_data_propagation():
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("Reshape", ["x", "s"], ["y"])]
    model = _model(
        nodes,
        [h.make_tensor_value_info("x", T.FLOAT, [2, 3])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
    )
    assert checks.check_static(model) == (True, "")


def test_control_flow_float64_and_opset_checks():
    then = h.make_graph(
        [h.make_node("Identity", ["x"], ["t"])],
        "then",
        [],
        [h.make_tensor_value_info("t", T.FLOAT, [1])],
    )
    other = h.make_graph(
        [h.make_node("Neg", ["x"], ["e"])],
        "else",
        [],
        [h.make_tensor_value_info("e", T.FLOAT, [1])],
    )
    model = _model(
        [h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [1])],
        [h.make_tensor_value_info("y", T.FLOAT, [1])],
        opset=19,
    )
    assert checks.check_no_control_flow(model) == (False, "1 If")
    assert checks.check_opset(model)[0] is False
    assert checks.node_count(model) == 3
    double = _model(
        [
            h.make_node("Cast", ["x"], ["d"], to=T.DOUBLE),
            h.make_node("Cast", ["d"], ["y"], to=T.FLOAT),
        ],
        [h.make_tensor_value_info("x", T.FLOAT, [1])],
        [h.make_tensor_value_info("y", T.FLOAT, [1])],
    )
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


def test_a_split_model_is_judged_by_its_head_with_parity_through_the_tail(tmp_path):
    """original: y = Relu(x) + x, z = Relu(x); the head computes z and r = Relu(x), the tail y."""
    x = h.make_tensor_value_info("x", T.FLOAT, [2, 3])
    y, z = (
        h.make_tensor_value_info("y", T.FLOAT, [2, 3]),
        h.make_tensor_value_info("z", T.FLOAT, [2, 3]),
    )
    r = h.make_tensor_value_info("r", T.FLOAT, [2, 3])
    original = _save(
        _model(
            [h.make_node("Relu", ["x"], ["z"]), h.make_node("Add", ["z", "x"], ["y"])], [x], [z, y]
        ),
        tmp_path,
        "original.onnx",
    )
    head = _save(
        _model(
            [h.make_node("Relu", ["x"], ["z"]), h.make_node("Identity", ["z"], ["r"])], [x], [z, r]
        ),
        tmp_path,
        "out.onnx",
    )
    tail = _save(
        _model([h.make_node("Add", ["r", "x"], ["y"])], [r, x], [y]), tmp_path, "out.tail.onnx"
    )
    wrong = _save(
        _model([h.make_node("Sub", ["r", "x"], ["y"])], [r, x], [y]), tmp_path, "wrong.tail.onnx"
    )
    feeds = {"x": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)}
    ref = checks.run_ort(original, feeds)
    assert checks.check_parity(ref, head, feeds, 0.0, 0.0)[0] is False  # the head alone lacks 'y'
    result = checks.static_readiness(ref, head, feeds, 0.0, 0.0, tail=tail)
    assert (
        result["parity"] == (True, "") and result["static"] == (True, "") and result["nodes"] == 2
    )
    ok, detail = checks.check_split_parity(ref, head, wrong, feeds, 0.0, 0.0)
    assert not ok and "'y'" in detail
    summary = zoo_run.split_summary(head, tail)
    assert summary == {"tail_nodes": 1, "tail_ops": ["Add"]}  # no manifest written beside this head


def test_user_pipeline_puts_pins_first_and_samples_follow_the_table(tmp_path):
    emitted = 'schema_version = 1\n\n[[pass]]\nname = "fix-shapes"\n'
    text = zoo_run.user_pipeline(emitted, {"pins": {"sr": 16000}})
    assert text.index('name = "pin-inputs"') < text.index('name = "fix-shapes"')
    assert 'values = { "sr" = 16000 }' in text
    model = _model(
        [h.make_node("Cast", ["sr"], ["f"], to=T.FLOAT), h.make_node("Mul", ["x", "f"], ["y"])],
        [
            h.make_tensor_value_info("x", T.FLOAT, ["b", "n"]),
            h.make_tensor_value_info("sr", T.INT64, []),
        ],
        [h.make_tensor_value_info("y", T.FLOAT, ["b", "n"])],
    )
    path = _save(model, tmp_path)
    entry = {
        "input_shape": "x:1,8",
        "pins": {"sr": 16000},
        "feeds": {"x": {"low": 0.0, "high": 1.0}},
    }
    first, fresh = zoo_run.make_sample(path, entry, 1), zoo_run.make_sample(path, entry, 2)
    assert (
        first["x"].shape == (1, 8) and first["sr"].dtype == np.int64 and int(first["sr"]) == 16000
    )
    assert not np.array_equal(first["x"], fresh["x"]) and float(first["x"].min()) >= 0.0
    with pytest.raises(ValueError, match="no shape"):
        zoo_run.make_sample(path, {}, 1)


def _peer(nodes, newer=None, ok=True):
    cell = {key: [ok, ""] for key in ("run", *zoo_run.PEER_CHECKS)}
    return {**cell, "ready": ok, "nodes": nodes, "newer_ops": newer or {}}


def test_node_counts_above_the_best_peer_are_explained_or_flagged():
    gelu = _model(
        [h.make_node("Gelu", ["x"], ["y"]), h.make_node("Relu", ["y"], ["z"])],
        [h.make_tensor_value_info("x", T.FLOAT, [2])],
        [h.make_tensor_value_info("z", T.FLOAT, [2])],
        opset=20,
    )
    assert checks.newer_ops(gelu) == {"Gelu": 1}  # Relu exists at opset 18, Gelu only from 20
    contrib = _model(
        [
            h.make_node("Attention", ["x"], ["y"], domain="com.microsoft"),
            h.make_node("Relu", ["y"], ["z"]),
        ],
        [h.make_tensor_value_info("x", T.FLOAT, [2])],
        [h.make_tensor_value_info("z", T.FLOAT, [2])],
    )
    contrib.opset_import.append(h.make_opsetid("com.microsoft", 1))
    assert checks.newer_ops(contrib) == {"com.microsoft.Attention": 1}
    assert (
        checks.newer_ops(
            _model(
                [h.make_node("Relu", ["x"], ["y"])],
                [h.make_tensor_value_info("x", T.FLOAT, [2])],
                [h.make_tensor_value_info("y", T.FLOAT, [2])],
            )
        )
        == {}
    )
    base = {
        "name": "m",
        "source": "s",
        "ready": True,
        **{k: [True, ""] for k in zoo_run.SURGERY_CHECKS},
        "orig_nodes": 99,
    }
    at_peer = {**base, "nodes": 60, "peers": {"onnxsim": _peer(70), "onnxslim": _peer(60)}}
    newer = {
        **base,
        "nodes": 76,
        "peers": {"onnxsim": _peer(78, {"Gelu": 2}), "onnxslim": _peer(68, {"Gelu": 2})},
    }
    # a peer below us without newer ops: not explained by the opset, only by the table's note
    mixed = {
        **base,
        "nodes": 76,
        "peers": {"onnxsim": _peer(70), "onnxslim": _peer(68, {"Gelu": 2})},
    }
    noted = {**mixed, "name": "n", "nodes_note": "peer fuses into an op ATC refuses"}
    wrong = {**base, "nodes": 76, "peers": {"onnxsim": _peer(50, ok=False), "onnxslim": _peer(80)}}
    # 2 Gelu cost 8 nodes at opset 18: 68 + 8 = 76 explains 76, not 77
    more = {**newer, "nodes": 77}
    attention = {**more, "peers": {"onnxsim": _peer(60, {"Attention": 6}), "onnxslim": _peer(90)}}
    assert [
        zoo_run.nodes_verdict(r)[0] for r in (at_peer, newer, mixed, noted, wrong, more, attention)
    ] == ["ok", "explained", "above", "explained", "ok", "above", "explained"]
    assert (
        "onnxslim 68 keeps 2 Gelu (opset > 18; at opset 18 76)" in zoo_run.nodes_verdict(newer)[1]
    )
    assert "6 Attention (no opset <= 18 form)" in zoo_run.nodes_verdict(attention)[1]
    table = zoo_run.render([at_peer, newer, mixed, noted])
    assert "| x 68 * |" in table and "| x 68 |" in table
    assert "- n: peer fuses into an op ATC refuses" in table
    assert table.rstrip().endswith("on 1/4 compared (2 above it explained, 1 not)")


def test_nodes_note_is_per_exporter_in_the_table(tmp_path):
    table = tmp_path / "models.toml"
    table.write_text(
        '[[hf]]\narch = "a"\ninput_shape = "x:1"\nnodes_note = { dynamo = "why" }\n'
        '[[wheel]]\nname = "w"\npackage = "p"\nversion = "1"\npublisher = "q"\ninput_shape = "x:1"\n'
        'nodes_note = "all"\n'
    )
    rows = {r["name"]: r for r in zoo_run.load_table(table)}
    assert "nodes_note" not in rows["a-legacy"] and rows["a-dynamo"]["nodes_note"] == "why"
    assert rows["w"]["nodes_note"] == "all"


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


@pytest.mark.skipif(
    bool(MISSING),
    reason=f"zoo extra not installed (pip install '.[zoo]'): missing {', '.join(MISSING)}",
)
@pytest.mark.parametrize("entry", [_param(r) for r in CI_ROWS])
def test_zoo_model_is_ready(entry):
    row = zoo_run.run_child(entry, zoo_run.DEFAULT_CACHE)
    assert "error" not in row, row["error"]
    failed = {key: row[key][1] for key in zoo_run.SURGERY_CHECKS if not row[key][0]}
    assert not failed, f"{entry['name']}: {failed}"
    assert row["nodes"] <= row["orig_nodes"]
    # the peers ran on the same shapes (their readiness is reported, not asserted)
    assert set(row["peers"]) == {"onnxsim", "onnxslim", "polygraphy"}
