"""Export a small torch 2.13 model that hits the ATC rewrites' field situations.

One network, exported with the TorchScript exporter at opset 20 with its modules as functions:

- model-local functions in domains ``__main__`` and ``torch.nn.modules.*`` (ATC: E16005);
- opset 20, so even Conv fails ATC's ``ai.onnx::20::Conv`` look-up (E19010);
- ``Gelu`` ops (opset 20; ATC registers no Gelu at all);
- ``F.grid_sample`` (GridSample runs on AICPU only);
- ``nn.MaxPool2d(return_indices=True)`` (MaxPoolWithArgmax fails on some CANN versions);
- float64 post-processing (ATC has no float64 AI Core kernels);
- a Dropout exported in training mode.

Usage: ``python export.py OUT.onnx``
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F


class Head(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)
        self.act = torch.nn.GELU(approximate="tanh")
        self.drop = torch.nn.Dropout(0.1)

    def forward(self, x):
        return self.drop(self.act(self.fc(x)))


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.act = torch.nn.GELU()
        self.pool = torch.nn.MaxPool2d(2, return_indices=True)
        self.head = Head()
        self.register_buffer("scale", torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64))

    def forward(self, image, grid):
        y = self.act(self.conv(image))
        y = F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=False)
        y, _ = self.pool(y)
        logits = self.head(y.mean(dim=(2, 3)))
        return torch.softmax(logits.double() * self.scale, dim=-1)  # float64 post-processing


def export(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = Net().eval()
    net.head.drop.train()  # a Dropout left in training mode, as happens in the field
    image = torch.rand(1, 3, 16, 16)
    grid = torch.rand(1, 8, 8, 2) * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (image, grid),
            path,
            dynamo=False,
            opset_version=20,
            export_modules_as_functions=True,
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False,
            input_names=["image", "grid"],
            output_names=["probs"],
        )


if __name__ == "__main__":
    export(sys.argv[1] if len(sys.argv) > 1 else "model.onnx")
