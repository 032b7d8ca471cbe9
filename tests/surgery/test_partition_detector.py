"""Split a YOLO-style detector with NMS exported by torch 2.13 (legacy and dynamo exporters).

Done-when of the partition issue: the head has no NonMaxSuppression, NonZero or other
data-dependent shape and becomes fully static after fix-shapes + make-static (assert-static
passes), the tail stays dynamic, and head then tail reproduce the original outputs exactly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

import surgery
from surgery import model_io
from surgery.analysis.dependence import analyse
from surgery.partition import split
from surgery.runtime import SplitRunner
from surgery.testing import op_counts, ort_run

pytestmark = pytest.mark.torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "30_split_nms" / "detector.py"


def _detector_module():
    spec = importlib.util.spec_from_file_location("split_nms_detector", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Both exporters, with a dynamic batch dim."""
    pytest.importorskip("torch")
    detector = _detector_module()
    paths = {}
    for exporter in ("legacy", "dynamo"):
        folder = tmp_path_factory.mktemp(exporter)
        paths[exporter] = detector.export(folder, dynamo=exporter == "dynamo", dynamic=True)
    return paths


def _images(seed: int, batch: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)) * 2).astype(np.float32)


def _hostile_free(model: ir.Model) -> bool:
    return not analyse(model.graph).hostile


def test_legacy_export_has_nine_boundary_tensors_with_shape_scalars(exports):
    model = model_io.load(exports["legacy"])
    parts = split(model, minimize=False)  # the tensors crossing into NMS's region itself
    assert parts.hostile[0]["op_type"] == "NonMaxSuppression"
    assert len(parts.boundary) == 9, parts.boundary
    assert parts.boundary[:2] == [
        "/GatherElements_output_0",
        "/GatherElements_1_output_0",
    ]  # the NMS inputs
    by_name = {v.name: v for v in parts.tail.graph.inputs}
    scalars = [n for n in parts.boundary if by_name[n].dtype == ir.DataType.INT64]
    assert len(scalars) == 5, scalars  # shape scalars computed in the head cross too
    head_ops, tail_ops = op_counts(parts.head), op_counts(parts.tail)
    assert (
        head_ops["NonMaxSuppression"] == 0
        and head_ops["NonZero"] == 0
        and _hostile_free(parts.head)
    )
    assert tail_ops["NonMaxSuppression"] == 1 and tail_ops["TopK"] == 1  # the data-dependent TopK
    assert head_ops["TopK"] == 1  # the pre-NMS TopK (k from shapes) stays on the NPU side
    assert next(v.name for v in parts.head.graph.outputs) == "pred" and parts.outputs == [
        "pred",
        "detections",
    ]
    runner = SplitRunner([parts.head, parts.tail], outputs=parts.outputs)
    for seed in range(3):
        feeds = {"images": _images(seed)}
        ref, got = ort_run(model, feeds), runner.run(feeds)
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key])


