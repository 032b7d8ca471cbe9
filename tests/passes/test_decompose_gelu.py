"""decompose-gelu: the opset-20 Gelu op becomes Erf/Tanh arithmetic with the same outputs."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.errors import PassError
from surgery.passes.decompose_gelu import DecomposeGelu
from surgery.testing import make_model, op_counts, ort_run, vi

X = np.linspace(-6, 6, 48, dtype=np.float32).reshape(2, 24)


@pytest.mark.parametrize("mode", ["none", "tanh"])
def test_gelu_op_is_decomposed_exactly(mode):
    proto = make_model(
        [h.make_node("Gelu", ["x"], ["y"], name="/act/Gelu", approximate=mode)],
        [vi("x", T.FLOAT, [2, 24])],
        [vi("y", T.FLOAT, [2, 24])],
        opset=20,
    )
    ref = ort_run(proto, {"x": X})["y"]
    model = ir.from_proto(proto)
    result = DecomposeGelu()(model)
    assert result.modified and result.stats["rewritten"] == 1
    counts = op_counts(model)
    assert "Gelu" not in counts
    assert counts[{"none": "Erf", "tanh": "Tanh"}[mode]] == 1
    assert all(n.name.startswith("/act/Gelu/") for n in model.graph)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_allclose(ort_run(model, {"x": X})["y"], ref, rtol=1e-6, atol=1e-6)
    assert not DecomposeGelu()(model).modified


def test_float16_gelu_keeps_its_type():
    proto = make_model(
        [h.make_node("Gelu", ["x"], ["y"], name="g")],
        [vi("x", T.FLOAT16, [2, 24])],
        [vi("y", T.FLOAT16, [2, 24])],
        opset=20,
    )
    model = ir.from_proto(proto)
    DecomposeGelu()(model)
    consts = [n for n in model.graph if n.op_type == "Constant"]
    assert consts and all(
        n.attributes["value"].as_tensor().dtype == ir.DataType.FLOAT16 for n in consts
    )
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    out = ort_run(model, {"x": X.astype(np.float16)})["y"]
    ref = ort_run(proto, {"x": X.astype(np.float16)})["y"]
    np.testing.assert_allclose(out.astype(np.float32), ref.astype(np.float32), atol=1e-2)


def test_unknown_approximation_is_refused():
    proto = make_model(
        [h.make_node("Gelu", ["x"], ["y"], name="g")],
        [vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
        opset=20,
    )
    model = ir.from_proto(proto)
    model.graph.node(0).attributes["approximate"] = ir.AttrString("approximate", "fast")
    with pytest.raises(PassError, match="Gelu 'g' has approximate='fast'"):
        DecomposeGelu()(model)


@pytest.fixture(scope="module")
def torch_gelu_opset20() -> onnx.ModelProto:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(24, 24)

        def forward(self, x):
            y = torch.nn.functional.gelu(self.fc(x))
            return torch.nn.functional.gelu(y, approximate="tanh")

    torch.manual_seed(0)
    f = io.BytesIO()
    torch.onnx.export(
        Net().eval(),
        (torch.from_numpy(X),),
        f,
        dynamo=False,
        opset_version=20,
        input_names=["x"],
        output_names=["y"],
    )
    return onnx.load_from_string(f.getvalue())


@pytest.mark.torch
def test_torch_export_at_opset_20(torch_gelu_opset20):
    assert op_counts(torch_gelu_opset20)["Gelu"] == 2
    ref = ort_run(torch_gelu_opset20, {"x": X})["y"]
    model = ir.from_proto(torch_gelu_opset20)
    assert DecomposeGelu()(model).stats["rewritten"] == 2
    assert "Gelu" not in op_counts(model)
    np.testing.assert_allclose(ort_run(model, {"x": X})["y"], ref, rtol=1e-5, atol=1e-6)
