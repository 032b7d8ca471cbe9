"""--emit-pipeline: passes in order, stated defaults for user decisions, a file that loads."""

import dataclasses
import sys
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from surgery.doctor import diagnose, emit_pipeline
from surgery.doctor import pipeline as emit_mod
from surgery.doctor.fixes import PASS_ORDER, order_passes
from surgery.options import option
from surgery.pass_base import SurgeryPass
from surgery.testing import make_model, vi
from surgery.tomlwrite import value as toml_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _fake_registry(*names, options=None):
    """Pass classes standing in for the registry, with the options emit_pipeline writes.

    The options take any value (``Any``): emit_pipeline builds each pass with what it writes.
    """
    options = options or {}
    classes = {}
    for name in names:
        fields = options.get(name, {})
        opts = dataclasses.make_dataclass(
            f"Opts_{name.replace('-', '_')}",
            [(k, Any, option(v, help=k)) for k, v in fields.items()],
            frozen=True,
        )
        classes[name] = type(
            f"Fake_{name.replace('-', '_')}",
            (SurgeryPass,),
            {"name": name, "Options": opts, "call": lambda self, m: None},
        )
    return classes


def _messy_model():
    fn = h.make_function(
        "local",
        "Twice",
        ["a"],
        ["b"],
        [h.make_node("Add", ["a", "a"], ["b"])],
        [h.make_opsetid("", 20)],
    )
    return make_model(
        [
            h.make_node("Twice", ["x"], ["t"], name="call", domain="local"),
            h.make_node("Einsum", ["t", "w"], ["e"], equation="bchw,dc->bdhw", name="mix"),
            h.make_node("Gelu", ["e"], ["y"], name="gelu"),
        ],
        [vi("x", T.FLOAT, ["batch", 3, "h", "w"])],
        [vi("y", T.FLOAT, ["batch", 2, "h", "w"])],
        {"w": np.ones((2, 3), np.float32)},
        opset=20,
        functions=[fn],
        extra_opsets={"local": 1},
    )


def test_passes_follow_pass_order_and_missing_ones_are_named(monkeypatch):
    available = _fake_registry(
        "inline-functions",
        "convert-opset",
        "fix-shapes",
        "make-static",
        "cleanup",
        "assert-static",
        options={"convert-opset": {"target": 18}, "fix-shapes": {"shapes": ""}},
    )
    monkeypatch.setattr(emit_mod, "_registered", lambda: (available, None))
    model = ir.from_proto(_messy_model())
    emitted = emit_pipeline(diagnose(model), model)
    assert emitted.steps == [
        "inline-functions",
        "convert-opset",
        "fix-shapes",
        "make-static",
        "cleanup",
        "assert-static",
    ]
    assert emitted.missing == ["decompose-gelu", "einsum-to-matmul"]
    assert emitted.steps == [n for n in PASS_ORDER if n in emitted.steps]
    doc = tomllib.loads(emitted.text)
    steps = {s["name"]: s for s in doc["pass"]}
    assert steps["convert-opset"]["target"] == 18
    assert steps["fix-shapes"]["shapes"] == {"x": [1, 3, 640, 640]}
    assert "# NEEDED, not available in this build: decompose-gelu" in emitted.text
    assert (
        "DECIDE: batch, default 1" in emitted.text
        and "DECIDE: image height, default 640" in emitted.text
    )


def test_user_dims_and_shapes_override_the_defaults(monkeypatch):
    monkeypatch.setattr(
        emit_mod,
        "_registered",
        lambda: (_fake_registry("fix-shapes", options={"fix-shapes": {"shapes": ""}}), None),
    )
    model = ir.from_proto(_messy_model())
    report = diagnose(model)
    by_dim = tomllib.loads(emit_pipeline(report, model, dims={"batch": 4, "h": 224, "w": 320}).text)
    assert by_dim["pass"][0]["shapes"] == {"x": [4, 3, 224, 320]}
    by_input = tomllib.loads(emit_pipeline(report, model, input_shapes={"x": [2, 3, 64, 64]}).text)
    assert by_input["pass"][0]["shapes"] == {"x": [2, 3, 64, 64]}


