"""narrow-int64: only provably-fitting int64 groups become int32; int64 stays where ONNX wants it."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.passes.narrow_int64 import NarrowInt64
from surgery.testing import make_model, ort_run, vi

X = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)


def _shape_path(x_shape) -> onnx.ModelProto:
    """Shape -> Gather -> Mul -> Unsqueeze -> Concat -> Reshape, plus a Gather with constant indices."""
    return make_model(
        [
            h.make_node("Shape", ["x"], ["shp"], name="/shape"),
            h.make_node("Gather", ["shp", "i1"], ["d1"], axis=0, name="/d1"),
            h.make_node("Gather", ["shp", "i2"], ["d2"], axis=0, name="/d2"),
            h.make_node("Mul", ["d1", "d2"], ["prod"], name="/prod"),
            h.make_node("Unsqueeze", ["prod", "ax0"], ["prod1"], name="/unsq"),
            h.make_node("Concat", ["minus1", "prod1"], ["new_shape"], axis=0, name="/concat"),
            h.make_node("Reshape", ["x", "new_shape"], ["flat"], name="/reshape"),
            h.make_node("Gather", ["flat", "cols"], ["y"], axis=1, name="/pick"),
        ],
        [vi("x", T.FLOAT, x_shape)], [vi("y", T.FLOAT, [2, 3])],
        {"i1": np.array(1, np.int64), "i2": np.array(2, np.int64), "ax0": np.array([0], np.int64),
         "minus1": np.array([-1], np.int64), "cols": np.array([0, 5, 11], np.int64)},
        opset=17,
    )


def test_shape_path_and_constant_indices_become_int32():
    proto = _shape_path([2, 3, 4])
    expected = ort_run(proto, {"x": X})["y"]
    model = ir.from_proto(proto)
    result = NarrowInt64()(model)
    assert result.stats == {"values": 9, "constants": 4, "casts_to_int64": 1, "casts_to_int32": 1}
    by_name = {n.name: n for n in model.graph}
    # Shape's output is int64 by schema: a Cast to int32 follows it; Reshape's shape is int64 by schema: a Cast back
    assert by_name["/shape"].outputs[0].dtype == ir.DataType.INT64
    assert by_name["shp/to_int32"].op_type == "Cast"
    assert by_name["/reshape"].inputs[1].producer().name == "new_shape/to_int64"
    assert by_name["/concat"].outputs[0].dtype == ir.DataType.INT32
    assert model.graph.initializers["cols"].const_value.dtype == ir.DataType.INT32
    assert model.graph.initializers["ax0"].const_value.dtype == ir.DataType.INT64  # Unsqueeze's axes is int64 by schema
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], expected)
    assert not NarrowInt64()(model).modified


def test_dynamic_dims_are_not_proven_and_stay_int64():
    model = ir.from_proto(_shape_path(["n", 3, 4]))
    result = NarrowInt64()(model)
    # the shape path depends on a dim with no bound and stays int64 (no Cast); the constant
    # Gather indices (i1, i2, cols) are proven and narrow on their own
    assert result.stats == {"values": 3, "constants": 3}
    assert [n.op_type for n in model.graph].count("Cast") == 0
    assert model.graph.initializers["i1"].const_value.dtype == ir.DataType.INT32
    assert model.graph.initializers["minus1"].const_value.dtype == ir.DataType.INT64
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], ort_run(_shape_path(["n", 3, 4]), {"x": X})["y"])


def test_out_of_range_values_and_interfaces_stay_int64():
    proto = make_model(
        [h.make_node("Add", ["big", "k"], ["s"], name="/add"),
         h.make_node("Add", ["n", "k"], ["m"], name="/add_input"),
         h.make_node("Cast", ["f"], ["fi"], to=T.INT64, name="/from_float"),
         h.make_node("Add", ["fi", "k"], ["g"], name="/add_float")],
        [vi("n", T.INT64, [1]), vi("f", T.FLOAT, [1])], [vi("s", T.INT64, [1]), vi("m", T.INT64, [1]), vi("g", T.INT64, [1])],
        {"big": np.array([3_000_000_000], np.int64), "k": np.array([1], np.int64)}, opset=17)
    result = NarrowInt64()(ir.from_proto(proto))
    assert not result.modified  # 3e9 does not fit; graph inputs/outputs keep their type; float casts are unbounded


@pytest.mark.torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_index_arithmetic(dynamo):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def forward(self, x, idx):
            b, c, hh, w = x.shape
            y = x.reshape(b, c, hh * w)
            y = y[:, :, torch.arange(0, hh * w, 2)]
            z = y.gather(2, idx.expand(b, c, 3))
            return z.flatten(1), torch.argmax(y, dim=-1) + 1

    x, idx = torch.randn(2, 3, 4, 4), torch.tensor([[[0, 2, 5]]])
    if dynamo:
        proto = torch.onnx.export(Net(), (x, idx), dynamo=True, opset_version=18, optimize=False, verbose=False).model_proto
    else:
        f = io.BytesIO()
        torch.onnx.export(Net(), (x, idx), f, dynamo=False, opset_version=17)
        proto = onnx.load_from_string(f.getvalue())
    feeds = {proto.graph.input[0].name: x.numpy(), proto.graph.input[1].name: idx.numpy()}
    expected = ort_run(proto, feeds)
    model = ir.from_proto(proto)
    result = NarrowInt64()(model)
    assert result.stats["values"] >= 5
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    got = ort_run(model, feeds)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])
        assert got[k].dtype == expected[k].dtype
    assert not NarrowInt64()(model).modified
