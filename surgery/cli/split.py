"""``surgery split MODEL --head HEAD.onnx --tail TAIL.onnx``: split post-processing off, verified.

The boundary is found automatically (the cut with the fewest bytes crossing into the region that
starts at the first data-dependent or NPU-hostile op, printed with each tensor's size;
``--no-min-cut``: every tensor crossing into that region) or given with ``--boundary``. When the
model's inputs are static, or made static with ``--input-shape`` (``fix-shapes``), ``make-static``
runs first: it folds the shape arithmetic, so the boundary is sized by static shapes and the head
comes out static for the compiler. On dynamic inputs, sizes that stay unknown are avoided. The head and the tail are gated like any pass (checker, ONNX Runtime, and head-then-tail
parity with the original, exact by default), then written with a manifest JSON describing each
part's inputs and outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from surgery.cli import flags
from surgery.errors import InputError, one_line
from surgery.writeplan import WritePlan, output_arg

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "split",
        help="split data-dependent post-processing (NMS …) into a tail model; verify head then tail",
        description="Split MODEL into a head for the NPU compiler and a tail for the CPU, at the first "
        "data-dependent or NPU-hostile op or at --boundary, and check that head then tail reproduce MODEL.",
    )
    p.add_argument("model", type=Path, help="the source .onnx model")
    p.add_argument("--head", required=True, type=output_arg, help="where to write the head")
    p.add_argument("--tail", required=True, type=output_arg, help="where to write the tail")
    p.add_argument(
        "--boundary",
        type=flags.tensor_names,
        default=[],
        metavar="T1,T2",
        help="cut at these tensors instead",
    )
    p.add_argument(
        "--hostile-ops",
        type=flags.tensor_names,
        default=[],
        metavar="OP1,OP2",
        help="more op types to keep off the NPU",
    )
    p.add_argument(
        "--input-shape",
        metavar="SPEC",
        help="static input shapes ('images:1,3,640,640'): fix-shapes and make-static run first, so the "
        "head is static and the boundary is sized by static shapes",
    )
    p.add_argument(
        "--no-min-cut",
        action="store_true",
        help="cut right before the first hostile op (every tensor crossing into it) instead of at the "
        "fewest bytes",
    )
    p.add_argument(
        "--manifest",
        type=output_arg,
        help="where to write the manifest (default: HEAD stem + .split.json)",
    )
    flags.add_data(p)
    flags.add_verify(p, default="each", old_off="--no-verify")
    flags.add_report(p, what="the run's report (the gates of the split)")
    flags.add_tolerance(p, what="the parity check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surgery import api, model_io, registry
    from surgery.analysis.cuts import postprocess_boundary
    from surgery.graph import value_names
    from surgery.partition import manifest
    from surgery.shapes.dims import is_static_shape
    from surgery.shapes.spec import parse_shapes

    head_path: Path = args.head
    tail_path: Path = args.tail
    manifest_path: Path = args.manifest or head_path.with_name(f"{head_path.stem}.split.json")
    if head_path.resolve() == tail_path.resolve():
        raise InputError("--head and --tail must be different files")
    model = model_io.load(args.model)
    writes = args.write_plan = WritePlan()
    writes.set_model(model, args.model)
    writes.read(args.data, "the input arrays (--data)")
    writes.write_model(head_path, "the head (--head)")
    writes.write_model(tail_path, "the tail (--tail)")
    writes.write(manifest_path, "the manifest (--manifest)")
    from surgery.writeplan import output_or_stdout

    report_path = output_or_stdout(args.report, "--report")
    writes.write(report_path, "the report (--report)")
    out = sys.stderr if args.report == "-" else sys.stdout
    repro = head_path.with_name(head_path.name + ".repro")
    writes.reproducer(repro, explicit=False, role="the reproducer folder")
    original_outputs = value_names(model.graph.outputs)
    hostile: list[dict[str, str]] = []
    if not args.boundary:
        # fails early, with the reason, when there is nothing to split off
        hostile = [
            h.to_dict()
            for h in postprocess_boundary(
                model.graph, hostile_ops=args.hostile_ops, functions=model.functions
            ).hostile
        ]
    step = registry.get("split-postprocess")(
        boundary=list(args.boundary),
        hostile_ops=list(args.hostile_ops),
        minimize=not args.no_min_cut,
    )
    steps: list = [step]
    if args.input_shape or all(
        is_static_shape(v.shape) for v in model.graph.inputs if not v.is_initializer()
    ):
        # static inputs: fold the shape arithmetic first, so the boundary is sized by static shapes
        # and the head is static for the compiler (the gates verify it like the split)
        steps.insert(0, registry.get("make-static")())
    if args.input_shape:
        shapes = {
            k: list(v) for k, v in parse_shapes(args.input_shape, where="--input-shape").items()
        }
        steps.insert(0, registry.get("fix-shapes")(shapes=shapes))
    verify = flags.gate_settings(args)
    head, report = api.apply(model, steps, inputs=args.data, verify=verify, reproducer_dir=repro)
    result = report.steps[-1]
    if not result.modified:
        raise InputError(
            f"{args.model}: nothing to split off ({'; '.join(result.notes) or 'no hostile op'})"
        )
    tail = report.models["tail"]
    for note in result.notes:
        print(one_line(note), file=out)
    print(
        f"head: {len(head.graph)} nodes, tail: {len(tail.graph)} nodes; checker {result.checker}, "
        f"onnxruntime {result.ort}, head then tail vs original: {result.parity_status}",
        file=out,
    )
    writes.transaction.add_model(head, head_path)
    writes.transaction.add_model(tail, tail_path)
    data = manifest(
        head,
        {"tail": tail},
        files={"head": head_path.name, "tail": tail_path.name},
        original_outputs=original_outputs,
        hostile=hostile,
        source="user" if args.boundary else "auto",
    )
    writes.transaction.add_text(manifest_path, json.dumps(data, indent=2) + "\n")
    report.source = str(args.model)
    report.outputs = [str(head_path), str(tail_path)]
    if report_path is not None:
        writes.transaction.add_text(report_path, json.dumps(report.to_dict(), indent=2) + "\n")
    for path in writes.commit():
        print(f"wrote {path}", file=out)
    if args.report == "-":
        print(json.dumps(report.to_dict(), indent=2))
    return 0
