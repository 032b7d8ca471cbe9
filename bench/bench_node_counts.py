"""Node counts after the doctor's own pipeline, beside onnxsim and onnxslim on the same shapes.

    python bench/bench_node_counts.py MODEL.onnx:x=1,3,224,224 [MODEL2.onnx:x=1,3,48,320 ...]

For each model: ``surgery doctor`` → the emitted pipeline for the given input shapes →
``surgery apply``; then onnxsim (``overwrite_input_shapes``) and onnxslim (``input_shapes``) on the
original. Prints the node counts (every graph, subgraphs included) and the op types where surgery
has more nodes than the best peer. A peer output with non-standard ops the original did not have
(onnxsim can write ``com.microsoft`` Attention, which ATC cannot compile) is starred and not
counted as the best peer. Peers that are not installed are shown as "-". Real models
(e.g. the Paddle OCR models in the ``rapidocr-onnxruntime`` wheel) are the point: fetch them with
``pip download --no-deps`` and unzip; never commit them.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import onnx


def _counts(model: onnx.ModelProto) -> collections.Counter[str]:
    """Op types over every graph; ops outside the standard domain are counted as ``domain::op``."""
    counts: collections.Counter[str] = collections.Counter()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[
                node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            ] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return counts


def _surgery(
    path: Path, shapes: dict[str, list[int]], work: Path
) -> collections.Counter[str] | str:
    import onnx_ir as ir

    from surgery import api
    from surgery.doctor import diagnose, emit_pipeline

    model = ir.load(path)
    emitted = emit_pipeline(diagnose(path), model, input_shapes=shapes)
    toml = work / f"{path.stem}.toml"
    toml.write_text(emitted.text)
    out = work / f"{path.stem}.surgery.onnx"
    try:
        api.apply(path, toml, output=out)
    except Exception as exc:  # noqa: BLE001 - a bench prints what failed and goes on
        return f"failed: {str(exc).splitlines()[0][:80]}"
    return _counts(onnx.load(out))


def _onnxsim(path: Path, shapes: dict[str, list[int]]) -> collections.Counter[str] | str:
    try:
        import onnxsim
    except ImportError:
        return "-"
    try:
        model, ok = onnxsim.simplify(onnx.load(path), overwrite_input_shapes=shapes)
    except Exception as exc:  # noqa: BLE001 - a peer failing is a figure, not an error
        return f"failed: {str(exc).splitlines()[0][:60]}"
    return _counts(model) if ok else "check failed"


def _onnxslim(path: Path, shapes: dict[str, list[int]]) -> collections.Counter[str] | str:
    try:
        import onnxslim
    except ImportError:
        return "-"
    try:
        model = onnxslim.slim(
            str(path), input_shapes=[f"{k}:{','.join(map(str, v))}" for k, v in shapes.items()]
        )
    except Exception as exc:  # noqa: BLE001 - a peer failing is a figure, not an error
        return f"failed: {str(exc).splitlines()[0][:60]}"
    return _counts(model)


def _parse(spec: str) -> tuple[Path, dict[str, list[int]]]:
    path, _, rest = spec.partition(":")
    shapes = {}
    for item in filter(None, rest.split(";")):
        name, _, dims = item.partition("=")
        shapes[name] = [int(d) for d in dims.split(",")]
    return Path(path), shapes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="MODEL.onnx:input=d0,d1,...[;input2=...]")
    args = parser.parse_args()
    print(f"{'model':<44} {'original':>9} {'surgery':>9} {'onnxsim':>9} {'onnxslim':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models:
            path, shapes = _parse(spec)
            original = _counts(onnx.load(path))
            results = {
                "surgery": _surgery(path, shapes, Path(tmp)),
                "onnxsim": _onnxsim(path, shapes),
                "onnxslim": _onnxslim(path, shapes),
            }

            def foreign(
                counts: collections.Counter[str], original: collections.Counter[str] = original
            ) -> int:
                """Nodes of non-standard ops the original did not have (e.g. com.microsoft fusions ATC cannot compile)."""
                return sum(n for op, n in counts.items() if "::" in op and op not in original)

            shown = {}
            for key, value in results.items():
                if isinstance(value, collections.Counter):
                    shown[key] = f"{sum(value.values())}{'*' if foreign(value) else ''}"
                else:
                    shown[key] = value
            print(
                f"{path.name:<44} {sum(original.values()):>9} "
                + " ".join(f"{shown[k]:>9}" for k in results)
            )
            for key, value in results.items():
                if isinstance(value, collections.Counter) and foreign(value):
                    ops = {op: n for op, n in value.items() if "::" in op and op not in original}
                    print(f"{'':<44} * {key} writes non-standard ops, not counted as a peer: {ops}")
            ours = results["surgery"]
            peers = [
                v
                for k, v in results.items()
                if k != "surgery" and isinstance(v, collections.Counter) and not foreign(v)
            ]
            if isinstance(ours, collections.Counter) and peers:
                best = min(peers, key=lambda c: sum(c.values()))
                extra = {
                    op: ours[op] - best.get(op, 0) for op in ours if ours[op] > best.get(op, 0)
                }
                if extra:
                    print(
                        f"{'':<44} more than the best peer: {dict(sorted(extra.items(), key=lambda kv: -kv[1]))}"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
