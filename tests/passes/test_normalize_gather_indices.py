"""normalize-gather-indices: constant negative indices become positive, results unchanged."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.errors import PassError
from surgery.passes.normalize_gather_indices import NormalizeGatherIndices
from surgery.testing import make_model, ort_run, vi

X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


def test_gather_and_gather_elements():
    proto = make_model(
        [
            h.make_node("Gather", ["x", "i"], ["a"], axis=2, name="/last"),
            h.make_node("GatherElements", ["x", "j"], ["b"], axis=1, name="/pick"),
            h.make_node("Gather", ["x", "i"], ["c"], axis=-1, name="/shared"),
        ],
        [vi("x", T.FLOAT, [2, 3, 4])],
        [vi("a", T.FLOAT, [2, 3, 2]), vi("b", T.FLOAT, [2, 1, 4]), vi("c", T.FLOAT, [2, 3, 2])],
        {"i": np.array([-1, 0], np.int64), "j": np.full((2, 1, 4), -3, np.int32)},
        opset=13,
    )
    expected = ort_run(proto, {"x": X})
    model = ir.from_proto(proto)
    assert NormalizeGatherIndices()(model).stats["rewritten"] == 3
    for node in model.graph:
        if node.op_type.startswith("Gather"):
            idx = node.inputs[1].producer().attributes["value"].as_tensor().numpy()
            assert (idx >= 0).all()
    assert [n.name for n in model.graph if n.op_type.startswith("Gather")] == [
        "/last",
        "/pick",
        "/shared",
    ]
    assert (
        model.graph.node(3).inputs[1].producer().attributes["value"].as_tensor().dtype
        == ir.DataType.INT32
    )
    assert "i" not in model.graph.initializers  # no user left
    got = ort_run(model, {"x": X})
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])
    assert not NormalizeGatherIndices()(model).modified


def test_out_of_range_index_is_refused():
    proto = make_model(
        [h.make_node("Gather", ["x", "i"], ["a"], axis=1, name="/bad")],
        [vi("x", T.FLOAT, [2, 3, 4])],
        [vi("a", T.FLOAT, [2, 1, 4])],
        {"i": np.array([-4], np.int64)},
        opset=13,
    )
    with pytest.raises(PassError, match="Gather '/bad': indices 'i' fall outside \\[-3, 3\\)"):
        NormalizeGatherIndices()(ir.from_proto(proto))


def test_dynamic_axis_is_left_with_a_reason():
    proto = make_model(
        [h.make_node("Gather", ["x", "i"], ["a"], axis=0, name="g")],
        [vi("x", T.FLOAT, ["n", 4])],
        [vi("a", T.FLOAT, [4])],
        {"i": np.array(-1, np.int64)},
        opset=13,
    )
    result = NormalizeGatherIndices()(ir.from_proto(proto))
    assert not result.modified and "dimension 0 of 'x' is dynamic" in result.notes[0]


@pytest.mark.torch
def test_torch_negative_indexing():
    torch = pytest.importorskip("torch")

    class Last(torch.nn.Module):
        def forward(self, x):
            return x[:, -1] * 2 + x[..., -2]

    f = io.BytesIO()
    torch.onnx.export(
        Last(),
        (torch.from_numpy(X[:, :, :3].copy()),),
        f,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
    )
    proto = onnx.load_from_string(f.getvalue())
    model = ir.from_proto(proto)
    assert NormalizeGatherIndices()(model).stats["rewritten"] >= 1
    x = X[:, :, :3].copy()
    np.testing.assert_array_equal(ort_run(model, {"x": x})["y"], ort_run(proto, {"x": x})["y"])
