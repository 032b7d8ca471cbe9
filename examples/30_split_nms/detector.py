"""A small YOLO-style detector with NMS and TopK/Gather post-processing, exported by torch.

Plain torch (no torchvision): NMS is a custom op that the legacy exporter turns into ONNX
``NonMaxSuppression`` through ``symbolic`` and the dynamo exporter through a custom translation.
The post-processing has a pre-NMS TopK whose k comes from the input shape (static once shapes are
fixed) and a post-NMS TopK whose k depends on how many boxes NMS kept (data-dependent).

Run ``python detector.py OUT_DIR`` to write ``detector_legacy.onnx`` and ``detector_dynamo.onnx``
(batch dim dynamic) and ``detector_perturbed.onnx``, the legacy export with one Conv weight changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

NUM_CLASSES = 3
PRE_NMS_TOP_K = 32
MAX_DETECTIONS = 10
IOU_THRESHOLD = 0.5
SCORE_THRESHOLD = 0.2
MAX_PER_CLASS = 20


def _nms_reference(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    max_per_class: int,
    iou: float,
    score_threshold: float,
) -> torch.Tensor:
    """ONNX NonMaxSuppression semantics (center_point_box=0) in plain torch: [K, 3] int64."""
    selected = []
    for b in range(boxes.shape[0]):
        x1 = torch.minimum(boxes[b, :, 0], boxes[b, :, 2])
        y1 = torch.minimum(boxes[b, :, 1], boxes[b, :, 3])
        x2 = torch.maximum(boxes[b, :, 0], boxes[b, :, 2])
        y2 = torch.maximum(boxes[b, :, 1], boxes[b, :, 3])
        area = (x2 - x1) * (y2 - y1)
        for c in range(scores.shape[1]):
            s = scores[b, c]
            order = [
                int(i)
                for i in torch.argsort(s, descending=True, stable=True)
                if s[i] > score_threshold
            ]
            keep: list[int] = []
            for i in order:
                if len(keep) >= max_per_class:
                    break
                ok = True
                for j in keep:
                    iw = (torch.minimum(x2[i], x2[j]) - torch.maximum(x1[i], x1[j])).clamp(min=0)
                    ih = (torch.minimum(y2[i], y2[j]) - torch.maximum(y1[i], y1[j])).clamp(min=0)
                    inter = iw * ih
                    if inter / (area[i] + area[j] - inter) > iou:
                        ok = False
                        break
                if ok:
                    keep.append(i)
            selected.extend([b, c, i] for i in keep)
    return torch.tensor(selected, dtype=torch.int64).reshape(-1, 3)


class _LegacyNMS(torch.autograd.Function):
    """NMS for the legacy (TorchScript) exporter: traced as a custom function, exported by symbolic."""

    @staticmethod
    def forward(ctx, boxes, scores):  # type: ignore[override]
        return _nms_reference(boxes, scores, MAX_PER_CLASS, IOU_THRESHOLD, SCORE_THRESHOLD)

    @staticmethod
    def symbolic(g, boxes, scores):  # type: ignore[override]
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([MAX_PER_CLASS], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([IOU_THRESHOLD], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([SCORE_THRESHOLD], dtype=torch.float32)),
        )


@torch.library.custom_op("surgery_example::nms", mutates_args=())
def nms_op(boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    return _nms_reference(boxes, scores, MAX_PER_CLASS, IOU_THRESHOLD, SCORE_THRESHOLD)


@nms_op.register_fake
def _(boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    ctx = torch.library.get_ctx()
    k = ctx.new_dynamic_size()
    return boxes.new_empty((k, 3), dtype=torch.int64)


def _onnx_nms(boxes, scores):
    from onnxscript import opset18 as op

    return op.NonMaxSuppression(
        boxes,
        scores,
        op.Constant(value_ints=[MAX_PER_CLASS]),
        op.Constant(value_floats=[IOU_THRESHOLD]),
        op.Constant(value_floats=[SCORE_THRESHOLD]),
    )


class Detector(nn.Module):
    """Backbone → YOLO head → decode → pre-NMS TopK → NMS → gather → data-dependent TopK."""

    def __init__(self, legacy: bool) -> None:
        super().__init__()
        self.legacy = legacy
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.SiLU(),
        )
        self.head = nn.Conv2d(16, 4 + NUM_CLASSES, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.head(self.backbone(images))  # [B, 4 + C, H/4, W/4]
        flat = pred.flatten(2)  # [B, 4 + C, N]
        xywh = flat[:, :4].transpose(1, 2)  # [B, N, 4]
        centre = xywh[..., :2] * 8.0
        size = torch.sigmoid(xywh[..., 2:]) * 16.0
        boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)  # [B, N, 4]
        scores = torch.sigmoid(flat[:, 4:])  # [B, C, N]
        best = scores.amax(dim=1)  # [B, N]
        # pre-NMS TopK: k = min(PRE_NMS_TOP_K, N), a function of the input shape only
        if self.legacy:
            n = torch._shape_as_tensor(best)[1:2]
            k = torch.min(torch.cat([torch.tensor([PRE_NMS_TOP_K]), n]))
        else:
            k = min(PRE_NMS_TOP_K, best.shape[1])
        _, top = best.topk(k, dim=1)  # [B, k]
        top_boxes = torch.gather(boxes, 1, top.unsqueeze(-1).expand(-1, -1, 4))  # [B, k, 4]
        top_scores = torch.gather(
            scores, 2, top.unsqueeze(1).expand(-1, NUM_CLASSES, -1)
        )  # [B, C, k]
        selected = (
            _LegacyNMS.apply(top_boxes, top_scores)
            if self.legacy
            else nms_op(top_boxes, top_scores)
        )
        b, c, i = selected[:, 0], selected[:, 1], selected[:, 2]
        det_boxes = top_boxes[b, i]  # [K, 4]
        det_scores = top_scores[b, c, i]  # [K]
        # post-NMS TopK: k = min(MAX_DETECTIONS, K), K known only at run time
        if self.legacy:
            kk = torch.min(
                torch.cat([torch.tensor([MAX_DETECTIONS]), torch._shape_as_tensor(det_scores)])
            )
        else:
            kk = min(MAX_DETECTIONS, det_scores.shape[0])
        final_scores, order = det_scores.topk(kk)
        detections = torch.cat(
            [
                det_boxes[order],
                final_scores.unsqueeze(1),
                c[order].unsqueeze(1).float(),
                b[order].unsqueeze(1).float(),
            ],
            dim=1,
        )  # [min(10, K), 7]
        return pred, detections


def export(
    out_dir: str | Path,
    *,
    dynamo: bool,
    size: int = 32,
    batch: int = 1,
    dynamic: bool = False,
    seed: int = 0,
) -> Path:
    """Export the detector and return the path of the ONNX file."""
    torch.manual_seed(seed)
    model = Detector(legacy=not dynamo).eval()
    images = torch.rand(batch, 3, size, size)
    path = Path(out_dir) / ("detector_dynamo.onnx" if dynamo else "detector_legacy.onnx")
    if dynamo:
        kwargs = {}
        if dynamic:
            kwargs["dynamic_shapes"] = {"images": {0: torch.export.Dim("batch", max=8)}}
        onnx_program = torch.onnx.export(
            model,
            (images,),
            dynamo=True,
            input_names=["images"],
            output_names=["pred", "detections"],
            custom_translation_table={torch.ops.surgery_example.nms.default: _onnx_nms},
            **kwargs,
        )
        onnx_program.save(str(path))
    else:
        kwargs = {}
        if dynamic:
            kwargs["dynamic_axes"] = {"images": {0: "batch"}}
        with torch.no_grad():
            torch.onnx.export(
                model,
                (images,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["images"],
                output_names=["pred", "detections"],
                **kwargs,
            )
    return path


def perturb(
    source: str | Path, target: str | Path, weight: str = "backbone.2.weight", delta: float = 0.05
) -> Path:
    """Copy ``source`` with one element of a Conv weight changed (for ``surgery compare``)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    for init in model.graph.initializer:
        if init.name == weight:
            array = numpy_helper.to_array(init).copy()
            array.flat[7] += delta
            init.CopyFrom(numpy_helper.from_array(array, weight))
            break
    else:
        raise SystemExit(f"no initializer {weight}")
    onnx.save(model, str(target))
    return Path(target)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    legacy = export(out, dynamo=False, dynamic=True)
    print(legacy)
    print(export(out, dynamo=True, dynamic=True))
    print(perturb(legacy, out / "detector_perturbed.onnx"))
