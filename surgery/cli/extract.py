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
from surgery.cli.flags import tolerance
from surgery.errors import GateError, one_line
from surgery.writeplan import output_arg

__all__ = ["register", "run"]


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


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
        type=_names,
        metavar="A,B",
        help="tensors that become the part's inputs",
    )
    p.add_argument(
        "--outputs",
        required=True,
        type=_names,
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
    p.add_argument(
        "--rtol",
        type=tolerance,
        default=0.0,
        help="relative tolerance of the comparison (default 0: exact)",
    )
    p.add_argument(
        "--atol",
        type=tolerance,
        default=0.0,
        help="absolute tolerance of the comparison (default 0: exact)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surgery import model_io
    from surgery.instruments import checker
    from surgery.model_io import LightProto
    from surgery.partition import extract_part, parse_type_spec, slice_reference
    from surgery.pass_base import FeedHints, Tolerance
    from surgery.verify.compare import diff_arrays
    from surgery.verify.inputs import InputsConfig, plan_inputs
    from surgery.verify.ort import run_model
    from surgery.writeplan import WritePlan, output_or_stdout

    model = model_io.load(args.model)
    writes = args.write_plan = WritePlan()
    writes.set_model(model, args.model)
    writes.read(args.data, "the input arrays (--data)")
    writes.write_model(args.output)
    report_path = output_or_stdout(args.report, "--report")
    writes.write(report_path, "the report (--report)")
    out = (
        sys.stderr if args.report == "-" else sys.stdout
    )  # stdout carries the JSON with --report -
    types = dict(parse_type_spec(t) for t in args.input_type)
    part, cut, notes = extract_part(model, args.inputs, args.outputs, input_types=types)
    print(
        f"part: {len(cut.nodes)} of {len(model.graph)} nodes, {len(cut.initializers)} initializers",
        file=out,
    )
    for v in part.graph.inputs:
        print(one_line(f"  input  {v.name}: {_type(v)}"), file=out)
    for v in part.graph.outputs:
        print(one_line(f"  output {v.name}: {_type(v)}"), file=out)
    for note in notes:
        print(one_line(f"  note: {note}"), file=out)
    doc: dict = {
        "source": str(args.model),
        "output": str(args.output),
        "nodes": len(cut.nodes),
        "of_nodes": len(model.graph),
        "initializers": len(cut.initializers),
        "inputs": [{"name": v.name, "type": _type(v)} for v in part.graph.inputs],
        "outputs": [{"name": v.name, "type": _type(v)} for v in part.graph.outputs],
        "notes": list(notes),
        "verify": args.verify,
        "checker": "not run",
        "parity": [],
    }
    if args.verify != "off":
        outcome = checker.check(LightProto(part), full=True)
        if not outcome:
            raise GateError(f"onnx.checker rejects the part: {outcome.message}", gate="checker")
        plan = plan_inputs(model, InputsConfig(data=args.data), FeedHints())
        feeds, expected = slice_reference(model, part, plan.feeds)
        actual = run_model(part, feeds)
        tol = Tolerance(args.rtol, args.atol)
        diffs = [diff_arrays(n, actual.get(n), expected[n], tol) for n in expected]
        bad = [d for d in diffs if not d.ok]
        worst = max((d.max_abs for d in diffs), default=0.0)
        if bad:
            raise GateError(
                f"the part does not reproduce the original's tensor {bad[0].describe()}",
                gate="parity",
            )
        print(
            f"verified: checker ok, onnxruntime ok, {len(diffs)} output(s) match the original (max abs {worst:.3g})",
            file=out,
        )
        doc.update(checker="ok", parity=[d.to_dict() for d in diffs])
    writes.transaction.add_model(part, args.output)
    if report_path is not None:
        writes.transaction.add_text(report_path, json.dumps(doc, indent=2) + "\n")
    for path in writes.commit():
        print(f"wrote {path}", file=out)
    if args.report == "-":
        print(json.dumps(doc, indent=2))
    return 0


def _type(value) -> str:
    from surgery.analysis.tensor_types import type_text

    return type_text(value)