def test_shared_dim_names_get_one_value_and_other_dims_a_placeholder():
    model = ir.from_proto(
        make_model(
            [h.make_node("Add", ["a", "b"], ["y"], name="add")],
            [vi("a", T.FLOAT, ["batch", "seq", 8]), vi("b", T.FLOAT, ["batch", "seq", 8])],
            [vi("y", T.FLOAT, ["batch", "seq", 8])],
        )
    )
    shapes, notes, undecided = emit_mod.decide_shapes(model)
    assert shapes == {"a": [1, 128, 8], "b": [1, 128, 8]} and undecided == []
    assert "placeholder" in notes[0] and "same name as above" in notes[1]


def test_user_decision_passes_are_commented_out(monkeypatch):
    monkeypatch.setattr(
        emit_mod, "_registered", lambda: (_fake_registry("split-postprocess", "cleanup"), None)
    )
    model = ir.from_proto(
        make_model(
            [h.make_node("NonZero", ["x"], ["y"], name="nz")],
            [vi("x", T.FLOAT, [4])],
            [vi("y", T.INT64, [1, None])],
        )
    )
    emitted = emit_pipeline(
        diagnose(model, soc="Ascend310"), model
    )  # NonZero is AICPU-only on 310: slow
    assert "split-postprocess" in emitted.commented and "split-postprocess" not in emitted.steps
    assert (
        '# name = "split-postprocess"' in emitted.text
        and "# DECIDE: split-postprocess" in emitted.text
    )


def test_emitted_pipeline_loads_with_the_real_registry():
    model = ir.from_proto(_messy_model())
    emitted = emit_pipeline(diagnose(model), model)
    assert emitted.problems == []
    from surgery.pipeline import parse_pipeline

    pipeline = parse_pipeline(tomllib.loads(emitted.text))
    assert [s.name for s in pipeline.steps] == emitted.steps
    assert "fix-shapes" in emitted.steps  # registered by the static-shapes work


def test_nothing_to_fix_gives_an_empty_pipeline():
    model = ir.from_proto(
        make_model(
            [h.make_node("Relu", ["x"], ["y"], name="r")],
            [vi("x", T.FLOAT, [2])],
            [vi("y", T.FLOAT, [2])],
        )
    )
    emitted = emit_pipeline(diagnose(model), model)
    assert emitted.steps == [] and tomllib.loads(emitted.text) == {"schema_version": 1}


def test_order_passes():
    assert order_passes(["cleanup", "fix-shapes", "inline-functions", "cleanup", "x-custom"]) == [
        "inline-functions",
        "fix-shapes",
        "cleanup",
        "x-custom",
    ]


def test_toml_values_are_quoted():
    assert toml_value({"a b": [1, 2], "c": 'd"e'}) == '{ "a b" = [1, 2], "c" = "d\\"e" }'
    assert tomllib.loads("v = " + toml_value({"in:0": [1, 3], "x/y": [2]}))["v"] == {
        "in:0": [1, 3],
        "x/y": [2],
    }


