"""`surgery doctor` scaling: wall time and peak RSS on synthetic graphs of many small nodes.

    python bench/bench_doctor.py [--sizes 10000,30000,100000] [--keep DIR]

Each model is a dynamic-batch chain of small ops with the things doctor looks at (Shape→Gather→
Concat→Reshape shape arithmetic, Slices, int64 Gathers, a Resize every few hundred nodes). It
prints, per size, `surgery doctor` (fresh process, all checks) beside `onnx.load` + `onnx.checker`
on the same file as a linear-time floor. Doctor's own checks are linear; the shape-inference pass it
runs to complete missing dtypes/shapes is onnx's (linear too).

The last row is the issue-11 cycle case: doctor on a 20 000-node graph with a dependency cycle
must exit 2 in under a second (it used to hang; then it took 4.5 s, most of it importing onnx and
onnx-ir and converting the graph before the cycle check). ``--cycle-nodes 0`` skips it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure, row


def build(n_nodes: int) -> onnx.ModelProto:
    """A chain of blocks of 10 nodes each (n_nodes rounded down to a multiple of 10)."""
    nodes = []
    inits = [
        nh.from_array(np.array([0], np.int64), "i0"),
        nh.from_array(np.array([-1], np.int64), "minus1"),
        nh.from_array(np.array([0.5], np.float32), "half"),
        nh.from_array(np.array([1, 1], np.int64), "ones2"),
        nh.from_array(np.array([0, 2], np.int64), "pick"),
    ]
    cur = "x"
    for b in range(n_nodes // 10):
        p = f"b{b}"
        nodes += [
            h.make_node("Shape", [cur], [f"{p}.s"], name=f"{p}/Shape"),
            h.make_node("Gather", [f"{p}.s", "i0"], [f"{p}.n"], axis=0, name=f"{p}/Gather"),
            h.make_node("Concat", [f"{p}.n", "minus1"], [f"{p}.shape"], axis=0, name=f"{p}/Concat"),
            h.make_node("Reshape", [cur, f"{p}.shape"], [f"{p}.r"], name=f"{p}/Reshape"),
            h.make_node("Mul", [f"{p}.r", "half"], [f"{p}.m"], name=f"{p}/Mul"),
            h.make_node("Relu", [f"{p}.m"], [f"{p}.a"], name=f"{p}/Relu"),
            h.make_node("Slice", [f"{p}.a", "i0", "ones2", "i0"], [f"{p}.sl"], name=f"{p}/Slice"),
            h.make_node("Concat", [f"{p}.sl", f"{p}.a"], [f"{p}.c"], axis=0, name=f"{p}/Concat2"),
            h.make_node("Gather", [f"{p}.c", "pick"], [f"{p}.g"], axis=1, name=f"{p}/Gather2"),
            h.make_node("Neg", [f"{p}.g"], [f"{p}.out"], name=f"{p}/Neg"),
        ]
        cur = f"{p}.out"
    graph = h.make_graph(
        nodes,
        "chain",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4])],
        [h.make_tensor_value_info(cur, T.FLOAT, ["rows", "cols"])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--keep", type=Path, help="keep the generated models in this folder")
    parser.add_argument(
        "--cycle-nodes", type=int, default=20000, help="size of the cyclic graph (0: skip that row)"
    )
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_doctor_"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{'':<44} {'time':>10} {'peak RSS':>14}")
    for size in (int(s) for s in args.sizes.split(",")):
        path = folder / f"chain_{size}.onnx"
        onnx.save(build(size), path)
        floor = [
            sys.executable,
            "-c",
            f"import onnx; m = onnx.load({str(path)!r}); onnx.checker.check_model(m)",
        ]
        doctor = [
            sys.executable,
            "-m",
            "surgery",
            "doctor",
            str(path),
            "--json",
            str(folder / f"chain_{size}.json"),
        ]
        print(row(f"{size} nodes: onnx.load + checker", *measure(floor)))
        seconds, rss, code = measure(doctor)
        print(row(f"{size} nodes: surgery doctor", seconds, rss, 0 if code in (0, 1) else code))
    if args.cycle_nodes:
        path = folder / f"cycle_{args.cycle_nodes}.onnx"
        onnx.save(build_cycle(args.cycle_nodes), path)
        seconds, rss, code = measure([sys.executable, "-m", "surgery", "doctor", str(path)])
        print(
            row(
                f"{args.cycle_nodes} nodes, cyclic: surgery doctor",
                seconds,
                rss,
                0 if code == 2 else code,
            )
        )
        print(f"cyclic graph: exit {code} (expected 2) in {seconds:.2f} s (target < 1 s)")
    return 0


def build_cycle(n_nodes: int) -> onnx.ModelProto:
    """x -> n0 (Add) -> n1 ... -> n{k-1} (Relu) -> back into n0: the issue's cycle case."""
    nodes = [h.make_node("Add", ["x", f"t{n_nodes - 1}"], ["t0"], name="n0")]
    nodes += [
        h.make_node("Relu", [f"t{i - 1}"], [f"t{i}"], name=f"n{i}") for i in range(1, n_nodes)
    ]
    nodes.append(h.make_node("Identity", ["t0"], ["y"], name="out"))
    graph = h.make_graph(
        nodes,
        "cycle",
        [h.make_tensor_value_info("x", T.FLOAT, [3])],
        [h.make_tensor_value_info("y", T.FLOAT, [3])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    return model


if __name__ == "__main__":
    sys.exit(main())
