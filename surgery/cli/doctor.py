"""``surgery doctor MODEL.onnx``: what ATC will refuse or run slowly, and the pass that fixes each finding.

Exit codes: 0 nothing will fail, 1 something will, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from surgery.cli import flags
from surgery.errors import InputError, PipelineError
from surgery.writeplan import WritePlan, output_arg, output_or_stdout

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="ATC readiness report: what will fail or run slowly, and the pass that fixes it",
        description="Check a model against the ATC facts shipped with onnx-surgery (registered ops and opsets, "
        "AICPU-only kernels, per-op limits). Exit 0 when nothing will fail, 1 when something will, 2 for bad input.",
    )
    p.add_argument("model", type=Path)
    flags.add_soc(p, what="the AICPU check", old="--soc-version")
    flags.add_report(p, what="the diagnosis (instead of the table)", old="--json")
    p.add_argument(
        "--emit-pipeline",
        type=output_arg,
        metavar="PASSES.toml",
        help="write a passes.toml that applies every available fix",
    )
    p.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="NAME=SIZE",
        help="static size for a named dynamic dim in the emitted pipeline (repeatable; default batch 1)",
    )
    p.add_argument(
        "--input-shape",
        metavar="SHAPES",
        help="static input shapes for the emitted pipeline, ATC syntax 'x:1,3,224,224;y:1,10'",
    )
    p.set_defaults(func=run)


def _parse_dims(items: list[str]) -> dict[str, int]:
    dims: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().isdigit() or int(value) <= 0:
            raise PipelineError(
                f"--dim {item}: expected NAME=SIZE with a positive integer size (e.g. batch=1)"
            )
        dims[name.strip()] = int(value)
    return dims


def run(args: argparse.Namespace) -> int:
    from surgery import protoload

    dims = _parse_dims(args.dim)
    # a model doctor must refuse (unreadable, cyclic) is refused before onnx-ir and the checks are imported
    protoload.quick_cycle_check(args.model)
    proto = protoload.read(args.model)
    from surgery.doctor import diagnose, emit_pipeline, render_table
    from surgery.graph import value_names
    from surgery.model_io import from_file_proto

    input_shapes = None
    if args.input_shape:
        from surgery.shapes.spec import parse_shapes

        input_shapes = {
            k: list(v) for k, v in parse_shapes(args.input_shape, where="--input-shape").items()
        }
    model = from_file_proto(proto, args.model)
    del proto
    plan = args.write_plan = WritePlan()
    plan.read_model(model, args.model)
    json_path = output_or_stdout(args.report, "--report")
    plan.write(json_path, "the JSON report (--report)")
    plan.write(args.emit_pipeline, "the emitted pipeline (--emit-pipeline)")
    if input_shapes:
        names = set(value_names(model.graph.inputs))
        unknown = sorted(set(input_shapes) - names)
        if unknown:
            raise InputError(
                f"--input-shape: no input named {', '.join(unknown)}; the inputs are {', '.join(sorted(names))}"
            )
    report = diagnose(model, soc=args.soc)
    report.model = str(args.model)
    from surgery.cli import (
        captured_warnings,  # what loading the model raised (diagnose keeps its own)
    )

    report.warnings[:0] = [w for w in captured_warnings() if w not in report.warnings]
    if args.report == "-":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render_table(report), end="")
        if json_path is not None:
            plan.transaction.add_text(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
    if args.emit_pipeline:
        emitted = emit_pipeline(report, model, dims=dims, input_shapes=input_shapes)
        plan.transaction.add_text(args.emit_pipeline, emitted.text)
    plan.commit()
    if args.emit_pipeline:
        msg = f"wrote {args.emit_pipeline}: {len(emitted.steps)} pass(es)"
        if emitted.missing:
            msg += f"; not available in this build: {', '.join(emitted.missing)}"
        if emitted.commented:
            msg += f"; commented out (optional, or your decision): {', '.join(emitted.commented)}"
        print(msg, file=sys.stderr)
        for problem in emitted.problems:
            print(f"surgery doctor: warning: {problem}", file=sys.stderr)
    return report.exit_code
