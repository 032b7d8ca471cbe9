"""``surgery check MODEL.onnx``: checker, ORT load, inputs/outputs, dynamic dims, opsets, op histogram."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check a model: checker, ONNX Runtime load, I/O shapes, dynamic dims, ops")
    p.add_argument("model", type=Path)
    p.add_argument("--json", type=Path, metavar="OUT.json", help="also write the findings as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surgery.model_info import inspect_model

    info = inspect_model(args.model)
    print(info.text())
    if args.json:
        args.json.write_text(json.dumps(info.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0 if info.ok else 1
