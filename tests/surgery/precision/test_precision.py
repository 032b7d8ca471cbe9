"""Float16 emulation of ATC's precision modes and the greedy keep_dtype plan, on small real graphs."""

from __future__ import annotations

import json
import shlex

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.cli import main
from surgery.precision import Emulator, Mode, check_precision
from surgery.testing import make_model, vi


def energy_model() -> onnx.ModelProto:
    """A signal's energy (a sum of squares: overflows float16 for |x| ~ 75 over 64 samples) and a gain."""
    return make_model(
        [
            h.make_node("Relu", ["x"], ["r"], name="rectify"),
            h.make_node("ReduceSumSquare", ["r"], ["energy"], name="energy_sum", keepdims=1),
            h.make_node("Mul", ["x", "w"], ["y"], name="gain"),
        ],
        [vi("x", T.FLOAT, [1, 64])],
        [vi("energy", T.FLOAT, [1, 1]), vi("y", T.FLOAT, [1, 64])],
        {"w": np.full((1, 64), 0.5, np.float32)},
    )


def loud() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).uniform(50, 100, (1, 64)).astype(np.float32)}


def rms_norm_model() -> onnx.ModelProto:
    """RMSNorm written out: the mean of squares fits float16 but the sum before the mean does not."""
    return make_model(
        [
            h.make_node("Mul", ["x", "x"], ["sq"], name="square"),
            h.make_node("ReduceSum", ["sq", "axes"], ["ssum"], name="sum_sq", keepdims=1),
            h.make_node("Div", ["ssum", "n"], ["ms"], name="mean_sq"),
            h.make_node("Add", ["ms", "eps"], ["mse"], name="add_eps"),
            h.make_node("Sqrt", ["mse"], ["rms"], name="rms"),
            h.make_node("Div", ["x", "rms"], ["y"], name="normalize"),
        ],
        [vi("x", T.FLOAT, [2, 256])],
        [vi("y", T.FLOAT, [2, 256])],
        {
            "axes": np.array([-1], np.int64),
            "n": np.array(256.0, np.float32),
            "eps": np.array(1e-6, np.float32),
        },
    )


def test_sum_of_squares_overflow_gets_exactly_that_node():
    report = check_precision(ir.from_proto(energy_model()), [loud()])
    assert not report.ok
    assert [(s.name, s.op, s.node) for s in report.emulation.overflows] == [
        ("energy", "ReduceSumSquare", "energy_sum")
    ]
    over = report.emulation.overflows[0]
    expected = float(np.sum(np.maximum(loud()["x"], 0).astype(np.float64) ** 2))
    assert (
        over.overflow_absmax == pytest.approx(expected, rel=1e-3) and over.overflow_absmax > 65504
    )
    assert report.emulation.outputs["energy"].nonfinite == 1 and not report.emulation.outputs[
        "y"
    ].breaks(report.emulation.tolerance)
    assert report.emulation.first_break.node == "energy_sum"
    assert report.plan is not None and report.plan.keep == ["energy_sum"]
    assert report.plan.meets_tolerance and report.plan.after.ok and not report.plan.after.overflows
    assert report.keep_dtype == ["energy_sum"]
    assert any(
        "overflow: tensor 'energy' (ReduceSumSquare 'energy_sum')" in line
        for line in report.lines()
    )


def test_plan_re_emulation_meets_tolerance_on_a_chain():
    x = np.random.default_rng(1).uniform(-40, 40, (2, 256)).astype(np.float32)
    report = check_precision(ir.from_proto(rms_norm_model()), [{"x": x}])
    assert not report.ok and report.emulation.overflows[0].node == "sum_sq"
    plan = report.plan
    # the sum overflows; its float32 result then overflows again when the float16 Div reads it
    assert plan.keep == ["sum_sq", "mean_sq"] and plan.meets_tolerance
    emulator = Emulator(ir.from_proto(rms_norm_model()), [{"x": x}])
    assert emulator.run(plan.keep).ok and not emulator.run(plan.keep[:1]).ok
    assert emulator.run(plan.keep[:1]).overflows[0].input_overflow == "ssum"