def _loop_model():
    body = h.make_graph(
        [h.make_node("Add", ["acc_in", "step"], ["acc_out"], name="accumulate")],
        "body",
        [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("acc_in", T.FLOAT, [2])],
        [vi("cond_in", T.BOOL, []), vi("acc_out", T.FLOAT, [2])],  # the condition passes through
        [numpy_helper.from_array(np.array([0.5, 1.5], np.float32), "step")],
    )
    return make_model(
        [h.make_node("Loop", ["trips", "go", "x"], ["y"], body=body, name="repeat")],
        [vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
        {"trips": np.array(3, np.int64), "go": np.array(True)},
    )


def test_loop_round_trip_with_the_real_passes(tmp_path):
    """ATC has no Loop parser: doctor → emitted make-static(unroll_loops) → apply → doctor finds no Loop."""
    import onnx

    from surgery import api

    path = tmp_path / "loop.onnx"
    onnx.save(_loop_model(), path)
    before = diagnose(path)
    (loop,) = [f for f in before.findings if f.check == "unregistered-op"]
    assert loop.details["op"] == "Loop" and loop.fix == ["make-static"] and before.exit_code == 1
    emitted = emit_pipeline(before, ir.load(path))
    assert emitted.steps == ["make-static", "cleanup"] and "unroll_loops = true" in emitted.text
    toml = tmp_path / "p.toml"
    toml.write_text(emitted.text)
    _model, _report = api.apply(path, toml, output=tmp_path / "out.onnx")
    after = diagnose(tmp_path / "out.onnx")
    assert after.exit_code == 0, [f.title for f in after.findings]
    assert "Loop" not in {e.op_type for e in ir.load(tmp_path / "out.onnx").graph}


def _dynamo_like_model():
    """What torch 2.13's dynamo exporter writes at opset 23: RMSNormalization, Attention, a Dropout
    left in training mode (constant true training_mode), all static."""
    rng = np.random.default_rng(0)
    q = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "wq")
    return make_model(
        [
            h.make_node(
                "RMSNormalization", ["x", "scale"], ["n"], axis=-1, name="/norm/RMSNormalization"
            ),
            h.make_node("MatMul", ["n", "wq"], ["qkv"], name="/attn/MatMul"),
            h.make_node("Reshape", ["qkv", "heads"], ["q4"], name="/attn/Reshape"),
            h.make_node(
                "Attention", ["q4", "q4", "q4"], ["a4"], is_causal=1, name="/attn/Attention"
            ),
            h.make_node("Reshape", ["a4", "flat"], ["a"], name="/attn/Reshape_1"),
            h.make_node("Dropout", ["a", "ratio", "train"], ["y"], name="/drop/Dropout"),
        ],
        [vi("x", T.FLOAT, [1, 6, 16])],
        [vi("y", T.FLOAT, [1, 6, 16])],
        {
            "scale": np.ones(16, np.float32),
            "wq": numpy_helper.to_array(q),
            "heads": np.array([1, 6, 2, 8], np.int64),
            "flat": np.array([1, 6, 16], np.int64),
            "ratio": np.array(0.5, np.float32),
            "train": np.array(True),
        },
        opset=23,
        ir_version=10,
    )


def test_training_dropout_makes_remove_dropout_required_and_first_and_new_ops_point_at_convert_opset(
    tmp_path,
):
    """A training-mode Dropout makes the original random: the emitted pipeline must remove it before
    anything is compared. Attention/RMSNormalization (opset 23) are fixed by convert-opset."""
    import onnx

    from surgery import api

    path = tmp_path / "dynamo.onnx"
    onnx.save(_dynamo_like_model(), path)
    before = diagnose(path)
    by_op = {f.details.get("op"): f for f in before.findings if f.check == "unregistered-op"}
    assert by_op["Attention"].fix == ["convert-opset"] and by_op["RMSNormalization"].fix == [
        "convert-opset"
    ]
    emitted = emit_pipeline(before, ir.load(path))
    assert emitted.steps[0] == "remove-dropout" and "convert-opset" in emitted.steps
    assert '# [[pass]]\n# name = "remove-dropout"' not in emitted.text
    toml = tmp_path / "p.toml"
    toml.write_text(emitted.text)
    out = tmp_path / "out.onnx"
    api.apply(path, toml, output=out)  # every gate passes (GateError otherwise)
    after = diagnose(out)
    assert after.exit_code == 0, [f.title for f in after.findings]
    ops = {n.op_type for n in ir.load(out).graph}
    assert not ops & {"Attention", "RMSNormalization", "Dropout"}


def test_ops_fix_by_op_sends_to_convert_opset_are_ones_it_decomposes():
    from surgery.doctor.fixes import FIX_BY_OP
    from surgery.passes.convert_opset import DECOMPOSITIONS

    sent = {op for op, passes in FIX_BY_OP.items() if "convert-opset" in passes}
    assert sent and sent <= set(DECOMPOSITIONS), sent - set(DECOMPOSITIONS)


