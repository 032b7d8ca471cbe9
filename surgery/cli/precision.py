"""``surgery precision MODEL``: what ATC's float16 precision mode will compute, and what to keep in float32.

Runs the model as the mode would (node by node, beside the float32 reference, see
:mod:`surgery.precision.emulate`), prints the per-output float16 error and the tensors that overflow,
flush to zero or first break tolerance; when the mode breaks tolerance, plans the nodes to keep in
float32, re-checks the plan, writes the ``--keep_dtype`` file (``--keep-dtype FILE``) and prints the
atc line with the precision flags. Exit 1 when the mode as asked breaks tolerance, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from surgery.cli import flags

__all__ = ["register", "run"]

KEEP_DTYPE_PLACEHOLDER = "<KEEP_DTYPE_FILE: rerun with --keep-dtype FILE>"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "precision",
        help="emulate ATC's float16 precision mode; name overflows; plan a --keep_dtype list",
        description="Emulate ATC's precision mode (float16 by default on the inference SoCs) node by node beside "
        "the float32 reference; name the tensors that overflow float16, flush to zero or first break tolerance; "
        "plan the nodes to keep in float32 and print the atc line.",
    )
    p.add_argument("model", type=Path)
    flags.add_data(p)
    p.add_argument(
        "--samples", type=int, default=2, help="generated samples when no --data (default 2)"
    )
    p.add_argument("--soc", metavar="SOC", help="Ascend SoC for the atc line (e.g. Ascend310P3)")
    p.add_argument(
        "--mode",
        default="fp16",
        choices=["fp16", "mixed_float16", "origin"],
        help="the precision mode to emulate (default fp16, ATC's default on inference SoCs)",
    )
    p.add_argument(
        "--precision-flag",
        choices=["precision_mode", "precision_mode_v2"],
        default="precision_mode",
        help="which ATC flag the atc line uses (they cannot be combined; default precision_mode)",
    )
    p.add_argument(
        "--keep-dtype",
        type=Path,
        metavar="FILE",
        help="write the --keep_dtype file of the plan here",
    )
    p.add_argument(
        "--report", metavar="FILE", help="write the full diagnosis as JSON ('-' prints it instead)"
    )
    p.add_argument(
        "--rtol",
        type=float,
        default=1e-2,
        help="relative tolerance, of each tensor's range (default 1e-2)",
    )
    p.add_argument("--atol", type=float, default=1e-3, help="absolute tolerance (default 1e-3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surgery import model_io
    from surgery.atc import atc_command, precision_flags
    from surgery.errors import InputError
    from surgery.pass_base import Tolerance
    from surgery.precision import check_precision, keep_dtype_text, make_samples
    from surgery.writeplan import WritePlan

    report_path = Path(args.report) if args.report and args.report != "-" else None
    out = sys.stderr if args.report == "-" else sys.stdout
    if args.samples < 1:
        raise InputError("--samples must be at least 1")
    model = model_io.load(args.model)
    # every file written is checked against every file read before the (long) emulation runs
    plan = args.write_plan = WritePlan()
    plan.read_model(model, args.model)
    plan.read(args.data, "the input arrays (--data)")
    plan.write(args.keep_dtype, "the keep_dtype file (--keep-dtype)")
    plan.write(report_path, "the JSON report (--report)")
    samples = make_samples(model, data=str(args.data) if args.data else None, samples=args.samples)
    report = check_precision(
        model, samples, mode=args.mode, tolerance=Tolerance(args.rtol, args.atol)
    )
    for line in report.lines():
        print(line, file=out)
    keep_file: str | None = None
    if report.keep_dtype:
        if args.keep_dtype is not None:
            plan.transaction.add_text(args.keep_dtype, keep_dtype_text(report.keep_dtype))
            keep_file = str(args.keep_dtype)
            print(
                f"keep_dtype: {len(report.keep_dtype)} line(s) written to {args.keep_dtype}",
                file=out,
            )
        else:
            keep_file = KEEP_DTYPE_PLACEHOLDER
            print(
                "keep_dtype: "
                + " | ".join(report.keep_dtype)
                + " (not written: give --keep-dtype FILE)",
                file=out,
            )
    v2 = args.precision_flag == "precision_mode_v2"
    command = atc_command(
        model,
        args.model,
        soc_version=args.soc,
        precision=precision_flags(args.mode, keep_file, v2=v2),
    )
    print(f"atc: {command.line()}", file=out)
    text = ""
    if args.report:
        data = {**report.to_dict(), "model": str(args.model), "atc": command.to_dict()}
        text = json.dumps(data, indent=1) + "\n"
        if report_path is not None:
            plan.transaction.add_text(report_path, text)
    plan.commit()
    if args.report and report_path is None:
        sys.stdout.write(text)
    return 0 if report.ok else 1
