"""The Python API: one typed function per command, importable from ``surgery``."""

from __future__ import annotations

import inspect

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.testing import make_model, ort_run, vi


def _net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("MatMul", ["x", "W1"], ["h"], name="/fc1/MatMul"),
        h.make_node("Relu", ["h"], ["r"], name="/act/Relu"),
        h.make_node("MatMul", ["r", "W2"], ["y"], name="/fc2/MatMul"),
    ]
    inits = {
        "W1": rng.standard_normal((4, 8)).astype(np.float32),
        "W2": rng.standard_normal((8, 3)).astype(np.float32),
    }
    return make_model(nodes, [vi("x", T.FLOAT, [2, 4])], [vi("y", T.FLOAT, [2, 3])], inits)


def test_every_command_has_its_function_on_surgery():
    from surgery.buckets import apply_buckets
    from surgery.doctor import diagnose
    from surgery.model_info import inspect_model
    from surgery.verify.layerwise import compare_layerwise

    assert surgery.check is inspect_model and surgery.diagnose is diagnose
    assert surgery.compare is compare_layerwise and surgery.apply_buckets is apply_buckets
    assert set(surgery.__all__) >= {"apply", "apply_buckets", "check", "compare", "diagnose"}
    assert {"extract", "prepare"} <= set(surgery.__all__)
    for name in ("apply", "extract", "check", "compare", "diagnose", "apply_buckets", "prepare"):
        hints = inspect.get_annotations(getattr(surgery, name))
        assert "return" in hints, name  # typed, not a module __getattr__ Any


def test_extract_is_the_extract_pass_through_the_gates(tmp_path):
    source = tmp_path / "net.onnx"
    onnx.save(_net(), source)
    part, report = surgery.extract(source, ["r"], ["y"], output=tmp_path / "part.onnx")
    assert isinstance(part, ir.Model) and [n.name for n in part.graph] == ["/fc2/MatMul"]
    (step,) = report.steps
    assert step.name == "extract" and (step.checker, step.ort, step.parity_status) == (
        "ok",
        "ok",
        "ok",
    )
    saved = onnx.load(tmp_path / "part.onnx")
    assert [i.name for i in saved.graph.input] == ["r"]
    r = np.abs(np.random.default_rng(1).standard_normal((2, 8))).astype(np.float32)
    expected = r @ onnx.numpy_helper.to_array(_net().graph.initializer[1])
    np.testing.assert_allclose(ort_run(saved, {"r": r})["y"], expected, rtol=1e-5, atol=1e-6)


def test_importing_every_module_leaves_the_functions_in_place():
    """A submodule named like a public function replaces it on the package once imported
    (`import surgery.prepare` made `surgery.prepare` the module): no public name is a module's."""
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(surgery.__path__, "surgery."):
        if not info.name.endswith(("__main__", "verify.worker")):
            importlib.import_module(info.name)
    for name in ("apply", "extract", "prepare", "check", "compare", "diagnose", "apply_buckets"):
        assert callable(getattr(surgery, name)) and inspect.isfunction(getattr(surgery, name)), name
