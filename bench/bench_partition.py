"""Benchmark: extract/split scaling with graph size, and layerwise comparison memory.

1. Scaling: a chain of N nodes with side branches and a NonZero post-processing at the end;
   times ``extract`` (index, slice, clone) and the automatic split boundary at N = 10k … 160k, and
   onnx.utils.extract_model (the peer, which needs files and whole-model shape inference) up to 40k.
   Linear algorithms keep the time per node flat.
2. Streaming: ``compare_layerwise`` on a model whose 64 intermediates are 4 MiB each, with chunk
   budgets of 16 and 64 MiB and an unlimited one; wall time and peak RSS of a child process.
3. ``--big``: extract a 2.2 GiB slice from a model with external weights (sparse file) in a child
   process, and the same with onnx.utils.extract_model; wall time and peak RSS.

    python bench/bench_partition.py [--big] [--workdir /tmp/surgery-bench-partition]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure, row


def chain_model(n: int) -> onnx.ModelProto:
    nodes = []
    for i in range(n):
        op = ("Relu", "Neg", "Abs", "Sigmoid")[i % 4]
        nodes.append(h.make_node(op, [f"t{i}"], [f"t{i + 1}"], name=f"/n{i}/{op}"))
        if i % 10 == 5:  # a side branch joining back two steps later
            nodes.append(h.make_node("Identity", [f"t{i}"], [f"s{i}"], name=f"/n{i}/Side"))
    for i in range(n):
        if i % 10 == 7:
            nodes.append(h.make_node("Add", [f"t{i}", f"s{i - 2}"], [f"a{i}"], name=f"/n{i}/Join"))
    nodes += [
        h.make_node("Greater", [f"t{n}", "zero"], ["mask"], name="/post/Greater"),
        h.make_node("NonZero", ["mask"], ["nz"], name="/post/NonZero"),
    ]
    graph = h.make_graph(
        nodes,
        "chain",
        [h.make_tensor_value_info("t0", T.FLOAT, [1, 8])],
        [h.make_tensor_value_info("nz", T.INT64, [2, "k"])],
        [onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def scaling(workdir: Path) -> None:
    from surgery.analysis.cuts import postprocess_boundary
    from surgery.partition import extract

    print("extract / split boundary time against graph size (time per node should stay flat)")
    print(
        f"{'nodes':>8} {'extract':>10} {'per node':>10} {'boundary':>10} {'onnx.utils.extract_model':>26}"
    )
    for n in (10_000, 40_000, 160_000):
        proto = chain_model(n)
        model = ir.from_proto(proto)
        nodes = len(model.graph)
        t0 = time.perf_counter()
        part = extract(model, [f"t{n // 10}"], [f"t{n - n // 10}"])
        t_extract = time.perf_counter() - t0
        t0 = time.perf_counter()
        cut = postprocess_boundary(model.graph)
        t_boundary = time.perf_counter() - t0
        assert cut.names == ["mask"] and len(part.graph) > 0
        peer = "-"
        if n <= 40_000:
            src = workdir / f"chain{n}.onnx"
            onnx.save(proto, src)
            t0 = time.perf_counter()
            onnx.utils.extract_model(
                str(src), str(workdir / f"chain{n}_part.onnx"), [f"t{n // 10}"], [f"t{n - n // 10}"]
            )
            peer = f"{time.perf_counter() - t0:.2f} s"
        print(
            f"{nodes:>8} {t_extract:>8.2f} s {t_extract / nodes * 1e6:>7.1f} µs {t_boundary:>8.2f} s {peer:>26}"
        )


_STREAM_CHILD = """
import sys, numpy as np, onnx, onnx_ir as ir
from onnx import TensorProto as T, helper as h
from surgery.pass_base import Tolerance
from surgery.verify.layerwise import compare_layerwise
width, budget = 1 << 20, int(sys.argv[1])
nodes = [h.make_node(("Relu", "Neg")[i % 2], [f"t{i}"], [f"t{i + 1}"], name=f"n{i}") for i in range(64)]
graph = h.make_graph(nodes, "wide", [h.make_tensor_value_info("t0", T.FLOAT, [1, width])],
                     [h.make_tensor_value_info("t64", T.FLOAT, [1, width])])
proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
proto.ir_version = 9
proto = onnx.shape_inference.infer_shapes(proto)
feeds = {"t0": np.random.default_rng(0).standard_normal((1, width)).astype(np.float32)}
report = compare_layerwise(ir.from_proto(proto), ir.from_proto(proto), feeds, Tolerance(1e-4, 1e-5), budget_bytes=budget)
assert report.ok and len(report.compared) == 64
print(report.runs, file=sys.stderr)
"""


def streaming() -> None:
    print(
        "\nlayerwise comparison of 64 intermediates x 4 MiB (both models: 512 MiB of tensors), in a child process"
    )
    for label, budget in (
        ("chunk budget 16 MiB", 16 << 20),
        ("chunk budget 64 MiB", 64 << 20),
        ("no budget (one run)", 1 << 40),
    ):
        seconds, rss, code = measure([sys.executable, "-c", _STREAM_CHILD, str(budget)])
        print(row(f"  {label}", seconds, rss, code))


_BIG_CHILD = """
import sys, onnx
from surgery import model_io
from surgery.partition import extract
src, dst, tool = sys.argv[1:4]
if tool == "surgery":
    model_io.save(extract(model_io.load(src), ["x_scaled"], ["y"]), dst)
else:
    onnx.utils.extract_model(src, dst, ["x_scaled"], ["y"])
"""


def big(workdir: Path) -> None:
    rows, cols, n = 256, 560 * 1024 * 1024 // (4 * 256), 4
    src = workdir / "big.onnx"
    size = rows * cols * 4
    if not src.exists():
        inits = []
        for i in range(n):
            t = onnx.TensorProto(
                name=f"W{i}", data_type=T.FLOAT, dims=[rows, cols], data_location=T.EXTERNAL
            )
            for key, value in (
                ("location", "big.onnx.data"),
                ("offset", str(i * size)),
                ("length", str(size)),
            ):
                e = t.external_data.add()
                e.key, e.value = key, value
            inits.append(t)
        inits.append(onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two"))
        nodes = [h.make_node("Mul", ["inp", "two"], ["x_scaled"], name="pre")]
        nodes += [
            h.make_node("MatMul", ["x_scaled", f"W{i}"], [f"m{i}"], name=f"mm{i}") for i in range(n)
        ]
        nodes += [
            h.make_node("Sum", [f"m{i}" for i in range(n)], ["y"], name="sum"),
            h.make_node("ReduceMax", ["y"], ["out"], name="max", keepdims=0, axes=[1]),
        ]
        graph = h.make_graph(
            nodes,
            "big",
            [h.make_tensor_value_info("inp", T.FLOAT, [1, rows])],
            [h.make_tensor_value_info("out", T.FLOAT, [1])],
            inits,
        )
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
        model.ir_version = 9
        onnx.save(model, src)
        with open(workdir / "big.onnx.data", "wb") as f:
            f.truncate(size * n)
    print(f"\nextract a {n * size / 2**30:.2f} GiB slice (x_scaled → y) in a child process")
    for tool in ("surgery", "onnx"):
        seconds, rss, code = measure(
            [sys.executable, "-c", _BIG_CHILD, str(src), str(workdir / f"slice_{tool}.onnx"), tool]
        )
        print(
            row(
                f"  {'surgery.partition.extract + save' if tool == 'surgery' else 'onnx.utils.extract_model'}",
                seconds,
                rss,
                code,
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--big",
        action="store_true",
        help="also extract a 2.2 GiB slice (writes ~4.5 GB to --workdir)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="surgery-bench-partition-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scaling(workdir)
    streaming()
    if args.big:
        big(workdir)


if __name__ == "__main__":
    main()
