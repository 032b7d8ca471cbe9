"""Export a small pre-norm transformer block whose float16 run overflows, and inputs that show it.

The block is what decoder LLMs and ViTs write by hand: RMSNorm spelled out (``x.pow(2).mean(-1)``),
single-head attention with the 1/sqrt(d) scale applied *after* ``q @ k^T``, and a residual add. The
hidden states carry a few outlier features (|x| ~ 400, as real residual streams do), and the query
and key projections are large (attention-logit growth): in float32 everything is fine; in float16
``x**2`` passes 65504 in the norm, and the unscaled logits pass it in the attention.

Run: ``python export.py [FOLDER]`` writes ``block.onnx`` and ``hidden.npz`` (default: the current folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

D, T = 64, 16


class RMSNorm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Linear(D, D, bias=False)
        self.k = torch.nn.Linear(D, D, bias=False)
        self.v = torch.nn.Linear(D, D, bias=False)
        self.o = torch.nn.Linear(D, D, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(h), self.k(h), self.v(h)
        logits = q @ k.transpose(-1, -2) / (D**0.5)
        return self.o(torch.softmax(logits, dim=-1) @ v)


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = RMSNorm()
        self.attn = Attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


def build() -> tuple[torch.nn.Module, np.ndarray]:
    torch.manual_seed(0)
    block = Block().eval()
    with torch.no_grad():  # attention-logit growth: q and k projections with large weights
        block.attn.q.weight.mul_(120.0)
        block.attn.k.weight.mul_(120.0)
    rng = np.random.default_rng(0)
    hidden = rng.normal(0.0, 30.0, (1, T, D)).astype(np.float32)
    hidden[..., 3] = 400.0  # outlier features
    hidden[..., 17] = -380.0
    return block, hidden


def main(folder: str = ".") -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    block, hidden = build()
    torch.onnx.export(
        block,
        (torch.from_numpy(hidden),),
        str(out / "block.onnx"),
        input_names=["hidden"],
        output_names=["out"],
        opset_version=17,
        dynamo=False,
    )
    np.savez(out / "hidden.npz", hidden=hidden)
    print(f"wrote {out / 'block.onnx'} and {out / 'hidden.npz'}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