def _nms_model(batch="batch"):
    """boxes/scores from the input, NMS computing a graph output (its shape depends on the data)."""
    nodes = [
        h.make_node("Sigmoid", ["x"], ["boxes"], name="boxes"),
        h.make_node("Transpose", ["x"], ["xt"], name="scores_t", perm=[0, 2, 1]),
        h.make_node("Slice", ["xt", "s0", "s1", "ax"], ["scores"], name="scores"),
        h.make_node(
            "NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "thr"], ["sel"], name="nms"
        ),
    ]
    inits = {
        "max_out": np.array([5], np.int64),
        "iou": np.array([0.5], np.float32),
        "thr": np.array([0.1], np.float32),
        "s0": np.array([0], np.int64),
        "s1": np.array([2], np.int64),
        "ax": np.array([1], np.int64),
    }
    return ir.from_proto(
        make_model(nodes, [vi("x", T.FLOAT, [batch, 8, 4])], [vi("sel", T.INT64, [None, 3])], inits)
    )


def test_nms_computing_an_output_gets_the_split_as_a_step_after_make_static():
    """Issue 13 item 9: the emitted pipeline kept NMS (split-postprocess commented out), so
    assert-static failed on the data-dependent output; now the split runs, after make-static."""
    model = _nms_model()
    report = diagnose(model)
    padded = next(f for f in report.findings if "padded" in f.title)
    assert padded.details["data_dependent_outputs"] == ["sel"]
    emitted = emit_pipeline(report, model)
    assert emitted.problems == [] and "split-postprocess" not in emitted.commented
    steps = emitted.steps
    assert steps.index("fix-shapes") < steps.index("make-static") < steps.index("split-postprocess")
    assert steps.index("split-postprocess") < steps.index("assert-static") == len(steps) - 1
    assert "shape that depends on the data (NMS)" in emitted.text


def test_nms_with_a_static_input_still_gets_the_split_and_assert_static():
    model = _nms_model(batch=1)
    emitted = emit_pipeline(diagnose(model), model)
    assert emitted.steps[-3:] == ["split-postprocess", "cleanup", "assert-static"]
    assert "make-static" in emitted.steps and "split-postprocess" not in emitted.commented


def _running_sum_scan(length):
    """A running sum over ``length`` frames written as a Scan (onnx-asr's wespeaker front end has
    one over 98 frames for 1 s of 16 kHz audio)."""
    body = h.make_graph(
        [
            h.make_node("Add", ["acc_in", "a_t"], ["acc_out"], name="b/add"),
            h.make_node("Identity", ["acc_out"], ["y_t"], name="b/id"),
        ],
        "body",
        [vi("acc_in", T.FLOAT, [2]), vi("a_t", T.FLOAT, [2])],
        [vi("acc_out", T.FLOAT, [2]), vi("y_t", T.FLOAT, [2])],
    )
    scan = h.make_node(
        "Scan", ["acc0", "a"], ["acc", "ys"], body=body, num_scan_inputs=1, name="scan"
    )
    return make_model(
        [scan],
        [vi("acc0", T.FLOAT, [2]), vi("a", T.FLOAT, [length, 2])],
        [vi("acc", T.FLOAT, [2]), vi("ys", T.FLOAT, [length, 2])],
    )


def test_a_scan_of_98_frames_gets_unrolled_by_the_emitted_pipeline(tmp_path):
    """Before: the doctor offered no fix for Scan (make-static kept it: unroll_loops off, and 98 >
    max_unroll 64), so assert-static failed with "Scan left in the model"."""
    from surgery import api

    path = tmp_path / "scan.onnx"
    onnx_model = _running_sum_scan(98)
    import onnx

    onnx.save(onnx_model, path)
    before = diagnose(path)
    (scan,) = [f for f in before.findings if f.check == "unregistered-op"]
    assert scan.details["op"] == "Scan" and scan.fix == ["make-static"]
    emitted = emit_pipeline(before, ir.load(path))
    assert (
        "unroll_loops = true" in emitted.text
        and f"max_unroll = {emit_mod.SCAN_MAX_UNROLL}" in emitted.text
    )
    toml = tmp_path / "p.toml"
    toml.write_text(emitted.text)
    feeds = {"acc0": np.ones(2, np.float32), "a": np.arange(196, dtype=np.float32).reshape(98, 2)}
    model, report = api.apply(path, toml, inputs=feeds, output=tmp_path / "out.onnx")
    assert report.ok and "Scan" not in {n.op_type for n in model.graph}
    assert diagnose(tmp_path / "out.onnx").exit_code == 0
