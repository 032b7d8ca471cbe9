"""``surgery split MODEL --head HEAD.onnx --tail TAIL.onnx``: split post-processing off, verified.

The boundary is found automatically (every tensor crossing into the region that starts at the first
data-dependent or NPU-hostile op) or given with ``--boundary``. The head and the tail are gated like
any pass (checker, ONNX Runtime, and head-then-tail parity with the original, exact by default),
then written with a manifest JSON describing each part's inputs and outputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from surgery.cli.flags import tolerance
from surgery.errors import InputError, one_line
from surgery.writeplan import WritePlan, output_arg

__all__ = ["register", "run"]


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


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
    p.add_argument("--boundary", type=_names, default=[], metavar="T1,T2", help="cut at these tensors instead")
    p.add_argument("--hostile-ops", type=_names, default=[], metavar="OP1,OP2", help="more op types to keep off the NPU")
    p.add_argument("--manifest", type=output_arg, help="where to write the manifest (default: HEAD stem + .split.json)")
    p.add_argument("--data", type=Path, metavar="DATA.npz", help="arrays for the model's inputs in the check run")
    p.add_argument("--verify", choices=("each", "off"), default="each", help="run the gates (default) or not")
    p.add_argument("--rtol", type=tolerance, default=0.0, help="relative tolerance of the parity check (default 0: exact)")
    p.add_argument("--atol", type=tolerance, default=0.0, help="absolute tolerance of the parity check (default 0: exact)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surgery import api, model_io, registry
    from surgery.analysis.cuts import postprocess_boundary
    from surgery.graph import value_names
    from surgery.partition import manifest

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
    repro = head_path.with_name(head_path.name + ".repro")
    writes.reproducer(repro, explicit=False, role="the reproducer folder")
    original_outputs = value_names(model.graph.outputs)
    hostile: list[dict[str, str]] = []
    if not args.boundary:
        # fails early, with the reason, when there is nothing to split off
        hostile = [h.to_dict() for h in postprocess_boundary(model.graph, hostile_ops=args.hostile_ops, functions=model.functions).hostile]
    step = registry.get("split-postprocess")(boundary=list(args.boundary), hostile_ops=list(args.hostile_ops))
    verify = {"checker": args.verify, "ort": args.verify, "parity": args.verify, "rtol": args.rtol, "atol": args.atol}
    head, report = api.apply(model, [step], inputs=args.data, verify=verify, reproducer_dir=repro)
    result = report.steps[0]
    if not result.modified:
        raise InputError(f"{args.model}: nothing to split off ({'; '.join(result.notes) or 'no hostile op'})")
    tail = report.models["tail"]
    for note in result.notes:
        print(one_line(note))
    print(f"head: {len(head.graph)} nodes, tail: {len(tail.graph)} nodes; checker {result.checker}, "
          f"onnxruntime {result.ort}, head then tail vs original: {result.parity_status}")
    writes.transaction.add_model(head, head_path)
    writes.transaction.add_model(tail, tail_path)
    data = manifest(head, {"tail": tail}, files={"head": head_path.name, "tail": tail_path.name},
                    original_outputs=original_outputs, hostile=hostile, source="user" if args.boundary else "auto")
    writes.transaction.add_text(manifest_path, json.dumps(data, indent=2) + "\n")
    for path in writes.commit():
        print(f"wrote {path}")
    return 0
