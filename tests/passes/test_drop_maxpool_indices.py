"""drop-maxpool-indices: an unused Indices output goes, the MaxPool keeps its name and results."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.passes.drop_maxpool_indices import DropMaxPoolIndices
from surgery.testing import make_model, ort_run, vi

X = np.random.default_rng(1).standard_normal((1, 2, 6, 6)).astype(np.float32)


def test_unused_indices_are_dropped():
    proto = make_model(
        [
            h.make_node(
                "MaxPool",
                ["x"],
                ["y", "idx"],
                name="/pool/MaxPool",
                kernel_shape=[2, 2],
                strides=[2, 2],
                storage_order=1,
            )
        ],
        [vi("x", T.FLOAT, [1, 2, 6, 6])],
        [vi("y", T.FLOAT, [1, 2, 3, 3])],
        opset=17,
    )
    model = ir.from_proto(proto)
    assert DropMaxPoolIndices()(model).stats["rewritten"] == 1
    node = model.graph.node(0)
    assert (
        node.name == "/pool/MaxPool"
        and len(node.outputs) == 1
        and "storage_order" not in node.attributes
    )
    assert list(node.attributes["kernel_shape"].as_ints()) == [2, 2]
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], ort_run(proto, {"x": X})["y"])
    assert not DropMaxPoolIndices()(model).modified


def test_used_indices_stay():
    proto = make_model(
        [
            h.make_node(
                "MaxPool", ["x"], ["y", "idx"], name="mp", kernel_shape=[2, 2], strides=[2, 2]
            )
        ],
        [vi("x", T.FLOAT, [1, 2, 6, 6])],
        [vi("y", T.FLOAT, [1, 2, 3, 3]), vi("idx", T.INT64, [1, 2, 3, 3])],
        opset=17,
    )
    result = DropMaxPoolIndices()(ir.from_proto(proto))
    assert not result.modified
    assert "is consumed by a graph output" in result.notes[0]


@pytest.mark.torch
def test_torch_return_indices_after_the_indices_output_is_dropped():
    """A user drops the indices output of a return_indices export; cleanup + this pass finish the job."""
    torch = pytest.importorskip("torch")
    from surgery import registry

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = torch.nn.MaxPool2d(2, return_indices=True)

        def forward(self, x):
            y, idx = self.pool(x)
            return y * 2, idx

    f = io.BytesIO()
    torch.onnx.export(
        Net(),
        (torch.from_numpy(X),),
        f,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y", "idx"],
    )
    model = ir.from_proto(onnx.load_from_string(f.getvalue()))
    model.graph.outputs.pop()  # the user only wants y
    reference = ort_run(model, {"x": X})["y"]
    model, report = surgery.apply(
        model, [registry.get("cleanup")(), DropMaxPoolIndices()], inputs={"x": X}
    )
    step = report.steps[1]
    assert step.modified and step.parity_status == "ok"
    pools = [n for n in model.graph if n.op_type == "MaxPool"]
    assert len(pools) == 1 and len(pools[0].outputs) == 1
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], reference)
