"""examples/21_dynamo_opset23: the README's two commands, run as a user would (outside the checkout)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from surgery.testing import op_counts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "21_dynamo_opset23"
PASSES = ("remove-dropout", "decompose-gelu", "narrow-float64", "convert-opset", "cleanup")
REMOVED_OPS = ("Attention", "RMSNormalization", "Gelu", "Dropout")


def _float64_sites(model: onnx.ModelProto) -> list[str]:
    """Every place a float64 (DOUBLE) type appears: tensors, value types, dtype attributes, any graph."""
    double = onnx.TensorProto.DOUBLE
    sites: list[str] = []

    def value_types(graph: onnx.GraphProto) -> None:
        for v in [*graph.input, *graph.output, *graph.value_info]:
            if v.type.tensor_type.elem_type == double:
                sites.append(f"value {v.name}")

    def tensors(where: str, items) -> None:
        sites.extend(f"{where} {t.name}" for t in items if t.data_type == double)

    def graph_(graph: onnx.GraphProto) -> None:
        value_types(graph)
        tensors("initializer", graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                dtype_attr = attr.name in ("to", "dtype", "stash_type", "output_datatype")
                if attr.type == onnx.AttributeProto.INT and dtype_attr and attr.i == double:
                    sites.append(f"{node.op_type} '{node.name}' {attr.name}")
                tensors(
                    f"{node.op_type} '{node.name}' {attr.name}",
                    [attr.t] if attr.HasField("t") else attr.tensors,
                )
                for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                    graph_(sub)

    graph_(model.graph)
    for function in model.functions:
        graph_(onnx.helper.make_graph(function.node, function.name, [], []))
    return sites


def _load_example_module():
    spec = importlib.util.spec_from_file_location("example21_export", EXAMPLE / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("ex21")
    model, out = tmp / "model.onnx", tmp / "model.atc.onnx"
    export = subprocess.run(
        [sys.executable, str(EXAMPLE / "export.py"), str(model)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp,
    )
    assert export.returncode == 0, export.stderr
    apply = subprocess.run(
        [
            sys.executable,
            "-m",
            "surgery",
            "apply",
            str(EXAMPLE / "passes.toml"),
            str(model),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp,  # not the checkout: test the installed package
    )
    return tmp, model, out, apply


@pytest.mark.torch
def test_export_is_what_dynamo_writes_at_opset_23(run):
    _, model, _, _ = run
    exported = onnx.load(model)
    assert [(o.domain, o.version) for o in exported.opset_import] == [("", 23)]
    assert not exported.functions  # the dynamo exporter inlines everything at this opset
    counts = op_counts(exported)
    assert counts["Attention"] == 1 and counts["RMSNormalization"] == 2 and counts["Gelu"] == 1
    assert counts["Dropout"] == 1
    attention = next(n for n in exported.graph.node if n.op_type == "Attention")
    assert (
        onnx.helper.get_attribute_value(
            next(a for a in attention.attribute if a.name == "is_causal")
        )
        == 1
    )
    assert (
        len(_float64_sites(exported)) >= 3
    )  # Cast to double, the double temperature, double values


@pytest.mark.torch
def test_apply_reports_every_pass(run):
    _, _, _, apply = run
    assert apply.returncode == 0, apply.stderr
    rows = {
        line.split()[1]: line
        for line in apply.stdout.splitlines()
        if line[:1].isdigit() and len(line.split()) > 2
    }
    for name in PASSES:
        assert " yes " in rows[name] and rows[name].count(" ok ") >= 2, rows[
            name
        ]  # changed; checker and ort ok
    assert "deviation reported" in rows["remove-dropout"]
    for name in PASSES[1:]:
        assert rows[name].rstrip().split("  ")[-1].strip().startswith("ok"), rows[name]
    assert "atc --model=" in apply.stdout and "--input_shape=x:1,8,32" in apply.stdout


@pytest.mark.torch
def test_result_is_atc_ready_and_equal(run):
    import onnxruntime as ort

    tmp, model, out, apply = run
    assert apply.returncode == 0, apply.stderr
    result = onnx.load(out)
    assert {o.domain or "ai.onnx": o.version for o in result.opset_import} == {"ai.onnx": 18}
    assert not result.functions
    counts = op_counts(result)
    assert not [op for op in REMOVED_OPS if op in counts], counts
    assert (
        counts["Softmax"] == 1 and counts["Tanh"] == 1 and counts["ReduceMean"] == 2
    )  # the decompositions
    assert "Cast" not in counts  # narrowed to float -> float, then removed by cleanup
    assert _float64_sites(result) == []
    onnx.checker.check_model(result, full_check=True)

    x = np.random.default_rng(0).standard_normal((1, 8, 32)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == (1, 8, 16) and got.dtype == np.float32

    # The export is random (training-mode Dropout) when ORT runs it as written, as surgery's parity
    # runs do (ORT's default optimizations drop the Dropout silently). Its inference form is the
    # same model with training_mode false, which is what remove-dropout promises to keep.
    exported = onnx.load(model)
    as_written = ort.SessionOptions()
    as_written.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    random_out = ort.InferenceSession(
        exported.SerializeToString(), as_written, providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})[0]
    assert not np.allclose(random_out, got, atol=1e-3)
    dropout = next(n for n in exported.graph.node if n.op_type == "Dropout")
    flag = next(t for t in exported.graph.initializer if t.name == dropout.input[2])
    assert onnx.numpy_helper.to_array(flag).item() is True
    flag.CopyFrom(onnx.numpy_helper.from_array(np.array(False), flag.name))
    reference = ort.InferenceSession(
        exported.SerializeToString(), as_written, providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-4)

    # and the torch module itself, in inference mode
    import torch

    block, _ = _load_example_module().build()
    with torch.no_grad():
        expected = block.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)

    doctor = subprocess.run(
        [sys.executable, "-m", "surgery", "doctor", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp,
    )
    assert doctor.returncode == 0 and "No findings" in doctor.stdout, doctor.stdout + doctor.stderr
