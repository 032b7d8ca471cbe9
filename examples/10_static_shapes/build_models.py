"""Build the four kinds of dynamic models ``make-static`` is meant for, tiny but structurally real.

- ``yolo``: a YOLOv8-style detector in plain torch (strided convs, a C2f-like block, SPPF, an FPN
  that resizes to the lateral feature's runtime size, a head that builds anchors from the feature
  maps' runtime shapes), exported by torch's dynamo exporter with symbolic ``height``/``width``:
  the exporter writes output dims as expressions of ``height`` and ``width``.
- ``transformer_legacy`` / ``transformer_dynamo``: an attention block whose head split and merge
  read ``x.shape`` (Shape → Gather → Unsqueeze → Concat → Reshape in the legacy export).
- ``paddle``: a graph written the way Paddle2ONNX writes one (onnx.helper): ``-1``/``?`` input
  dims, every shape, axis and index a ``Constant`` node (hundreds of them), Shape → Slice → Concat
  → Reshape chains.
- ``vad``: a voice-activity model in the style of Silero VAD (onnx.helper): a scalar int64 sample
  rate ``sr``, nested ``If``s whose conditions derive from ``sr`` and from the input's length,
  multi-output branches that read outer-scope values, and an untaken branch that stops
  type-checking once the input length is fixed.

Run ``python build_models.py OUT_DIR [--torch]`` to write them as ``OUT_DIR/<name>.onnx`` (the
torch exports only with ``--torch``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

IR_VERSION = 9

# ---------------------------------------------------------------------------------------- torch


def _torch_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ConvAct(nn.Module):
        def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, s, k // 2)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.conv(x))

    class C2f(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.cv1 = ConvAct(c, c, 1)
            self.m = ConvAct(c // 2, c // 2, 3)
            self.cv2 = ConvAct(c + c // 2, c, 1)

        def forward(self, x):
            a, b = self.cv1(x).chunk(2, 1)
            return self.cv2(torch.cat([a, b, self.m(b)], 1))

    class SPPF(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.cv1 = ConvAct(c, c // 2, 1)
            self.pool = nn.MaxPool2d(5, 1, 2)
            self.cv2 = ConvAct(c * 2, c, 1)

        def forward(self, x):
            x = self.cv1(x)
            y1 = self.pool(x)
            y2 = self.pool(y1)
            return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))

    class TinyYolo(nn.Module):
        """Backbone strides 8/16/32, FPN by resize-to-lateral-size, anchor-based decode."""

        def __init__(self, nc: int = 2) -> None:
            super().__init__()
            self.nc = nc
            self.stem = nn.Sequential(
                ConvAct(3, 8, 3, 2), ConvAct(8, 8, 3, 2), C2f(8), ConvAct(8, 16, 3, 2)
            )
            self.down4 = ConvAct(16, 16, 3, 2)
            self.down5 = nn.Sequential(ConvAct(16, 16, 3, 2), SPPF(16))
            self.lat4 = ConvAct(32, 16, 1)
            self.lat3 = ConvAct(32, 16, 1)
            self.box = nn.ModuleList(nn.Conv2d(16, 4, 1) for _ in range(3))
            self.cls = nn.ModuleList(nn.Conv2d(16, nc, 1) for _ in range(3))
            self.strides = (8, 16, 32)

        def forward(self, images):
            p3 = self.stem(images)
            p4 = self.down4(p3)
            p5 = self.down5(p4)
            n4 = self.lat4(
                torch.cat([p4, F.interpolate(p5, size=p4.shape[-2:], mode="nearest")], 1)
            )
            n3 = self.lat3(
                torch.cat([p3, F.interpolate(n4, size=p3.shape[-2:], mode="nearest")], 1)
            )
            boxes, scores = [], []
            for i, feat in enumerate((n3, n4, p5)):
                b, _, hh, ww = feat.shape
                sx = torch.arange(ww, dtype=torch.float32) + 0.5
                sy = torch.arange(hh, dtype=torch.float32) + 0.5
                gy, gx = torch.meshgrid(sy, sx, indexing="ij")
                anchors = torch.stack((gx, gy), 0).reshape(1, 2, -1)
                box = self.box[i](feat).reshape(b, 4, -1)
                xy = (box[:, :2] + anchors) * self.strides[i]
                wh = box[:, 2:].exp() * self.strides[i]
                boxes.append(torch.cat([xy, wh], 1))
                scores.append(self.cls[i](feat).reshape(b, self.nc, -1).sigmoid())
            return torch.cat([torch.cat(boxes, 2), torch.cat(scores, 2)], 1)

    class Attention(nn.Module):
        """Multi-head self-attention whose head split reads the runtime batch and sequence sizes."""

        def __init__(self, dim: int = 16, heads: int = 2) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm = nn.LayerNorm(dim)

        def forward(self, x):
            b, s, d = x.shape
            qkv = (
                self.qkv(self.norm(x))
                .reshape(b, s, 3, self.heads, d // self.heads)
                .permute(2, 0, 3, 1, 4)
            )
            q, k, v = qkv[0], qkv[1], qkv[2]
            att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
            y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d)
            return x + self.proj(y)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.att1 = Attention()
            self.att2 = Attention()
            self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))

        def forward(self, x):
            x = self.att2(self.att1(x))
            return x + self.mlp(x)

    return TinyYolo, Block


def _export(
    module, args, path: Path, *, dynamo: bool, input_names, output_names, dynamic
) -> onnx.ModelProto:
    import torch

    module.eval()
    if dynamo:
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            dynamic_shapes=dynamic["dynamo"],
            input_names=input_names,
            output_names=output_names,
            verbose=False,
        )
        program.save(str(path))
    else:
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic["legacy"],
            opset_version=17,
        )
    return onnx.load(str(path))


def yolo(path: Path) -> onnx.ModelProto:
    """A YOLOv8-style detector exported by dynamo with symbolic height and width."""
    import torch
    from torch.export import Dim

    TinyYolo, _ = _torch_modules()
    torch.manual_seed(0)
    images = torch.rand(1, 3, 96, 128)
    dynamic = {
        "dynamo": {
            "images": {2: Dim("height", min=64, max=1024), 3: Dim("width", min=64, max=1024)}
        }
    }
    with torch.no_grad():
        return _export(
            TinyYolo(),
            (images,),
            path,
            dynamo=True,
            input_names=["images"],
            output_names=["preds"],
            dynamic=dynamic,
        )


def transformer(path: Path, *, dynamo: bool) -> onnx.ModelProto:
    """Two attention layers and an MLP, dynamic batch and sequence."""
    import torch
    from torch.export import Dim

    _, Block = _torch_modules()
    torch.manual_seed(0)
    x = torch.rand(2, 8, 16)
    dynamic = {
        "dynamo": {"x": {0: Dim("batch", min=1, max=64), 1: Dim("seq", min=2, max=512)}},
        "legacy": {"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}},
    }
    with torch.no_grad():
        return _export(
            Block(),
            (x,),
            path,
            dynamo=dynamo,
            input_names=["x"],
            output_names=["y"],
            dynamic=dynamic,
        )


# ---------------------------------------------------------------------------------------- helper


class _Builder:
    """Collects nodes the way Paddle2ONNX emits them: every constant a ``Constant`` node."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}_{self.n}"

    def const(self, array) -> str:
        out = self.name("Constant") + ".tmp_0"
        self.nodes.append(
            h.make_node(
                "Constant",
                [],
                [out],
                name=out.replace(".tmp_0", ""),
                value=numpy_helper.from_array(np.asarray(array)),
            )
        )
        return out

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower()) + ".tmp_0"
        self.nodes.append(
            h.make_node(op_type, inputs, [out], name=out.replace(".tmp_0", ""), **attrs)
        )
        return out

    def weight(self, array: np.ndarray) -> str:
        name = self.name("param")
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name


