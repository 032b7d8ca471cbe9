"""``surgery extract MODEL --inputs a,b --outputs c,d -o PART.onnx``: cut out a subgraph, verified.

The part shares the model's weights (external data stays external; parts over 2 GB work), keeps
its ``ir_version`` and opsets, and is checked: onnx.checker, then ONNX Runtime runs it on the
original's values of its inputs and its outputs are compared with the original's tensors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from surgery.cli import flags
from surgery.errors import one_line
from surgery.writeplan import output_arg

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="extract the subgraph between tensor names into a new model (verified)",
        description="Extract the part of MODEL computing --outputs from --inputs. Weights are shared, not copied; "
        "the part is checked and compared with the original's tensors on the same inputs.",
    )
    p.add_argument("model", type=Path, help="the source .onnx model")
    p.add_argument(
        "--inputs",
        required=True,
        type=flags.tensor_names,
        metavar="A,B",
        help="tensors that become the part's inputs",
    )
    p.add_argument(
        "--outputs",
        required=True,
        type=flags.tensor_names,
        metavar="C,D",
        help="tensors that become its outputs",
    )
    p.add_argument("-o", "--output", required=True, type=output_arg, help="where to write the part")
    p.add_argument(
        "--input-type",
        action="append",
        default=[],
        metavar="NAME:DTYPE[DIMS]",
        help="type of a new input the model does not type, e.g. feat:float32[1,64,56,56] (repeatable)",
    )
    flags.add_data(p)
    flags.add_verify(p, default="each", old_off="--no-verify")
    flags.add_report(p, what="what was extracted and verified")
    flags.add_tolerance(p, what="the comparison")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One API call: the ``extract`` pass through the runner, whose gates check the part
    (checker, ORT, parity against the original's tensors: a slice of the original) and whose
    reproducer and report are those of every other command."""
    from surgery import api, model_io
    from surgery.writeplan import WritePlan, output_or_stdout

    model = model_io.load(args.model)
    nodes_before = len(model.graph)
    writes = args.write_plan = WritePlan()
    writes.set_model(model, args.model)
    writes.read(args.data, "the input arrays (--data)")
    writes.write_model(args.output)
    report_path = output_or_stdout(args.report, "--report")
    writes.write(report_path, "the report (--report)")
    repro = args.output.with_name(args.output.name + ".repro")
    writes.reproducer(repro, explicit=False, role="the reproducer folder")
    out = (
        sys.stderr if args.report == "-" else sys.stdout
    )  # stdout carries the JSON with --report -
    part, report = api.extract(
        model,
        args.inputs,
        args.outputs,
        input_types=args.input_type,
        data=args.data,
        verify=args.verify,
        rtol=args.rtol,
        atol=args.atol,
        reproducer_dir=repro,
        write_plan=writes,
    )
    result = report.steps[0]
    print(
        f"part: {len(part.graph)} of {nodes_before} nodes, "
        f"{len(part.graph.initializers)} initializers",
        file=out,
    )
    for v in part.graph.inputs:
        if v.name not in part.graph.initializers:
            print(one_line(f"  input  {v.name}: {_type(v)}"), file=out)
    for v in part.graph.outputs:
        print(one_line(f"  output {v.name}: {_type(v)}"), file=out)
    for note in result.notes:
        print(one_line(f"  note: {note}"), file=out)
    parity = result.gates.get("parity")
    if args.verify != "off" and parity is not None and parity.diffs:
        worst = max(d.max_abs for d in parity.diffs)
        print(
            f"verified: checker {result.checker}, onnxruntime {result.ort}, "
            f"{len(parity.diffs)} output(s) match the original (max abs {worst:.3g})",
            file=out,
        )
    writes.transaction.add_model(part, args.output)
    report.source = str(args.model)
    report.outputs = [str(args.output)]
    if report_path is not None:
        writes.transaction.add_text(report_path, json.dumps(report.to_dict(), indent=2) + "\n")
    for path in writes.commit():
        print(f"wrote {path}", file=out)
    if args.report == "-":
        print(json.dumps(report.to_dict(), indent=2))
    return 0


def _type(value) -> str:
    from surgery.analysis.tensor_types import type_text

    return type_text(value)
