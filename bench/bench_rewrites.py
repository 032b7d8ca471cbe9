"""Time the issue-4 rewrite passes on long opset-20 float64 chains (should grow linearly).

Each block is Gelu → Mul(const) → ReduceMean(axes input, keepdims) → Add → Dropout-free, and every
fourth block goes through a model-local function, so all of decompose-gelu, narrow-float64,
convert-opset (20 → 18: ReduceMean's axes input becomes an attribute) and inline-functions have
work proportional to the size. Prints nodes before/after and seconds per pass.

Usage: ``python bench/bench_rewrites.py [blocks ...]`` (default: 1000 4000)
"""

from __future__ import annotations

import sys
import time

import numpy as np
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from surgery.passes.convert_opset import ConvertOpset
from surgery.passes.decompose_gelu import DecomposeGelu
from surgery.passes.inline_functions import InlineFunctions
from surgery.passes.narrow_float64 import NarrowFloat64


def build(blocks: int) -> ir.Model:
    fn = h.make_function(
        "lib",
        "Act",
        ["a"],
        ["b"],
        [h.make_node("Gelu", ["a"], ["b"], name="gelu")],
        opset_imports=[h.make_opsetid("", 20)],
    )
    nodes, inits = [], {"axes": np.array([-1], np.int64), "k": np.array(0.5, np.float64)}
    prev = "x"
    for i in range(blocks):
        if i % 4 == 0:
            nodes.append(h.make_node("Act", [prev], [f"g{i}"], domain="lib", name=f"/b{i}/act"))
        else:
            nodes.append(h.make_node("Gelu", [prev], [f"g{i}"], name=f"/b{i}/gelu"))
        nodes.append(h.make_node("Mul", [f"g{i}", "k"], [f"m{i}"], name=f"/b{i}/mul"))
        nodes.append(
            h.make_node("ReduceMean", [f"m{i}", "axes"], [f"r{i}"], keepdims=1, name=f"/b{i}/mean")
        )
        nodes.append(h.make_node("Add", [f"m{i}", f"r{i}"], [f"y{i}"], name=f"/b{i}/add"))
        prev = f"y{i}"
    graph = h.make_graph(
        nodes,
        "chain",
        [h.make_tensor_value_info("x", T.DOUBLE, [1, 16])],
        [h.make_tensor_value_info(prev, T.DOUBLE, [1, 16])],
        [
            h.make_tensor(
                k, T.DOUBLE if v.dtype == np.float64 else T.INT64, v.shape, v.flatten().tolist()
            )
            for k, v in inits.items()
        ],
    )
    proto = h.make_model(
        graph, opset_imports=[h.make_opsetid("", 20), h.make_opsetid("lib", 1)], functions=[fn]
    )
    proto.ir_version = 9
    return ir.from_proto(proto)


def main(sizes: list[int]) -> None:
    print(f"{'blocks':>7} {'nodes in':>9} {'pass':<18} {'seconds':>8} {'nodes out':>9}")
    for blocks in sizes:
        model = build(blocks)
        n_in = len(model.graph)
        for p in (InlineFunctions(), DecomposeGelu(), NarrowFloat64(), ConvertOpset(target=18)):
            start = time.perf_counter()
            p(model)
            seconds = time.perf_counter() - start
            print(f"{blocks:>7} {n_in:>9} {p.name:<18} {seconds:>8.2f} {len(model.graph):>9}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 4000])