def paddle(blocks: int = 40) -> onnx.ModelProto:
    """A Paddle2ONNX-style conv net: ``[-1, 3, ?, ?]`` input, ``Constant`` nodes for every shape."""
    rng = np.random.default_rng(0)
    b = _Builder()
    x = "x"
    c = 4
    x = b.op("Conv", [x, b.weight(rng.standard_normal((c, 3, 3, 3)) * 0.2)], pads=[1, 1, 1, 1])
    for _ in range(blocks):
        y = b.op("Conv", [x, b.weight(rng.standard_normal((c, c, 3, 3)) * 0.2)], pads=[1, 1, 1, 1])
        shape = b.op("Shape", [y])
        n = b.op("Slice", [shape, b.const([0]), b.const([1]), b.const([0])])
        hw = b.op("Slice", [shape, b.const([2]), b.const([4]), b.const([0])])
        hw32 = b.op("Cast", [hw], to=T.INT32)
        area = b.op("ReduceProd", [hw32], keepdims=1)
        area64 = b.op("Cast", [area], to=T.INT64)
        flat_shape = b.op("Concat", [n, b.const([c]), area64], axis=0)
        flat = b.op("Reshape", [y, flat_shape])
        scaled = b.op("Mul", [flat, b.const(np.float32(0.5))])
        act = b.op("Relu", [scaled])
        back = b.op("Reshape", [act, b.op("Shape", [y])])
        x = b.op("Add", [x, back])
    final = b.op("Shape", [x])
    batch = b.op(
        "Squeeze", [b.op("Slice", [final, b.const([0]), b.const([1]), b.const([0])]), b.const([0])]
    )
    out_shape = b.op("Concat", [b.op("Unsqueeze", [batch, b.const([0])]), b.const([-1])], axis=0)
    b.nodes.append(
        h.make_node(
            "Reshape", [x, out_shape], ["save_infer_model/scale_0.tmp_0"], name="reshape_out"
        )
    )
    graph = h.make_graph(
        b.nodes,
        "paddle_like",
        [h.make_tensor_value_info("x", T.FLOAT, [-1, 3, "?", "?"])],
        [h.make_tensor_value_info("save_infer_model/scale_0.tmp_0", T.FLOAT, [-1, -1])],
        b.inits,
    )
    model = h.make_model(
        graph, opset_imports=[h.make_opsetid("", 13)], producer_name="PaddlePaddle"
    )
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    return model


