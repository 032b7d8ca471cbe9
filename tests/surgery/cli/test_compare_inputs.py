"""``surgery compare`` plans inputs the way ``apply`` does and never blames a node for different inputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from surgery.cli import main


def _branchy(path):
    """``y = x * 2`` when ``sr == 16000`` else ``-x``: the sample-rate input of a VAD model, in small."""
    then_g = h.make_graph(
        [h.make_node("Mul", ["x", "two"], ["y_then"], name="then_mul")],
        "then",
        [],
        [h.make_tensor_value_info("y_then", T.FLOAT, [1, 4])],
    )
    else_g = h.make_graph(
        [h.make_node("Neg", ["x"], ["y_else"], name="else_neg")],
        "else",
        [],
        [h.make_tensor_value_info("y_else", T.FLOAT, [1, 4])],
    )
    graph = h.make_graph(
        [
            h.make_node("Equal", ["sr", "k16000"], ["is16k"], name="/sr/Equal"),
            h.make_node(
                "If", ["is16k"], ["y"], then_branch=then_g, else_branch=else_g, name="/sr/If"
            ),
        ],
        "branchy",
        [
            h.make_tensor_value_info("x", T.FLOAT, [1, 4]),
            h.make_tensor_value_info("sr", T.INT64, []),
        ],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 4])],
        [
            nh.from_array(np.array(16000, np.int64), "k16000"),
            nh.from_array(np.array(2, np.float32), "two"),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def _pinned(tmp_path):
    src = _branchy(tmp_path / "vad.onnx")
    out = tmp_path / "vad16k.onnx"
    assert main(["prepare", str(src), "-o", str(out), "--pin", "sr=16000", "-q"]) == 0
    return src, out


def test_pinned_input_without_its_value_is_exit_2_not_a_blamed_node(tmp_path, capsys):
    src, out = _pinned(tmp_path)
    capsys.readouterr()
    assert main(["compare", str(src), str(out)]) == 2
    captured = capsys.readouterr()
    assert "itself computes differently" not in captured.out
    assert (
        "sr of" in captured.err
        and "pinned" in captured.err
        and f"--pipeline {tmp_path / 'vad16k.passes.toml'}" in captured.err
    )


def test_pipeline_gives_the_pinned_value_and_nothing_diverges(tmp_path, capsys):
    src, out = _pinned(tmp_path)
    capsys.readouterr()
    assert (
        main(["compare", str(src), str(out), "--pipeline", str(tmp_path / "vad16k.passes.toml")])
        == 0
    )
    text = capsys.readouterr().out
    assert "input sr: pinned" in text and "no tensor breaks tolerance" in text


def test_data_gives_the_pinned_value(tmp_path, capsys):
    src, out = _pinned(tmp_path)
    np.savez(tmp_path / "in.npz", x=np.ones((1, 4), np.float32), sr=np.array(16000, np.int64))
    assert main(["compare", str(src), str(out), "--data", str(tmp_path / "in.npz")]) == 0
    # the old spelling still works, with one note
    capsys.readouterr()
    assert main(["compare", str(src), str(out), "--inputs", str(tmp_path / "in.npz")]) == 0
    assert "--inputs is deprecated; use --data" in capsys.readouterr().err


def test_models_with_unrelated_inputs_are_refused(tmp_path, capsys):
    src = _branchy(tmp_path / "a.onnx")
    graph = h.make_graph(
        [h.make_node("Relu", ["z"], ["y"], name="relu")],
        "other",
        [h.make_tensor_value_info("z", T.FLOAT, [1, 4])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 4])],
    )
    other = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    other.ir_version = 9
    onnx.save(other, tmp_path / "b.onnx")
    assert main(["compare", str(src), str(tmp_path / "b.onnx")]) == 2
    assert "takes input(s) z" in capsys.readouterr().err
