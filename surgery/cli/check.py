"""``surgery check MODEL.onnx``: checker, ORT load, inputs/outputs, dynamic dims, opsets, op histogram."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from surgery.writeplan import output_arg

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check a model: checker, ONNX Runtime load, I/O shapes, dynamic dims, ops")
    p.add_argument("model", type=Path)
    p.add_argument("--json", type=output_arg, metavar="OUT.json", help="also write the findings as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surgery.model_info import inspect_model
    from surgery.model_io import load
    from surgery.writeplan import WritePlan

    plan = args.write_plan = WritePlan()
    if args.json:
        plan.read_model(load(args.model), args.model)
        plan.write(args.json, "the JSON findings (--json)")
    info = inspect_model(args.model)
    print(info.text())
    if args.json:
        plan.transaction.add_text(args.json, json.dumps(info.to_dict(), indent=2) + "\n")
        plan.commit()
    return 0 if info.ok else 1
