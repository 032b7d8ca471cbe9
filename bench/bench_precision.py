"""`surgery precision` cost: wall time and peak RSS of the node-by-node float16 emulation.

    python bench/bench_precision.py [--layers 2,4,8] [--width 256] [--keep DIR]

Each model is a torch ``nn.TransformerEncoder`` (random weights, legacy exporter, opset 17, batch 1,
sequence 64) with ``--layers`` layers. Per model it prints the node count, then `surgery precision`
(fresh process, 2 generated samples, plan included) beside one ORT session + run of the same file
as a floor. The emulation builds one single-node session per node (once) and runs every node twice
per sample, so it is linear in nodes and samples; peak memory is the live frontier of both runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure, row


def export(path: Path, layers: int, width: int) -> int:
    import torch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        width, nhead=4, dim_feedforward=2 * width, batch_first=True
    )
    model = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()
    torch.onnx.export(
        model,
        (torch.randn(1, 64, width),),
        str(path),
        input_names=["x"],
        opset_version=17,
        dynamo=False,
    )
    return len(onnx.load(path, load_external_data=False).graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="2,4,8")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-precision-"))
    folder.mkdir(parents=True, exist_ok=True)
    floor = (
        "import sys, numpy as np, onnxruntime as ort; s = ort.InferenceSession(sys.argv[1]); "
        f"s.run(None, {{'x': np.random.rand(1, 64, {args.width}).astype(np.float32)}})"
    )
    for layers in (int(x) for x in args.layers.split(",")):
        path = folder / f"encoder{layers}.onnx"
        nodes = export(path, layers, args.width)
        print(f"encoder, {layers} layers, width {args.width}: {nodes} nodes")
        seconds, rss, code = measure([sys.executable, "-m", "surgery", "precision", str(path)])
        verdict = {0: "float16 ok", 1: "float16 breaks, plan made"}.get(
            code, f"FAILED (exit {code})"
        )
        print(f"{row('  surgery precision (2 samples, plan)', seconds, rss, 0)}  {verdict}")
        print(
            row(
                "  onnxruntime session + 1 run (floor)",
                *measure([sys.executable, "-c", floor, str(path)]),
            )
        )


if __name__ == "__main__":
    main()
