"""One notion of a dynamic dim: ``-1``, ``?``, empty, anonymous and symbolic dims, everywhere.

Paddle writes an unknown dim as a literal ``dim_value: -1``, which onnx-ir reads as the integer
``-1``; code that tested ``isinstance(d, int)`` took it for a size (``apply`` crashed generating a
feed, ``check`` said "dynamic dims: 0", ``doctor`` found nothing).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from surgery.cli import main
from surgery.pass_base import FeedHints
from surgery.shapes.dims import (
    count_dynamic_dims,
    dim_name,
    dim_text,
    dynamic_dims,
    is_known_dim,
    is_static_shape,
    plain_dims,
    shape_text,
)
from surgery.verify.inputs import InputsConfig, plan_inputs


def paddle_like() -> onnx.ModelProto:
    """A Conv + Relu whose batch dim is written as ``-1``, as Paddle2ONNX writes it."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = h.make_graph(
        [
            h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            h.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        "paddle",
        [h.make_tensor_value_info("x", T.FLOAT, [-1, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [-1, 4, 8, 8])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_every_unknown_form_is_dynamic_and_zero_is_a_size():
    model = ir.from_proto(paddle_like())
    minus_one = model.graph.inputs[0].shape[0]
    assert minus_one == -1 and isinstance(minus_one, int)  # what made isinstance(d, int) wrong
    for dim in (
        minus_one,
        -3,
        None,
        "",
        "?",
        ir.SymbolicDim(None),
        ir.SymbolicDim("batch"),
        "unk__4",
        True,
    ):
        assert not is_known_dim(dim), dim
    for dim in (0, 1, 7, np.int64(3).item()):
        assert is_known_dim(dim), dim
    assert dim_name(ir.SymbolicDim("batch")) == "batch" and dim_name("seq") == "seq"
    assert (
        dim_name(-1) is None
        and dim_name(ir.SymbolicDim("unk__3")) is None
        and dim_name("?") is None
    )
    assert [dim_text(d) for d in (-1, 0, ir.SymbolicDim("n"), ir.SymbolicDim(None))] == [
        "?",
        "0",
        "n",
        "?",
    ]
    assert (
        shape_text(model.graph.inputs[0].shape) == "[?, 3, 8, 8]"
        and shape_text(None) == "unknown rank"
    )
    assert plain_dims(ir.Shape([-1, "b", None, 2])) == (None, "b", None, 2)
    assert (
        not is_static_shape(model.graph.inputs[0].shape)
        and is_static_shape(ir.Shape([]))
        and not is_static_shape(None)
    )
    assert count_dynamic_dims(ir.Shape([-1, "b", 3])) == 2


def test_runner_stats_and_feeds_treat_minus_one_as_dynamic():
    model = ir.from_proto(paddle_like())
    assert dynamic_dims(model) == 2  # x and y, dim 0 each
    plan = plan_inputs(model, InputsConfig(), FeedHints())
    assert plan.feeds["x"].shape[1:] == (3, 8, 8) and plan.feeds["x"].shape[0] >= 1
    assert "?=" in plan.provenance["x"]


def test_check_doctor_and_apply_on_a_minus_one_model(tmp_path, capsys):
    path = tmp_path / "paddle.onnx"
    onnx.save(paddle_like(), path)
    original = path.read_bytes()

    assert main(["check", str(path), "--report", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "x: FLOAT [?, 3, 8, 8]" in out and "dynamic dims: 2" in out
    assert json.loads((tmp_path / "c.json").read_text())["dynamic_dims"] == 2

    main(["doctor", str(path)])
    out = capsys.readouterr().out
    assert "No findings" not in out
    assert "1 input(s) with dynamic dims" in out and "x [?, 3, 8, 8]" in out

    toml = tmp_path / "passes.toml"
    toml.write_text(
        '[[pass]]\nname = "fix-shapes"\nshapes = "x:1,3,8,8"\n\n'
        '[[pass]]\nname = "make-static"\n\n[[pass]]\nname = "assert-static"\n'
    )
    out_path = tmp_path / "out.onnx"
    assert main(["apply", str(toml), str(path), "-o", str(out_path)]) == 0
    capsys.readouterr()
    assert path.read_bytes() == original
    result = onnx.load(out_path)
    dims = [d.dim_value for d in result.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 4, 8, 8]

    # make-static alone (the input stays dynamic): a successful run, no crash on the -1 feed
    toml.write_text('[[pass]]\nname = "make-static"\n')
    assert main(["apply", str(toml), str(path), "-o", str(tmp_path / "still.onnx")]) == 0
    captured = capsys.readouterr()
    assert "still have dynamic dims" in captured.out + captured.err
