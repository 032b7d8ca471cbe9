"""Export a tiny transformer block the way torch 2.13's dynamo exporter writes it at opset 23.

``torch.onnx.export(..., dynamo=True, opset_version=23)`` maps modern torch ops onto the ONNX ops
that appeared at opsets 20–23, none of which ATC (ai.onnx opset ≤ 18) parses:

- ``nn.RMSNorm`` → ``RMSNormalization`` (opset 23);
- ``F.scaled_dot_product_attention(..., is_causal=True)`` → ``Attention`` (opset 23), 4-D Q/K/V;
- ``nn.GELU(approximate="tanh")`` → ``Gelu`` (opset 20; ATC registers no Gelu at all);
- float64 post-processing (``logits.double() / temperature``, log-softmax, back to float) stays
  float64 (ATC has no float64 AI Core kernels);
- a Dropout left in training mode is kept as ``Dropout`` with a constant true ``training_mode``.

Everything else (MatMul/Add for Linear, Split, Reshape with ``allowzero=1``, Transpose) is plain
arithmetic, but at opset 23, so ATC's ``ai.onnx::23::<op>`` look-ups fail too (E19010). The
dynamo exporter writes no model-local functions at this opset. Input shapes are static
(batch 1, 8 tokens, width 32) and the weights are stored inline.

Usage: ``python export.py OUT.onnx``
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DIM, HEADS, SEQ, VOCAB = 32, 4, 8, 16


class Block(nn.Module):
    """A pre-norm transformer block (causal self-attention + GELU MLP) with a language-model head."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(DIM)
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)
        self.norm2 = nn.RMSNorm(DIM)
        self.fc1 = nn.Linear(DIM, 4 * DIM)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(4 * DIM, DIM)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(DIM, VOCAB)
        self.register_buffer("temperature", torch.tensor(0.7, dtype=torch.float64))
        with (
            torch.no_grad()
        ):  # trained-looking norm scales (ones would be folded into one initializer)
            self.norm1.weight.uniform_(0.5, 1.5)
            self.norm2.weight.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, HEADS, d // HEADS).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        x = x + self.drop(self.fc2(self.act(self.fc1(self.norm2(x)))))
        logits = self.head(x)
        # float64 post-processing, as sampling code often does it
        return torch.log_softmax(logits.double() / self.temperature, dim=-1).float()


def build() -> tuple[Block, torch.Tensor]:
    """The block as it is exported (its Dropout in training mode) and an example input."""
    torch.manual_seed(0)
    block = Block().eval()
    block.drop.train()  # a Dropout left in training mode, as happens in the field
    return block, torch.randn(1, SEQ, DIM)


def export(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    block, x = build()
    logging.getLogger("torch.onnx").setLevel(
        logging.ERROR
    )  # "torchvision is not installed" notices
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            block,
            (x,),
            path,
            dynamo=True,
            opset_version=23,
            external_data=False,
            input_names=["x"],
            output_names=["logprobs"],
            verbose=False,
        )


if __name__ == "__main__":
    export(sys.argv[1] if len(sys.argv) > 1 else "model.onnx")