def test_dynamo_export_boundary_is_the_two_nms_inputs(exports):
    model = model_io.load(exports["dynamo"])
    parts = split(model)
    assert parts.boundary == ["gather", "gather_1"]
    assert op_counts(parts.head)["NonMaxSuppression"] == 0 and _hostile_free(parts.head)
    assert model.ir_version == parts.head.ir_version == parts.tail.ir_version == 10
    assert parts.head.opset_imports == model.opset_imports


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_split_then_static_head_reproduces_the_original_exactly(exports, exporter, tmp_path):
    from surgery.passes.assert_static import AssertStatic
    from surgery.passes.fix_shapes import FixShapes
    from surgery.passes.make_static import MakeStatic
    from surgery.passes.split_postprocess import SplitPostprocess

    source = exports[exporter]
    original = model_io.load(source)
    out = tmp_path / "npu.onnx"
    pipeline = [
        SplitPostprocess(),
        FixShapes(shapes={"images": [1, 3, 32, 32]}),
        MakeStatic(),
        AssertStatic(),
    ]
    head, report = surgery.apply(
        model_io.load(source),
        pipeline,
        inputs={"images": _images(0)},
        verify={"rtol": 0.0, "atol": 0.0},
        output=out,
    )
    split_step = report.steps[0]
    assert split_step.modified and split_step.parity_status == "ok" and split_step.checker == "ok"
    assert all(s.parity_status in ("ok", "unchanged") for s in report.steps)
    assert report.files["tail"] == str(tmp_path / "npu.tail.onnx")
    # the manifest is written from the final (static) head, next to it
    assert report.files["manifest"] == str(tmp_path / "npu.split.json")
    from_manifest = SplitRunner.from_manifest(tmp_path / "npu.split.json")
    np.testing.assert_allclose(
        from_manifest.run({"images": _images(0)})["pred"],
        ort_run(original, {"images": _images(0)})["pred"],
        rtol=1e-5,
        atol=1e-6,
    )
    # the head is static (assert-static passed); the tail keeps NMS and dynamic dims
    assert all(isinstance(d, int) for v in head.graph.inputs for d in v.shape)
    tail = model_io.load(tmp_path / "npu.tail.onnx")
    assert op_counts(tail)["NonMaxSuppression"] == 1
    assert any(not isinstance(d, int) for v in tail.graph.outputs for d in v.shape)
    import onnxruntime as ort

    options = ort.SessionOptions()  # the same kernels as the reference run: bit-exact comparison
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    runner = SplitRunner(
        [out, tmp_path / "npu.tail.onnx"], outputs=["pred", "detections"], session_options=options
    )
    counts = set()
    for seed in range(6):
        feeds = {"images": _images(seed)}
        ref, got = ort_run(original, feeds), runner.run(feeds)
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key])
        counts.add(got["detections"].shape[0])
    assert (
        len(counts) > 1
    )  # the tail really is dynamic: different inputs keep different numbers of boxes


def test_split_command_on_a_static_legacy_export_cuts_fewest_bytes_and_writes_a_static_head(
    exports, tmp_path
):
    """Issue 13 item 9: with a static input the head folds static (make-static runs first), and the
    boundary is the two NMS inputs ([1, 32, 4] + [1, 3, 32] float32 = 896 bytes), not the 4
    tensors (1792 bytes) crossing into NMS's region, nor the 9 of the dynamic export."""
    import json

    import onnx

    from surgery.cli import main
    from surgery.passes.fix_shapes import FixShapes

    static = tmp_path / "static.onnx"
    surgery.apply(
        model_io.load(exports["legacy"]),
        [FixShapes(shapes={"images": [1, 3, 32, 32]})],
        inputs={"images": _images(0)},
        output=static,
    )
    naive = split(model_io.load(static), minimize=False)
    head, tail = tmp_path / "head.onnx", tmp_path / "tail.onnx"
    assert main(["split", str(static), "--head", str(head), "--tail", str(tail)]) == 0
    manifest = json.loads((tmp_path / "head.split.json").read_text())
    assert [(b["name"], b["shape"], b["bytes"]) for b in manifest["boundary"]] == [
        ("/GatherElements_output_0", [1, 32, 4], 512),
        ("/GatherElements_1_output_0", [1, 3, 32], 384),
    ]
    assert manifest["boundary_bytes"] == 896 and len(naive.boundary) > 2
    # static by onnx's own inference on the written head: every tensor, inputs and outputs included
    inferred = onnx.shape_inference.infer_shapes(onnx.load(head), strict_mode=True, data_prop=True)
    graph = inferred.graph
    values = {v.name: v for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    produced = [o for n in graph.node for o in n.output if o]
    dynamic = [
        n
        for n in produced
        if n not in values
        or not all(d.HasField("dim_value") for d in values[n].type.tensor_type.shape.dim)
    ]
    assert dynamic == [] and "NonMaxSuppression" not in {n.op_type for n in graph.node}
    original = model_io.load(exports["legacy"])
    runner = SplitRunner([head, tail], outputs=["pred", "detections"])
    for seed in range(3):
        feeds = {"images": _images(seed)}
        ref, got = ort_run(original, feeds), runner.run(feeds)
        for key in ref:
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-5)
