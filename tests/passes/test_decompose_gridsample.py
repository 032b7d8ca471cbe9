"""decompose-gridsample: every mode/padding/align_corners combination matches ORT's GridSample."""

from __future__ import annotations

import io
import itertools

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.errors import PassError
from surgery.passes.decompose_gridsample import DecomposeGridSample
from surgery.testing import make_model, op_counts, ort_run, vi

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 5, 7)).astype(np.float32)
GRID = RNG.uniform(-1.6, 1.6, (2, 4, 6, 2)).astype(np.float32)  # inside and outside [-1, 1]
GRID[0, 0, :4] = [[-1, -1], [1, 1], [0, 0], [1, -1]]  # corners and centre exactly


def _model(opset: int, mode: str, padding: str, align: int) -> onnx.ModelProto:
    return make_model(
        [
            h.make_node(
                "GridSample",
                ["x", "grid"],
                ["y"],
                name="/stn/GridSample",
                mode=mode,
                padding_mode=padding,
                align_corners=align,
            )
        ],
        [vi("x", T.FLOAT, [2, 3, 5, 7]), vi("grid", T.FLOAT, [2, 4, 6, 2])],
        [vi("y", T.FLOAT, [2, 3, 4, 6])],
        opset=opset,
    )


CASES = [
    (opset, mode, padding, align)
    for opset, mode, padding, align in itertools.product(
        (16, 20), ("bilinear", "nearest"), ("zeros", "border", "reflection"), (0, 1)
    )
]


@pytest.mark.parametrize("opset, mode, padding, align", CASES)
def test_matches_gridsample(opset, mode, padding, align):
    if opset >= 20 and mode == "bilinear":
        mode = "linear"  # opset 20 renamed the modes
    proto = _model(opset, mode, padding, align)
    expected = ort_run(proto, {"x": X, "grid": GRID})["y"]
    model = ir.from_proto(proto)
    result = DecomposeGridSample()(model)
    assert result.stats["rewritten"] == 1
    counts = op_counts(model)
    assert "GridSample" not in counts
    assert counts["GatherElements"] == (1 if mode == "nearest" else 4)
    assert all(n.name.startswith("/stn/GridSample/") for n in model.graph)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_allclose(
        ort_run(model, {"x": X, "grid": GRID})["y"], expected, rtol=1e-5, atol=1e-6
    )
    assert not DecomposeGridSample()(model).modified


def test_float16_image_with_float32_grid():
    proto = make_model(
        [h.make_node("GridSample", ["x", "grid"], ["y"], name="gs", align_corners=1)],
        [vi("x", T.FLOAT16, [2, 3, 5, 7]), vi("grid", T.FLOAT, [2, 4, 6, 2])],
        [vi("y", T.FLOAT16, [2, 3, 4, 6])],
        opset=16,
    )
    model = ir.from_proto(proto)
    DecomposeGridSample()(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    out = ort_run(model, {"x": X.astype(np.float16), "grid": GRID})["y"]
    assert out.dtype == np.float16
    ref = ort_run(_model(16, "bilinear", "zeros", 1), {"x": X, "grid": GRID})["y"]
    np.testing.assert_allclose(out.astype(np.float32), ref, atol=5e-3)


def test_bicubic_is_refused():
    with pytest.raises(PassError, match="GridSample '/stn/GridSample' uses mode='bicubic'"):
        DecomposeGridSample()(ir.from_proto(_model(16, "bicubic", "zeros", 0)))


def test_dynamic_shapes_are_refused_with_a_hint():
    proto = make_model(
        [h.make_node("GridSample", ["x", "grid"], ["y"], name="gs")],
        [vi("x", T.FLOAT, ["n", 3, "h", "w"]), vi("grid", T.FLOAT, ["n", 4, 6, 2])],
        [vi("y", T.FLOAT, ["n", 3, 4, 6])],
        opset=16,
    )
    with pytest.raises(PassError, match=r"dynamic or unknown shape.*fix the input shapes first"):
        DecomposeGridSample()(ir.from_proto(proto))


@pytest.mark.torch
def test_torch_grid_sample_export():
    torch = pytest.importorskip("torch")

    class Warp(torch.nn.Module):
        def forward(self, img, flow):
            return torch.nn.functional.grid_sample(
                img, flow, mode="bilinear", padding_mode="border", align_corners=False
            )

    f = io.BytesIO()
    torch.onnx.export(
        Warp(),
        (torch.from_numpy(X), torch.from_numpy(GRID)),
        f,
        dynamo=False,
        opset_version=17,
        input_names=["img", "flow"],
        output_names=["y"],
    )
    proto = onnx.load_from_string(f.getvalue())
    assert op_counts(proto)["GridSample"] == 1
    model = ir.from_proto(proto)
    DecomposeGridSample()(model)
    assert "GridSample" not in op_counts(model)
    expected = torch.nn.functional.grid_sample(
        torch.from_numpy(X), torch.from_numpy(GRID), padding_mode="border", align_corners=False
    ).numpy()
    np.testing.assert_allclose(
        ort_run(model, {"img": X, "flow": GRID})["y"], expected, rtol=1e-5, atol=1e-6
    )
