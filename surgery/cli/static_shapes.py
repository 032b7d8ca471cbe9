"""``surgery apply`` options for static-shape targets: ``--buckets`` and ``--soc`` (old: ``--soc-version``).

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
    parser.add_argument(
        "--buckets",
        metavar="SPEC",
        help='one static model per size, e.g. "batch=1,4,8" (a dim name or an input axis '
        '"x[0]"); outputs are OUT.batch1.onnx …; overrides the [buckets] table',
    )
    flags.add_soc(parser, old="--soc-version")
    parser.add_argument(
        "--cann",
        type=int,
        choices=(7, 8),
        metavar="7|8",
        help="the CANN release ATC comes from: an output left with dynamic dims gets that "
        "release's dynamic-shape atc line (-1 is >= 1 on 7, >= 0 on 8; refused on 310/310B)",
    )


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
        if dynamic and command.get("notes"):
            print(
                f"surgery: warning: input(s) {', '.join(dynamic)} keep dynamic dims: ATC compiles a dynamic-shape "
                "model (slower than static; 310/310B refuse it): fix-shapes and make-static give a static one",
                file=warn,
            )
        elif dynamic and not command.get("dynamic_batch_size"):
            print(
                f"surgery: warning: input(s) {', '.join(dynamic)} still have dynamic dims (-1); ATC refuses them "
                "without gears: add fix-shapes and make-static (or --buckets)",
                file=warn,
            )


def run_buckets(
    args: argparse.Namespace,
    pipeline: Any,
    output: Path,
    repro: Path,
    plan: Any,
    *,
    before: Any = None,
) -> int:
    """Run every bucket; their files (and ``--report``, ``--html``) are committed together by ``plan``.

    ``before`` is the input model's :class:`surgery.html_report.GraphSummary` (for ``--html``).
    """
    from surgery.buckets import apply_buckets

    try:
        result = apply_buckets(
            args.model,
            pipeline,
            args.buckets,
            inputs=args.data,
            verify=args.verify,
            output=output,
            reproducer_dir=repro,
            progress=flags.progress_printer(args),
            soc_version=args.soc,
            write_plan=plan,
            gates=getattr(args, "gates", ()),
        )
    except GateError as exc:
        plan.abort()
        if exc.report is not None and not args.quiet:
            print(exc.report.table(), file=sys.stderr if args.report == "-" else sys.stdout)
        raise
    for run in result.runs:
        run.report.source = str(args.model)
    if args.report and args.report != "-":
        plan.transaction.add_text(
            Path(args.report), json.dumps(result.to_dict(source=str(args.model)), indent=2) + "\n"
        )
    if getattr(args, "html", None):
        from surgery.html_report import GraphSummary, render

        plan.transaction.add_text(
            args.html,
            render(
                [run.report for run in result.runs],
                before=before,
                afters=[GraphSummary.of(run.model) for run in result.runs],
                labels=[run.label for run in result.runs],
                title=f"surgery apply {args.model.name} (buckets)",
            ),
        )
    plan.commit()
    if args.report == "-":
        print(json.dumps(result.to_dict(source=str(args.model)), indent=2))
    for run in result.runs:
        if not args.quiet and args.report != "-":
            print(
                f"== bucket {run.label} ({', '.join(f'{k}={v}' for k, v in run.binding.items())}) -> {run.output}"
            )
            print(run.report.table())
        print_atc(run.report, file=sys.stderr if args.report == "-" else None)
    if result.gears is not None and not args.quiet and args.report != "-":
        kind = "dynamic batch" if result.gears.dynamic_batch_size else "dynamic dims"
        print(f"== single-model alternative (ATC {kind} gears):")
        print(f"atc: {result.gears.line()}")
    return 0
