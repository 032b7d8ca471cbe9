"""Torch 2.13 exports that reproduce the field situations `surgery doctor` is for.

    python field_models.py OUT_DIR [NAME ...]

writes ``OUT_DIR/<name>.onnx`` for each situation (all by default):

- ``opset20_dynamo``: a conv/GELU/LayerNorm block exported by the dynamo exporter at opset 20
  (ATC registers standard ops at opsets 8-18 only, and has no Gelu);
- ``float64_math``: a float32 model with float64 pre- and post-processing inside;
- ``nms_detector``: a tiny detector whose NonMaxSuppression has 3 inputs (legacy exporter);
- ``gridsample``: ``F.grid_sample`` (an AICPU-only kernel on Ascend);
- ``dynamic_dims``: a conv net exported with dynamic batch, height and width;
- ``functions_legacy``: residual blocks exported as model-local functions
  (``export_modules_as_functions``), which puts them in an extra opset domain.

``EXPECTED`` says which doctor checks each one must trigger (the test asserts it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: situation -> {check name: severity} doctor must report (at least).
EXPECTED: dict[str, dict[str, str]] = {
    "opset20_dynamo": {"opset": "will-fail", "unregistered-op": "will-fail"},
    "float64_math": {"float64": "will-fail"},
    "nms_detector": {"nms": "will-fail"},
    "gridsample": {"aicpu-only": "slow"},
    "dynamic_dims": {"dynamic-dims": "will-fail"},
    "functions_legacy": {"domains": "will-fail"},
}


class GeluBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv(x))
        return self.norm(y.permute(0, 2, 3, 1))


class Float64Math(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer(
            "mean", torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
        )
        self.register_buffer(
            "std", torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x.double() - self.mean) / self.std).float()  # preprocessing in float64
        y = self.conv(x).mean(dim=(2, 3))
        return torch.softmax(y.double() * 2.0, dim=1).float()  # postprocessing in float64


class _NMS3(torch.autograd.Function):
    """NonMaxSuppression with only boxes, scores and max_output_boxes_per_class (3 inputs)."""

    @staticmethod
    def forward(ctx, boxes, scores):  # type: ignore[override]
        n = boxes.shape[1]
        return torch.stack(
            [
                torch.zeros(n, dtype=torch.int64),
                torch.zeros(n, dtype=torch.int64),
                torch.arange(n, dtype=torch.int64),
            ],
            dim=1,
        )

    @staticmethod
    def symbolic(g, boxes, scores):  # type: ignore[override]
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([5], dtype=torch.int64)),
        )


class NmsDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 5, 1)  # 4 box coordinates + 1 class score

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = self.head(self.backbone(images)).flatten(2)  # [1, 5, N]
        xy = flat[:, :2].transpose(1, 2) * 4.0
        wh = torch.sigmoid(flat[:, 2:4]).transpose(1, 2) * 8.0
        boxes = torch.cat([xy, xy + wh], dim=-1)  # [1, N, 4]
        scores = torch.sigmoid(flat[:, 4:])  # [1, 1, N]
        selected = _NMS3.apply(boxes, scores)  # [K, 3]
        return boxes[0].index_select(0, selected[:, 2]), selected


class GridSampler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(
            self.conv(x), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )


class DynamicNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        return torch.relu(self.conv2(y)) + x.mean(dim=1, keepdim=True)


class ResidualBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) + x


class BlockNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.block1 = ResidualBlock()
        self.block2 = ResidualBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(self.stem(x)))


def export(name: str, out_dir: Path) -> Path:
    """Export one situation to ``out_dir/<name>.onnx`` and return the path."""
    torch.manual_seed(0)
    path = out_dir / f"{name}.onnx"
    if name == "opset20_dynamo":
        torch.onnx.export(
            GeluBlock().eval(),
            (torch.randn(1, 3, 16, 16),),
            str(path),
            dynamo=True,
            opset_version=20,
            input_names=["x"],
        )
    elif name == "float64_math":
        torch.onnx.export(
            Float64Math().eval(),
            (torch.rand(1, 3, 16, 16),),
            str(path),
            dynamo=True,
            opset_version=18,
            input_names=["x"],
        )
    elif name == "nms_detector":
        torch.onnx.export(
            NmsDetector().eval(),
            (torch.rand(1, 3, 16, 16),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["boxes", "selected"],
        )
    elif name == "gridsample":
        grid = torch.rand(1, 6, 6, 2) * 2 - 1
        torch.onnx.export(
            GridSampler().eval(),
            (torch.rand(1, 3, 8, 8), grid),
            str(path),
            dynamo=True,
            opset_version=18,
            input_names=["x", "grid"],
        )
    elif name == "dynamic_dims":
        batch, height, width = (
            torch.export.Dim("batch", max=64),
            torch.export.Dim("height", min=2, max=512),
            torch.export.Dim("width", min=2, max=512),
        )
        torch.onnx.export(
            DynamicNet().eval(),
            (torch.rand(2, 3, 16, 16),),
            str(path),
            dynamo=True,
            opset_version=18,
            input_names=["x"],
            dynamic_shapes={"x": {0: batch, 2: 2 * height, 3: 2 * width}},
        )
    elif name == "functions_legacy":
        torch.onnx.export(
            BlockNet().eval(),
            (torch.rand(1, 3, 8, 8),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            export_modules_as_functions={ResidualBlock},
        )
    else:
        raise SystemExit(f"unknown situation {name!r}; choose from {', '.join(EXPECTED)}")
    return path


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in argv[1:] or list(EXPECTED):
        print(f"wrote {export(name, out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
