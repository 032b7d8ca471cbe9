"""Export the two models of this example: a Focus detector stem and an STFT audio front end.

    python export.py OUT_DIR

``detector.onnx``: YOLOv5's Focus slicing, Conv+BatchNorm pairs and a hand-written dropout layer
left in training mode (the idiom users write when a compiler rejects Dropout), exported with the
TorchScript exporter without constant folding, as many real exports are. ``frontend.onnx``: a
``torch.stft`` magnitude front end (an ONNX ``STFT`` node, which ATC cannot parse).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


class DropoutLayer(torch.nn.Module):
    """Hand-written dropout: exported in training mode it is RandomUniformLike → Greater → Cast → Mul → Div."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x * (torch.rand_like(x) > self.p).float() / (1 - self.p)
        return x


class Detector(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(12, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.SiLU()
        )
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.SiLU()
        )
        self.drop = DropoutLayer(0.2)
        self.head = torch.nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        focus = torch.cat(
            [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1
        )
        return self.head(self.drop(self.body(self.stem(focus))))


class Frontend(torch.nn.Module):
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        window = torch.hann_window(64)
        spec = torch.stft(
            audio, n_fft=64, hop_length=16, window=window, center=False, return_complex=False
        )
        return spec.pow(2).sum(-1)


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    detector = Detector()
    with torch.no_grad():
        for module in detector.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    detector.train()  # the mistake this example fixes: the dropout layer is exported in training mode
    for module in detector.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()  # batch norm uses its running statistics
    torch.onnx.export(
        detector,
        (torch.randn(1, 3, 64, 64),),
        str(out / "detector.onnx"),
        dynamo=False,
        do_constant_folding=False,
        training=torch.onnx.TrainingMode.PRESERVE,
        opset_version=17,
        input_names=["images"],
        output_names=["features"],
    )
    torch.onnx.export(
        Frontend().eval(),
        (torch.randn(1, 1024),),
        str(out / "frontend.onnx"),
        dynamo=False,
        opset_version=17,
        input_names=["audio"],
        output_names=["power"],
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
