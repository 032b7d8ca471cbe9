"""nearest-upsample-to-expand: integer-scale nearest Resize becomes Unsqueeze/Expand/Reshape, bit-exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.passes.nearest_upsample_to_expand import NearestUpsampleToExpand
from surgery.testing import make_model, op_counts, ort_run, vi


def _resize(
    coord="asymmetric",
    nearest="floor",
    scales=(1, 1, 2, 3),
    shape=(2, 3, 4, 5),
    sizes=None,
    opset=17,
    out_shape=None,
):
    inits = (
        {"scales": np.array(scales, np.float32)}
        if sizes is None
        else {"sizes": np.array(sizes, np.int64)}
    )
    ins = ["x", "", "scales"] if sizes is None else ["x", "", "", "sizes"]
    out = (
        out_shape or [d * int(s) for d, s in zip(shape, scales, strict=True)]
        if sizes is None
        else list(sizes)
    )
    return make_model(
        [
            h.make_node(
                "Resize",
                ins,
                ["u"],
                name="/neck/upsample/Resize",
                mode="nearest",
                coordinate_transformation_mode=coord,
                nearest_mode=nearest,
            ),
            h.make_node("Relu", ["u"], ["y"], name="act"),
        ],
        [vi("x", T.FLOAT, list(shape))],
        [vi("y", T.FLOAT, out)],
        inits,
        opset=opset,
    )


def _feeds(shape):
    return {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


@pytest.mark.parametrize(
    "coord,nearest",
    [
        ("asymmetric", "floor"),
        ("half_pixel", "round_prefer_floor"),
        ("pytorch_half_pixel", "round_prefer_ceil"),
        ("half_pixel", "round_prefer_ceil"),
    ],
)
def test_rewrite_is_bit_exact(coord, nearest):
    proto = _resize(coord, nearest)
    result = NearestUpsampleToExpand()(ir.from_proto(proto))
    assert result.modified
    counts = op_counts(result.model)
    assert (
        counts["Resize"] == 0
        and counts["Expand"] == 1
        and counts["Reshape"] == 1
        and counts["Unsqueeze"] == 1
    )
    out = ir.to_proto(result.model)
    onnx.checker.check_model(out, full_check=True)
    feeds = _feeds((2, 3, 4, 5))
    assert np.array_equal(ort_run(out, feeds)["y"], ort_run(proto, feeds)["y"])
    assert all(
        n.name.startswith("/neck/upsample/Resize/")
        for n in result.model.graph
        if n.op_type != "Relu"
    )
    assert NearestUpsampleToExpand()(result.model).modified is False  # idempotent


def test_sizes_and_dynamic_batch():
    proto = _resize(sizes=[2, 3, 8, 10])
    result = NearestUpsampleToExpand()(ir.from_proto(proto))
    assert result.modified
    feeds = _feeds((2, 3, 4, 5))
    assert np.array_equal(
        ort_run(ir.to_proto(result.model), feeds)["y"], ort_run(proto, feeds)["y"]
    )
    batch = _resize(shape=("n", 3, 4, 5), out_shape=["n", 3, 8, 15])
    result = NearestUpsampleToExpand()(ir.from_proto(batch))
    assert result.modified
    for n in (1, 3):
        feeds = _feeds((n, 3, 4, 5))
        assert np.array_equal(
            ort_run(ir.to_proto(result.model), feeds)["y"], ort_run(batch, feeds)["y"]
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"coord": "asymmetric", "nearest": "round_prefer_floor"},  # ties: not a repeat
        {"coord": "align_corners", "nearest": "floor"},
        {"scales": (1, 1, 1.5, 2), "out_shape": [2, 3, 6, 10]},  # not an integer scale
        {"scales": (1, 1, 0.5, 1), "out_shape": [2, 3, 2, 5]},  # downsampling
    ],
)
def test_left_alone_when_not_a_repeat(kwargs):
    result = NearestUpsampleToExpand()(ir.from_proto(_resize(**kwargs)))
    assert not result.modified and op_counts(result.model)["Resize"] == 1


def test_inside_if_branch():
    body = h.make_graph(
        [
            h.make_node(
                "Resize",
                ["x", "", "sc"],
                ["u"],
                name="b/Resize",
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
                nearest_mode="floor",
            )
        ],
        "then",
        [],
        [vi("u", T.FLOAT, [1, 2, 4, 4])],
        [onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")],
    )
    other = h.make_graph(
        [h.make_node("Identity", ["x2"], ["v"], name="b/Id")],
        "else",
        [],
        [vi("v", T.FLOAT, [1, 2, 4, 4])],
    )
    proto = make_model(
        [h.make_node("If", ["c"], ["y"], name="branch", then_branch=body, else_branch=other)],
        [vi("x", T.FLOAT, [1, 2, 2, 2]), vi("c", T.BOOL, []), vi("x2", T.FLOAT, [1, 2, 4, 4])],
        [vi("y", T.FLOAT, [1, 2, 4, 4])],
    )
    result = NearestUpsampleToExpand()(ir.from_proto(proto))
    assert result.modified and op_counts(result.model)["Resize"] == 0
    feeds = {
        "x": _feeds((1, 2, 2, 2))["x"],
        "c": np.array(True),
        "x2": np.zeros((1, 2, 4, 4), np.float32),
    }
    assert np.array_equal(
        ort_run(ir.to_proto(result.model), feeds)["y"], ort_run(proto, feeds)["y"]
    )


@pytest.mark.torch
def test_torch_nearest_upsample_export(tmp_path):
    torch = pytest.importorskip("torch")

    class Up(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") + 1

    path = tmp_path / "up.onnx"
    torch.onnx.export(Up(), (torch.randn(1, 4, 6, 6),), str(path), opset_version=17, dynamo=False)
    proto = onnx.load(path)
    resize = next(n for n in proto.graph.node if n.op_type == "Resize")
    attrs = {a.name: a.s.decode() for a in resize.attribute if a.type == onnx.AttributeProto.STRING}
    assert (
        attrs["coordinate_transformation_mode"] == "asymmetric" and attrs["nearest_mode"] == "floor"
    )
    result = NearestUpsampleToExpand()(ir.from_proto(proto))
    assert result.modified and op_counts(result.model)["Resize"] == 0
    feeds = {proto.graph.input[0].name: _feeds((1, 4, 6, 6))["x"]}
    got, want = ort_run(ir.to_proto(result.model), feeds), ort_run(proto, feeds)
    assert all(np.array_equal(got[k], want[k]) for k in want)