def vad(samples: str | int = "samples") -> onnx.ModelProto:
    """A Silero-VAD-style model: scalar int64 ``sr``, nested shape/sr-dependent Ifs, a state."""
    rng = np.random.default_rng(1)
    w512 = numpy_helper.from_array(
        (rng.standard_normal((64, 8)) * 0.1).astype(np.float32), "w_chunk"
    )
    w256 = numpy_helper.from_array(
        (rng.standard_normal((256, 8)) * 0.1).astype(np.float32), "w_short"
    )
    w_state = numpy_helper.from_array(
        (rng.standard_normal((16, 16)) * 0.1).astype(np.float32), "w_state"
    )

    def vi(name, dtype, shape):
        return h.make_tensor_value_info(name, dtype, shape)

    # 16 kHz, 512 samples: reshape into 8 chunks of 64, project, state update reads outer `state`
    long_branch = h.make_graph(
        [
            h.make_node("Reshape", ["input", "chunk_shape"], ["chunks"], name="l/reshape"),
            h.make_node("MatMul", ["chunks", "w_chunk"], ["proj"], name="l/matmul"),
            h.make_node("ReduceMean", ["proj"], ["feat"], axes=[1], keepdims=0, name="l/mean"),
            h.make_node("Sigmoid", ["feat"], ["prob_l"], name="l/sigmoid"),
            h.make_node("MatMul", ["state", "w_state"], ["st_mm"], name="l/state_mm"),
            h.make_node("Tanh", ["st_mm"], ["state_l"], name="l/state_tanh"),
        ],
        "long_chunk",
        [],
        [vi("prob_l", T.FLOAT, None), vi("state_l", T.FLOAT, None)],
        [
            numpy_helper.from_array(np.array([-1, 8, 64], dtype=np.int64), "chunk_shape")
        ],  # a branch initializer
    )
    # 16 kHz, any other length: only valid for exactly 256 samples (no longer type-checks at 512)
    short_branch = h.make_graph(
        [
            h.make_node(
                "Constant",
                [],
                ["short_shape"],
                name="s/shape",
                value=numpy_helper.from_array(np.array([1, 256], dtype=np.int64)),
            ),
            h.make_node(
                "Add", ["input", "short_bias"], ["biased"], name="s/bias"
            ),  # [batch, 256] only
            h.make_node("Reshape", ["biased", "short_shape"], ["flat"], name="s/reshape"),
            h.make_node("MatMul", ["flat", "w_short"], ["mm"], name="s/matmul"),
            h.make_node("Sigmoid", ["mm"], ["prob_s"], name="s/sigmoid"),
            h.make_node(
                "Identity", ["state"], ["state_s"], name="s/state"
            ),  # the outer state, unchanged
        ],
        "short_chunk",
        [],
        [vi("prob_s", T.FLOAT, None), vi("state_s", T.FLOAT, None)],
        [numpy_helper.from_array(np.full((1, 256), 0.01, np.float32), "short_bias")],
    )
    sr16_branch = h.make_graph(
        [
            h.make_node("Equal", ["n_samples", "c512"], ["is_long"], name="sr16/is_long"),
            h.make_node(
                "If",
                ["is_long"],
                ["prob16", "state16"],
                name="sr16/if_len",
                then_branch=long_branch,
                else_branch=short_branch,
            ),
        ],
        "sr16",
        [],
        [vi("prob16", T.FLOAT, None), vi("state16", T.FLOAT, None)],
    )
    # 8 kHz: decimate by 2, then the short path; else (unsupported rate): zeros and the old state
    sr8_ok = h.make_graph(
        [
            h.make_node(
                "Slice", ["input", "z1", "big1", "one1", "two1"], ["dec"], name="sr8/decimate"
            ),
            h.make_node("ReduceMean", ["dec"], ["m8"], axes=[1], keepdims=1, name="sr8/mean"),
            h.make_node("Sigmoid", ["m8"], ["p8"], name="sr8/sigmoid"),
            h.make_node("Expand", ["p8", "prob_shape8"], ["prob8"], name="sr8/expand"),
            h.make_node("Neg", ["state"], ["state8"], name="sr8/state"),
        ],
        "sr8_ok",
        [],
        [vi("prob8", T.FLOAT, None), vi("state8", T.FLOAT, None)],
    )
    sr_bad = h.make_graph(
        [
            h.make_node(
                "ConstantOfShape",
                ["prob_shape8"],
                ["zeros"],
                name="bad/zeros",
                value=numpy_helper.from_array(np.zeros(1, np.float32)),
            ),
            h.make_node("Identity", ["state"], ["state_b"], name="bad/state"),
        ],
        "sr_bad",
        [],
        [vi("zeros", T.FLOAT, None), vi("state_b", T.FLOAT, None)],
    )
    other_branch = h.make_graph(
        [
            h.make_node("Equal", ["sr", "c8000"], ["is8"], name="other/is8"),
            h.make_node(
                "If",
                ["is8"],
                ["prob_o", "state_o"],
                name="other/if8",
                then_branch=sr8_ok,
                else_branch=sr_bad,
            ),
        ],
        "other_rate",
        [],
        [vi("prob_o", T.FLOAT, None), vi("state_o", T.FLOAT, None)],
    )
    nodes = [
        h.make_node("Shape", ["input"], ["in_shape"], name="shape"),
        h.make_node("Gather", ["in_shape", "one"], ["n_samples"], axis=0, name="n_samples"),
        h.make_node("Gather", ["in_shape", "zero"], ["batch"], axis=0, name="batch"),
        h.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"], name="batch1"),
        h.make_node("Concat", ["batch1", "c8_1"], ["prob_shape8"], axis=0, name="prob_shape8"),
        h.make_node("Equal", ["sr", "c16000"], ["is16"], name="is16"),
        h.make_node(
            "If",
            ["is16"],
            ["prob", "new_state"],
            name="if_sr",
            then_branch=sr16_branch,
            else_branch=other_branch,
        ),
    ]
    consts = {
        "one": np.array(1, np.int64),
        "zero": np.array(0, np.int64),
        "axes0": np.array([0], np.int64),
        "c8_1": np.array([8], np.int64),
        "c16000": np.array(16000, np.int64),
        "c8000": np.array(8000, np.int64),
        "c512": np.array(512, np.int64),
        "z1": np.array([0], np.int64),
        "big1": np.array([1 << 30], np.int64),
        "one1": np.array([1], np.int64),
        "two1": np.array([2], np.int64),
    }
    graph = h.make_graph(
        nodes,
        "vad",
        [
            vi("input", T.FLOAT, ["batch", samples]),
            vi("sr", T.INT64, []),
            vi("state", T.FLOAT, [2, "batch", 16]),
        ],
        [vi("prob", T.FLOAT, ["batch", "prob_len"]), vi("new_state", T.FLOAT, [2, "batch", 16])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()] + [w512, w256, w_state],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 16)], producer_name="vad-like")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str]) -> None:
    """``build_models.py OUT_DIR [--torch]``: the helper-built models, and the torch exports with --torch."""
    out = (
        Path(argv[0]) if argv and not argv[0].startswith("-") else Path(__file__).parent / "models"
    )
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(paddle(), out / "paddle.onnx")
    onnx.save(vad(), out / "vad.onnx")
    if "--torch" in argv:
        yolo(out / "yolo.onnx")
        transformer(out / "transformer_legacy.onnx", dynamo=False)
        transformer(out / "transformer_dynamo.onnx", dynamo=True)
    for p in sorted(out.glob("*.onnx")):
        print(p)


if __name__ == "__main__":
    main(sys.argv[1:])
