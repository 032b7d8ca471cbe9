"""complete-nms-inputs: NonMaxSuppression gets all five inputs and selects the same boxes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.passes.complete_nms_inputs import CompleteNmsInputs
from surgery.testing import make_model, ort_run, vi

RNG = np.random.default_rng(0)
CORNERS = RNG.uniform(0, 10, (1, 12, 2)).astype(np.float32)
BOXES = np.concatenate(
    [CORNERS, CORNERS + RNG.uniform(1, 4, (1, 12, 2)).astype(np.float32)], axis=2
)
SCORES = RNG.uniform(-2, 1, (1, 2, 12)).astype(
    np.float32
)  # negative scores too: no threshold must keep them


def _nms(inputs: list[str], inits: dict) -> onnx.ModelProto:
    return make_model(
        [h.make_node("NonMaxSuppression", inputs, ["sel"], name="/post/NMS", center_point_box=0)],
        [vi("boxes", T.FLOAT, [1, 12, 4]), vi("scores", T.FLOAT, [1, 2, 12])],
        [vi("sel", T.INT64, ["n", 3])],
        inits,
        opset=11,
    )


@pytest.mark.parametrize(
    "inputs, inits",
    [
        (["boxes", "scores"], {}),
        (["boxes", "scores", "max"], {"max": np.array([5], np.int64)}),
        (
            ["boxes", "scores", "max", "iou"],
            {"max": np.array([20], np.int64), "iou": np.array([0.3], np.float32)},
        ),
        (
            ["boxes", "scores", "max", "", "st"],
            {"max": np.array([20], np.int64), "st": np.array([0.1], np.float32)},
        ),
    ],
)
def test_all_five_inputs_same_selection(inputs, inits):
    proto = _nms(inputs, inits)
    feeds = {"boxes": BOXES, "scores": SCORES}
    expected = ort_run(proto, feeds)["sel"]
    model = ir.from_proto(proto)
    assert CompleteNmsInputs()(model).stats["rewritten"] == 1
    node = model.graph.node(len(model.graph) - 1)
    assert node.op_type == "NonMaxSuppression" and node.name == "/post/NMS"
    assert len(node.inputs) == 5 and all(v is not None for v in node.inputs)
    assert node.attributes["center_point_box"].as_int() == 0
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_array_equal(ort_run(model, feeds)["sel"], expected)
    assert not CompleteNmsInputs()(model).modified


def test_missing_score_threshold_filters_nothing():
    proto = _nms(
        ["boxes", "scores", "max", "iou"],
        {"max": np.array([12], np.int64), "iou": np.array([1.0], np.float32)},
    )
    model = ir.from_proto(proto)
    CompleteNmsInputs()(model)
    selected = ort_run(model, {"boxes": BOXES, "scores": SCORES})["sel"]
    assert (
        len(selected) == 2 * 12
    )  # iou 1.0 suppresses nothing; every box of every class, negative scores included
