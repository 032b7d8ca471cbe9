"""Time and peak memory of fix-shapes + make-static (gates off) beside onnxsim, on the same models.

Models (generated here, nothing downloaded):

- ``decoder``: a GPT-like decoder in the legacy exporter's style (Shape → Gather → Unsqueeze →
  Concat → Reshape per layer, a tied embedding / lm_head ``Transpose``), dynamic batch and
  sequence, one file, about ``--decoder-mb`` MB of float32 weights;
- ``slice N`` / ``reshape N``: N small shape-computing nodes (blocks of Shape → Gather → Div →
  Mul → Unsqueeze → Slice, or → Concat → Reshape; the Div defeats onnx's data propagation, so the
  chain only resolves by folding block after block).

Each tool runs in a fresh subprocess that reports its wall time and peak RSS (``VmHWM``, else ``ru_maxrss``):
``surgery`` (``surgery.apply`` of fix-shapes + make-static with ``verify="off"``, saving),
``passes`` (the same two passes called directly between ``model_io.load`` and ``save``: the
runner's own bookkeeping left out), ``floor`` (import, ``model_io.load``, one whole-model onnx
shape inference, ``save``: what an onnx-ir based pipeline pays before folding anything), ``onnxsim``
(``onnxsim.simplify(overwrite_input_shapes=…)`` then save), and ``load+save`` (onnx.load/onnx.save)
as the floor. Not part of CI::

    python bench/bench_static.py --decoder-mb 1400 --chains 30000 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

IR_VERSION = 8
OPSET = 17


# ---------------------------------------------------------------------------------------- models


def decoder(path: Path, target_mb: int, layers: int = 4, heads: int = 8) -> dict[str, list[int]]:
    """Write the decoder; return the shapes to fix (batch 1, sequence 128)."""
    # weights per layer ≈ 12·d²·4 bytes, embedding vocab·d·4
    d = 64
    while (12 * d * d * layers + 8 * d * 1024) * 4 < target_mb * (1 << 20):
        d += 64
    vocab = 8 * d
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def w(name: str, shape: tuple[int, ...]) -> str:
        inits.append(
            numpy_helper.from_array((rng.standard_normal(shape, dtype=np.float32) * 0.02), name)
        )
        return name

    def c(name: str, value) -> str:
        nodes.append(
            h.make_node(
                "Constant",
                [],
                [name],
                name=f"{name}/Constant",
                value=numpy_helper.from_array(np.asarray(value)),
            )
        )
        return name

    def n(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(h.make_node(op, inputs, [out], name=out.rsplit("_output", 1)[0], **attrs))
        return out

    emb = w("embed.weight", (vocab, d))
    x = n("Gather", [emb, "input_ids"], "/embed/Gather_output_0")
    for i in range(layers):
        p = f"/layers.{i}"
        xn = n(
            "LayerNormalization",
            [x, w(f"layers.{i}.ln1.weight", (d,)), w(f"layers.{i}.ln1.bias", (d,))],
            f"{p}/ln1_output_0",
            axis=-1,
        )
        qkv = n("MatMul", [xn, w(f"layers.{i}.qkv.weight", (d, 3 * d))], f"{p}/qkv/MatMul_output_0")
        shape = n("Shape", [xn], f"{p}/Shape_output_0")
        b = n("Gather", [shape, c(f"{p}/c0", 0)], f"{p}/Gather_output_0", axis=0)
        s = n("Gather", [shape, c(f"{p}/c1", 1)], f"{p}/Gather_1_output_0", axis=0)
        bu = n("Unsqueeze", [b, c(f"{p}/ax0", [0])], f"{p}/Unsqueeze_output_0")
        su = n("Unsqueeze", [s, c(f"{p}/ax1", [0])], f"{p}/Unsqueeze_1_output_0")
        tgt = n(
            "Concat",
            [bu, su, c(f"{p}/rest", [3, heads, d // heads])],
            f"{p}/Concat_output_0",
            axis=0,
        )
        r = n("Reshape", [qkv, tgt], f"{p}/Reshape_output_0")
        t = n("Transpose", [r], f"{p}/Transpose_output_0", perm=[2, 0, 3, 1, 4])
        q = n("Gather", [t, c(f"{p}/q", 0)], f"{p}/q_output_0", axis=0)
        k = n("Gather", [t, c(f"{p}/k", 1)], f"{p}/k_output_0", axis=0)
        v = n("Gather", [t, c(f"{p}/v", 2)], f"{p}/v_output_0", axis=0)
        kt = n("Transpose", [k], f"{p}/kT_output_0", perm=[0, 1, 3, 2])
        att = n("MatMul", [q, kt], f"{p}/att_output_0")
        att = n(
            "Mul",
            [att, c(f"{p}/scale", np.float32((d // heads) ** -0.5))],
            f"{p}/att_scaled_output_0",
        )
        att = n("Softmax", [att], f"{p}/Softmax_output_0", axis=-1)
        y = n("MatMul", [att, v], f"{p}/y_output_0")
        y = n("Transpose", [y], f"{p}/y_t_output_0", perm=[0, 2, 1, 3])
        tgt2 = n("Concat", [bu, su, c(f"{p}/dm", [d])], f"{p}/Concat_1_output_0", axis=0)
        y = n("Reshape", [y, tgt2], f"{p}/Reshape_1_output_0")
        y = n("MatMul", [y, w(f"layers.{i}.proj.weight", (d, d))], f"{p}/proj_output_0")
        x = n("Add", [x, y], f"{p}/Add_output_0")
        xn2 = n(
            "LayerNormalization",
            [x, w(f"layers.{i}.ln2.weight", (d,)), w(f"layers.{i}.ln2.bias", (d,))],
            f"{p}/ln2_output_0",
            axis=-1,
        )
        hdn = n("MatMul", [xn2, w(f"layers.{i}.fc1.weight", (d, 4 * d))], f"{p}/fc1_output_0")
        hdn = n("Relu", [hdn], f"{p}/Relu_output_0")
        hdn = n("MatMul", [hdn, w(f"layers.{i}.fc2.weight", (4 * d, d))], f"{p}/fc2_output_0")
        x = n("Add", [x, hdn], f"{p}/Add_1_output_0")
    emb_t = n("Transpose", [emb], "/lm_head/Transpose_output_0", perm=[1, 0])  # tied weights
    n("MatMul", [x, emb_t], "logits")
    graph = h.make_graph(
        nodes,
        "decoder",
        [h.make_tensor_value_info("input_ids", T.INT64, ["batch", "seq"])],
        [h.make_tensor_value_info("logits", T.FLOAT, ["batch", "seq", vocab])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.save(model, path)
    return {"input_ids": [1, 128]}


def chain(path: Path, nodes_wanted: int, kind: str = "slice") -> dict[str, list[int]]:
    """Write a synthetic shape chain; return the shapes to fix.

    Each block reads the previous block's shape: Shape → Gather → Div → Mul → Unsqueeze, then
    ``slice``: a Slice whose end is that value, or ``reshape``: Concat → Reshape. The Div defeats
    onnx's data propagation, so each block's shape is known only once the previous one folds.
    On ``slice`` onnxsim folds one block per fixed-point iteration and stops at its 50-iteration
    cap (the superlinear figures in the issue); on ``reshape`` it fuses the Reshapes instead.
    """
    blocks = max(1, nodes_wanted // (6 if kind == "slice" else 7))
    nodes = []
    inits = [
        numpy_helper.from_array(np.array(v, np.int64), k)
        for k, v in {"i1": 1, "two": 2, "ax": [0], "lead": [2], "zero": [0], "axis1": [1]}.items()
    ]
    cur = "x"
    for b in range(blocks):
        nodes += [
            h.make_node("Shape", [cur], [f"s{b}"], name=f"shape{b}"),
            h.make_node("Gather", [f"s{b}", "i1"], [f"d{b}"], axis=0, name=f"gather{b}"),
            h.make_node("Div", [f"d{b}", "two"], [f"h{b}"], name=f"div{b}"),
            h.make_node("Mul", [f"h{b}", "two"], [f"m{b}"], name=f"mul{b}"),
            h.make_node("Unsqueeze", [f"m{b}", "ax"], [f"u{b}"], name=f"unsq{b}"),
        ]
        if kind == "slice":
            nodes.append(
                h.make_node("Slice", [cur, "zero", f"u{b}", "axis1"], [f"r{b}"], name=f"slice{b}")
            )
        else:
            nodes += [
                h.make_node("Concat", ["lead", f"u{b}"], [f"t{b}"], axis=0, name=f"cat{b}"),
                h.make_node("Reshape", [cur, f"t{b}"], [f"r{b}"], name=f"reshape{b}"),
            ]
        cur = f"r{b}"
    nodes.append(h.make_node("Relu", [cur], ["y"], name="relu"))
    graph = h.make_graph(
        nodes,
        "chain",
        [h.make_tensor_value_info("x", T.FLOAT, [2, "n"])],
        [h.make_tensor_value_info("y", T.FLOAT, [2, "m"])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.save(model, path)
    return {"x": [2, 64]}


# ---------------------------------------------------------------------------------------- workers


def _work(tool: str, model: str, shapes: dict[str, list[int]], out: str) -> dict[str, object]:
    t0 = time.perf_counter()
    extra: dict[str, object] = {}
    if tool == "surgery":
        import surgery
        from surgery.passes.fix_shapes import FixShapes
        from surgery.passes.make_static import MakeStatic

        _, report = surgery.apply(
            model, [FixShapes(shapes=shapes), MakeStatic()], verify="off", output=out
        )
        extra = {
            k: report.step("make-static").stats[k]
            for k in ("rounds", "dynamic_tensors", "size_delta_bytes")
        }
    elif tool == "passes":
        from surgery import model_io
        from surgery.passes.fix_shapes import FixShapes
        from surgery.passes.make_static import MakeStatic

        loaded = model_io.load(model)
        FixShapes(shapes=shapes)(loaded)
        stats = MakeStatic()(loaded).stats
        model_io.save(loaded, out)
        extra = {k: stats[k] for k in ("rounds", "dynamic_tensors", "size_delta_bytes")}
    elif tool == "floor":
        # what any onnx-ir based pipeline pays before folding anything: import, load, one
        # whole-model onnx shape inference, save
        import surgery
        from surgery import model_io
        from surgery.passes.fix_shapes import FixShapes
        from surgery.shapes.infer import infer_model

        loaded = model_io.load(model)
        FixShapes(shapes=shapes)(loaded)
        infer_model(loaded)
        model_io.save(loaded, out)
    elif tool == "onnxsim":
        import onnxsim

        simplified, ok = onnxsim.simplify(model, overwrite_input_shapes=shapes)
        onnx.save(simplified, out)
        extra = {"check": bool(ok)}
    elif tool == "load+save":
        onnx.save(onnx.load(model), out)
    else:
        raise SystemExit(f"unknown tool {tool}")
    seconds = time.perf_counter() - t0
    extra["out_mb"] = round(
        sum(p.stat().st_size for p in Path(out).parent.glob(Path(out).name + "*")) / 2**20, 1
    )
    return {"seconds": seconds, "peak_rss_mb": _peak_rss_mb(), **extra}


def _peak_rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` where there is /proc: Linux carries ``ru_maxrss`` over
    ``exec`` from the parent, which would report the parent's peak for a small child."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(
    tool: str, model: Path, shapes: dict[str, list[int]], out: Path, timeout: float
) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--worker", tool, str(model), json.dumps(shapes), str(out)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {
            "error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:120],
            "seconds": time.perf_counter() - started,
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--worker":
        print(json.dumps(_work(argv[1], argv[2], json.loads(argv[3]), argv[4])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--decoder-mb", type=int, default=200, help="decoder weight size in MB (0: skip)"
    )
    parser.add_argument(
        "--chains", type=int, nargs="*", default=[30000, 100000], help="synthetic graph node counts"
    )
    parser.add_argument(
        "--chain-kinds",
        nargs="*",
        default=["slice", "reshape"],
        choices=["slice", "reshape"],
        help="synthetic graph families (see chain())",
    )
    parser.add_argument(
        "--tools", nargs="*", default=["surgery", "passes", "floor", "onnxsim", "load+save"]
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per tool and model, seconds")
    parser.add_argument(
        "--workdir", type=Path, help="where models are written (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_static_"))
    work.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, Path, dict[str, list[int]]]] = []
    if args.decoder_mb:
        path = work / "decoder.onnx"
        t0 = time.perf_counter()
        shapes = decoder(path, args.decoder_mb)
        cases.append((f"decoder {path.stat().st_size / 2**20:.0f} MB", path, shapes))
        print(
            f"# built {path} ({path.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    for kind in args.chain_kinds:
        for count in args.chains:
            path = work / f"{kind}chain{count}.onnx"
            shapes = chain(path, count, kind)
            cases.append((f"{kind} {len(onnx.load(path).graph.node)} nodes", path, shapes))
    print(f"{'model':<22} {'tool':<10} {'time s':>8} {'peak RSS MB':>12}  notes", flush=True)
    for label, path, shapes in cases:
        results = {}
        for tool in args.tools:
            out = work / f"{path.stem}.{tool.replace('+', '_')}.out.onnx"
            r = _run(tool, path, shapes, out, args.timeout)
            results[tool] = r
            notes = r.get("error") or ", ".join(
                f"{k}={v}" for k, v in r.items() if k not in ("seconds", "peak_rss_mb")
            )
            secs = f"{r['seconds']:.1f}" if "seconds" in r else "-"
            rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
            print(f"{label:<22} {tool:<10} {secs:>8} {rss:>12}  {notes}", flush=True)
        a, b = results.get("surgery", {}), results.get("onnxsim", {})
        if "peak_rss_mb" in a and "peak_rss_mb" in b:
            print(
                f"{label:<22} {'ratio':<10} {a['seconds'] / b['seconds']:>8.2f} {a['peak_rss_mb'] / b['peak_rss_mb']:>12.2f}"
                "  surgery / onnxsim",
                flush=True,
            )
        f = results.get("floor", {})
        if "seconds" in f and "seconds" in b:
            print(
                f"{label:<22} {'floor':<10} {f['seconds'] / b['seconds']:>8.2f} {'':>12}  floor / onnxsim",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