def test_float16_safe_model_empty_plan(tmp_path, capsys):
    model = energy_model()
    quiet = {"x": np.random.default_rng(0).uniform(-1, 1, (1, 64)).astype(np.float32)}
    report = check_precision(ir.from_proto(model), [quiet])
    assert (
        report.ok
        and report.plan is None
        and report.keep_dtype == []
        and not report.emulation.overflows
    )
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "quiet.npz", **quiet)
    keep = tmp_path / "keep.txt"
    code = main(
        [
            "precision",
            str(tmp_path / "m.onnx"),
            "--data",
            str(tmp_path / "quiet.npz"),
            "--keep-dtype",
            str(keep),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and not keep.exists()
    line = next(ln for ln in out.splitlines() if ln.startswith("atc: "))
    assert "--precision_mode=force_fp16" in shlex.split(line[5:]) and "--keep_dtype" not in line


def test_cli_writes_plan_report_and_atc_line(tmp_path, capsys):
    onnx.save(energy_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "loud.npz", **loud())
    keep, rep = tmp_path / "keep.txt", tmp_path / "r.json"
    code = main(
        [
            "precision",
            str(tmp_path / "m.onnx"),
            "--data",
            str(tmp_path / "loud.npz"),
            "--keep-dtype",
            str(keep),
            "--report",
            str(rep),
            "--soc",
            "Ascend310P3",
            "--precision-flag",
            "precision_mode_v2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert keep.read_text() == "energy_sum\n"
    argv = shlex.split(next(ln for ln in out.splitlines() if ln.startswith("atc: "))[5:])
    assert "--precision_mode_v2=fp16" in argv and f"--keep_dtype={keep}" in argv
    assert not any(a.startswith("--precision_mode=") for a in argv)
    data = json.loads(rep.read_text())
    assert (
        data["plan"]["keep"] == ["energy_sum"]
        and data["emulation"]["overflows"][0]["op"] == "ReduceSumSquare"
    )


def test_bad_input_one_line(tmp_path, capsys):
    onnx.save(energy_model(), tmp_path / "m.onnx")
    code = main(
        ["precision", str(tmp_path / "m.onnx"), "--keep-dtype", str(tmp_path / "no" / "k.txt")]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err


def test_modes_mixed_and_origin():
    model = ir.from_proto(energy_model())
    assert check_precision(model, [loud()], mode="origin").ok
    mixed = Emulator(model, [loud()], mode=Mode.MIXED_FLOAT16)
    # mixed_float16 keeps the reduction in float32; the gray Mul/Relu follow their (float32) inputs
    assert mixed.fp16_set() == [False, False, False] and mixed.run().ok


def test_mixed_lowers_matmul_and_its_followers():
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    model = ir.from_proto(
        make_model(
            [
                h.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
                h.make_node("Relu", ["m"], ["r"], name="act"),
                h.make_node("Exp", ["r"], ["y"], name="exp"),
            ],
            [vi("x", T.FLOAT, [2, 8])],
            [vi("y", T.FLOAT, [2, 8])],
            {"w": w},
        )
    )
    assert Emulator(
        model, [{"x": np.ones((2, 8), np.float32)}], mode=Mode.MIXED_FLOAT16
    ).fp16_set() == [True, True, False]


def test_flush_to_zero_reported():
    model = ir.from_proto(
        make_model(
            [h.make_node("Mul", ["x", "s"], ["y"], name="tiny_scale")],
            [vi("x", T.FLOAT, [1, 100])],
            [vi("y", T.FLOAT, [1, 100])],
            {"s": np.array(1e-9, np.float32)},
        )
    )
    em = Emulator(
        model, [{"x": np.random.default_rng(0).uniform(1, 2, (1, 100)).astype(np.float32)}]
    ).run()
    assert [(s.name, s.input_flush) for s in em.flushes] == [
        ("y", "s")
    ] and em.ok  # tiny in absolute terms
    smaller = ir.from_proto(
        make_model(
            [h.make_node("Mul", ["x", "s"], ["y"], name="tiny_scale")],
            [vi("x", T.FLOAT, [1, 100])],
            [vi("y", T.FLOAT, [1, 100])],
            {"s": np.array(1e-4, np.float32)},
        )
    )
    x = np.random.default_rng(0).uniform(1e-4, 2e-4, (1, 100)).astype(np.float32)
    em = Emulator(smaller, [{"x": x}]).run()  # the weight survives; the product (~1e-8) flushes
    assert [s.name for s in em.flushes] == ["y"] and em.flushes[0].flushed == em.flushes[
        0
    ].nonzero == 100


def test_streams_frees_values_after_last_use():
    nodes = [
        h.make_node(
            "Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}" if i < 59 else "y"], name=f"relu{i}"
        )
        for i in range(60)
    ]
    model = ir.from_proto(make_model(nodes, [vi("x", T.FLOAT, [1, 8])], [vi("y", T.FLOAT, [1, 8])]))
    emulator = Emulator(model, [{"x": np.ones((1, 8), np.float32)}])
    assert emulator.run().ok
    assert (
        emulator.peak_live <= 4
    )  # input + one intermediate, in both runs; never the 60 intermediates


def test_if_with_outer_scope_values():
    then_g = h.make_graph(
        [h.make_node("Mul", ["x", "x"], ["t"], name="then_sq")],
        "then",
        [],
        [vi("t", T.FLOAT, [1, 64])],
    )
    else_g = h.make_graph(
        [h.make_node("Identity", ["x"], ["e"], name="else_id")],
        "else",
        [],
        [vi("e", T.FLOAT, [1, 64])],
    )
    model = ir.from_proto(
        make_model(
            [
                h.make_node(
                    "If", ["c"], ["o"], name="branch", then_branch=then_g, else_branch=else_g
                ),
                h.make_node("ReduceSum", ["o"], ["y"], name="total", keepdims=0),
            ],
            [vi("x", T.FLOAT, [1, 64]), vi("c", T.BOOL, [])],
            [vi("y", T.FLOAT, [])],
        )
    )
    report = check_precision(model, [{**loud(), "c": np.array(True)}])
    assert not report.ok and report.plan.keep[0] == "total" and report.plan.meets_tolerance


def test_non_float_output_that_flips_breaks():
    """ArgMax over logits that float16 cannot tell apart: the index output changes."""
    model = ir.from_proto(
        make_model(
            [
                h.make_node("Mul", ["x", "w"], ["logits"], name="scale"),
                h.make_node("ArgMax", ["logits"], ["cls"], name="pick", axis=1, keepdims=0),
            ],
            [vi("x", T.FLOAT, [1, 2])],
            [vi("cls", T.INT64, [1])],
            {"w": np.ones((1, 2), np.float32)},
        )
    )
    close = {"x": np.array([[1000.0, 1000.2]], np.float32)}  # 1000.2 rounds to 1000 in float16
    report = check_precision(model, [close])
    assert report.emulation.outputs["cls"].mismatched == 1 and not report.ok
    assert report.plan.meets_tolerance and report.plan.keep == ["pick", "scale"]
    clear = {"x": np.array([[1000.0, 1010.0]], np.float32)}
    assert check_precision(model, [clear]).ok


def test_unsorted_graph_is_swept_in_dependency_order():
    proto = energy_model()
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(nodes))
    report = check_precision(ir.from_proto(proto), [loud()])
    assert report.plan.keep == ["energy_sum"]


def test_unnamed_node_and_layernorm_warnings():
    model = ir.from_proto(
        make_model(
            [
                h.make_node("LayerNormalization", ["x", "g", "b"], ["n"], name="ln", axis=-1),
                h.make_node("ReduceSumSquare", ["n"], ["e"], keepdims=1),
            ],  # unnamed
            [vi("x", T.FLOAT, [1, 512])],
            [vi("e", T.FLOAT, [1, 1])],
            {"g": np.full(512, 20.0, np.float32), "b": np.zeros(512, np.float32)},
        )
    )
    x = np.random.default_rng(0).normal(0, 1, (1, 512)).astype(np.float32)
    x[0, 0] = 70000.0  # beyond float16: the cast into the LayerNorm overflows
    report = check_precision(model, [{"x": x}])
    assert report.plan.meets_tolerance and "ln" in report.plan.keep and len(report.plan.keep) == 2
    assert report.keep_dtype == ["ln"]  # the unnamed ReduceSumSquare cannot be listed
    text = "\n".join(report.lines())
    assert (
        "have no name --keep_dtype can list" in text
        and "LayerNormalization takes float16 only" in text
    )


def test_whole_op_type_line_when_every_node_of_it_is_kept():
    model = ir.from_proto(
        make_model(
            [
                h.make_node("Pow", ["a", "two"], ["pa"], name="sq_a"),
                h.make_node("Pow", ["b", "two"], ["pb"], name="sq_b"),
                h.make_node("Relu", ["a"], ["ra"], name="act"),
            ],
            [vi("a", T.FLOAT, [4]), vi("b", T.FLOAT, [4])],
            [vi("pa", T.FLOAT, [4]), vi("pb", T.FLOAT, [4]), vi("ra", T.FLOAT, [4])],
            {"two": np.array(2.0, np.float32)},
        )
    )
    big = {"a": np.full(4, 300.0, np.float32), "b": np.full(4, 400.0, np.float32)}
    report = check_precision(model, [big])
    assert sorted(report.plan.keep) == ["sq_a", "sq_b"] and report.keep_dtype == ["OpType::Pow"]


def test_report_dash_prints_json_only(tmp_path, capsys):
    onnx.save(energy_model(), tmp_path / "m.onnx")
    np.savez(tmp_path / "loud.npz", **loud())
    code = main(
        [
            "precision",
            str(tmp_path / "m.onnx"),
            "--data",
            str(tmp_path / "loud.npz"),
            "--report",
            "-",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1 and json.loads(captured.out)["plan"]["keep"] == ["energy_sum"]
    assert "plan: keep 1 node(s)" in captured.err


def test_literal_minus_one_dim_is_emulated_and_generator_failures_are_one_line(
    tmp_path, capsys, monkeypatch
):
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="act")],
        [vi("x", T.FLOAT, [1, 3])],
        [vi("y", T.FLOAT, [1, 3])],
    )
    model.graph.input[0].type.tensor_type.shape.dim[
        1
    ].dim_value = -1  # Paddle writes literal -1 dims
    onnx.save(model, tmp_path / "m.onnx")
    assert main(["precision", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()

    def refuse(*args, **kwargs):
        raise ValueError("negative dimensions are not allowed")

    monkeypatch.setattr("surgery.verify.inputs.plan_inputs", refuse)
    code = main(["precision", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--data" in err


@pytest.mark.parametrize("flag", ["--keep-dtype", "--report"])
def test_cli_never_writes_onto_its_inputs(tmp_path, capsys, flag):
    """``--keep-dtype`` / ``--report`` naming the model or the data: exit 2, one line, inputs untouched."""
    model = tmp_path / "m.onnx"
    onnx.save(energy_model(), model)
    np.savez(tmp_path / "loud.npz", **loud())
    for target in (model, tmp_path / "loud.npz"):
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
        code = main(
            ["precision", str(model), "--data", str(tmp_path / "loud.npz"), flag, str(target)]
        )
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and str(target) in err, err
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
