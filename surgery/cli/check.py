"""``surgery check MODEL.onnx``: checker, ORT load, inputs/outputs, dynamic dims, opsets, op histogram."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from surgery.cli import flags

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="check a model: checker, ONNX Runtime load, I/O shapes, dynamic dims, ops"
    )
    p.add_argument("model", type=Path)
    flags.add_report(p, what="the findings", old="--json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surgery.model_info import inspect_model
    from surgery.model_io import load
    from surgery.writeplan import WritePlan, output_or_stdout

    plan = args.write_plan = WritePlan()
    report_path = output_or_stdout(args.report, "--report")
    if report_path is not None:
        plan.read_model(load(args.model), args.model)
        plan.write(report_path, "the JSON findings (--report)")
    info = inspect_model(args.model)
    if args.report == "-":  # stdout carries the JSON; the text goes to stderr
        print(info.text(), file=sys.stderr)
        print(json.dumps(info.to_dict(), indent=2))
    else:
        print(info.text())
    if report_path is not None:
        plan.transaction.add_text(report_path, json.dumps(info.to_dict(), indent=2) + "\n")
        plan.commit()
    return 0 if info.ok else 1
