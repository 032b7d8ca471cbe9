"""gelu-approx: exact ↔ tanh GELU, on the op and on the decomposed forms exporters write."""

from __future__ import annotations

import io
import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.passes.decompose_gelu import DecomposeGelu
from surgery.passes.gelu_approx import GeluApprox
from surgery.testing import make_model, op_counts, ort_run, vi

X = np.linspace(-5, 5, 40, dtype=np.float32).reshape(2, 20)


def _erf(x):
    return np.vectorize(math.erf)(x)


def gelu_exact(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("to", ["tanh", "exact"])
def test_gelu_op_switches_mode(to):
    start = "none" if to == "tanh" else "tanh"
    proto = make_model(
        [h.make_node("Gelu", ["x"], ["y"], name="g", approximate=start)],
        [vi("x", T.FLOAT, [2, 20])],
        [vi("y", T.FLOAT, [2, 20])],
        opset=20,
    )
    model = ir.from_proto(proto)
    assert GeluApprox(to=to)(model).stats["rewritten"] == 1
    assert [n.name for n in model.graph] == ["g"]
    expected = gelu_tanh(X) if to == "tanh" else gelu_exact(X)
    np.testing.assert_allclose(ort_run(model, {"x": X})["y"], expected, atol=2e-6)
    assert not GeluApprox(to=to)(model).modified


@pytest.fixture(scope="module")
def torch_gelus() -> dict[str, onnx.ModelProto]:
    torch = pytest.importorskip("torch")

    class Both(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.gelu(x) + torch.nn.functional.gelu(x * 2, approximate="tanh")

    out = {}
    f = io.BytesIO()
    torch.onnx.export(
        Both(),
        (torch.from_numpy(X),),
        f,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
    )
    out["legacy"] = onnx.load_from_string(f.getvalue())
    out["dynamo"] = torch.onnx.export(
        Both(),
        (torch.from_numpy(X),),
        dynamo=True,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        verbose=False,
    ).model_proto
    return out


@pytest.mark.torch
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("to", ["tanh", "exact"])
def test_decomposed_torch_forms(torch_gelus, exporter, to):
    proto = torch_gelus[exporter]
    model = ir.from_proto(proto)
    result = GeluApprox(to=to)(model)
    assert result.stats["rewritten"] == 1  # one of the two GELUs was in the other form
    counts = op_counts(model)
    assert counts["Erf" if to == "exact" else "Tanh"] == 2
    assert counts["Tanh" if to == "exact" else "Erf"] == 0
    f = gelu_tanh if to == "tanh" else gelu_exact
    np.testing.assert_allclose(ort_run(model, {"x": X})["y"], f(X) + f(2 * X), atol=2e-5)
    assert not GeluApprox(to=to)(model).modified


def test_our_own_decomposition_is_recognised():
    proto = make_model(
        [h.make_node("Gelu", ["x"], ["y"], name="g")],
        [vi("x", T.FLOAT, [2, 20])],
        [vi("y", T.FLOAT, [2, 20])],
        opset=20,
    )
    model = ir.from_proto(proto)
    DecomposeGelu()(model)
    assert GeluApprox(to="tanh")(model).stats["rewritten"] == 1
    np.testing.assert_allclose(ort_run(model, {"x": X})["y"], gelu_tanh(X), atol=2e-6)


def test_deviation_is_reported_not_failed():
    proto = make_model(
        [h.make_node("Gelu", ["x"], ["y"], name="g")],
        [vi("x", T.FLOAT, [2, 20])],
        [vi("y", T.FLOAT, [2, 20])],
        opset=20,
    )
    _, report = surgery.apply(proto, [GeluApprox(to="tanh")], inputs={"x": X})
    step = report.steps[0]
    assert step.modified and step.parity_status == "deviation reported"
