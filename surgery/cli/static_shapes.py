"""``surgery apply`` options for static-shape targets: ``--buckets`` and ``--soc-version``.

``apply.py`` adds these arguments, hands bucketed runs to :func:`run_buckets` and prints the
``atc`` lines of what it wrote with :func:`print_atc`. The work is done by
:func:`surgery.buckets.apply_buckets` and :mod:`surgery.atc`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from surgery.cli import flags
from surgery.errors import GateError

__all__ = ["add_arguments", "print_atc", "run_buckets"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--buckets", metavar="SPEC",
                        help='one static model per size, e.g. "batch=1,4,8" (a dim name or an input axis '
                             '"x[0]"); outputs are OUT.batch1.onnx …; overrides the [buckets] table')
    parser.add_argument("--soc-version", metavar="SOC",
                        help="Ascend SoC for the printed atc command lines (e.g. Ascend310P3)")


def print_atc(report: Any, *, file: Any = None, warnings_to: Any = None) -> None:
    """Print the ``atc`` line of every model the run wrote (stdout), and warnings about them (stderr)."""
    out = file or sys.stdout
    warn = warnings_to or sys.stderr
    for command in report.extra.get("atc", []):
        if not command.get("command"):
            print(f"atc: error: {command.get('model')}: {command.get('error')}", file=out)
            continue
        print(f"atc: {command['command']}", file=out)
        for note in command.get("notes") or []:
            print(f"atc: note: {note}", file=out)
        dynamic = command.get("dynamic_inputs") or []
        if dynamic and not command.get("dynamic_batch_size"):
            print(f"surgery: warning: input(s) {', '.join(dynamic)} still have dynamic dims (-1); ATC refuses them "
                  "without gears: add fix-shapes and make-static (or --buckets)", file=warn)


def run_buckets(args: argparse.Namespace, pipeline: Any, output: Path, repro: Path, plan: Any) -> int:
    """Run every bucket; their files (and ``--report``) are committed together by ``plan``."""
    from surgery.buckets import apply_buckets

    try:
        result = apply_buckets(
            args.model, pipeline, args.buckets, inputs=args.inputs, verify=args.verify, output=output,
            reproducer_dir=repro, progress=flags.progress_printer(args), soc_version=args.soc_version, write_plan=plan,
        )
    except GateError as exc:
        plan.abort()
        if exc.report is not None and not args.quiet:
            print(exc.report.table())
        raise
    if args.report:
        plan.transaction.add_text(args.report, json.dumps(result.to_dict(), indent=2) + "\n")
    plan.commit()
    for run in result.runs:
        run.report.source = str(args.model)
        if not args.quiet:
            print(f"== bucket {run.label} ({', '.join(f'{k}={v}' for k, v in run.binding.items())}) -> {run.output}")
            print(run.report.table())
        print_atc(run.report)
    if result.dynamic_batch is not None and not args.quiet:
        print("== single-model alternative (ATC dynamic batch gears):")
        print(f"atc: {result.dynamic_batch.line()}")
    return 0
