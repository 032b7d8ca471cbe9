"""``surgery prepare MODEL -o OUT``: the one command from an exported model to a compiler-ready one.

doctor → the pipeline it would emit, completed with ``--input-shape`` and ``--pin`` → apply with every
gate → doctor on the result → a summary and the atc command of each output. Exit 0 when the final
doctor finds nothing that will fail, 1 when it does (or a gate failed), 2 when a decision is missing
(the message names the flag to add and the value it would guess) or the input is bad.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from surgery.cli import flags
from surgery.writeplan import output_arg

__all__ = ["parse_pins", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="one command from an export to a compiler-ready model: doctor, fix, verify, doctor again",
        description="Diagnose MODEL for the target compiler, build the pipeline that fixes what can be fixed "
        "(with the shapes and pins you give), run it with every gate, diagnose the result and print the atc "
        "command. Writes OUT and OUT.passes.toml (the pipeline that ran). Exit 0 when nothing will fail, 1 "
        "when something will (or a gate failed), 2 when a decision is missing or the input is bad.",
    )
    p.add_argument("model", type=Path, help="the exported .onnx model (never modified)")
    p.add_argument(
        "-o",
        "--output",
        type=output_arg,
        required=True,
        help="where to write the compiler-ready model",
    )
    p.add_argument(
        "--input-shape",
        metavar="SPEC",
        help="static shapes of dynamic inputs: 'x:1,3,224,224;y:1,10' (ATC), onnxsim or Polygraphy syntax",
    )
    p.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="make an input a constant (repeatable): sr=16000, mask=[[1,0]] (VALUE is TOML)",
    )
    flags.add_soc(p, what="the doctor's AICPU check and the atc line", old="--soc-version")
    p.add_argument(
        "--buckets", metavar="SPEC", help='one static model per size, e.g. "batch=1,4,8"'
    )
    flags.add_data(p, old="--inputs")
    flags.add_verify(p, old_off="--no-verify")
    flags.add_report(p, what="the run (with -, instead of the summary)")
    flags.add_html(p)
    p.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        type=Path,
        metavar="FILE.py",
        help="import FILE.py and register the passes it defines (repeatable; naming it is the opt-in); "
        "run them with --pass",
    )
    p.add_argument(
        "--pass",
        dest="extra_passes",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="also run these registered passes (a plug-in's, or built-in ones) after the fixes the "
        "doctor chose (repeatable; options with --set)",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PASS.KEY=VALUE",
        help="an option of a --pass step (PASS is its name); VALUE is TOML",
    )
    p.add_argument(
        "--allow-code",
        action="store_true",
        help="let a --pass step import the Python code its options name (e.g. rewrite's rules module)",
    )
    p.add_argument(
        "--precision",
        choices=("fp16", "mixed_float16"),
        metavar="MODE",
        help="emulate ATC's float16 mode (fp16 or mixed_float16) on the result, plan the nodes to keep in "
        "float32 (OUT.keep_dtype.txt) and put the precision flags on the atc line",
    )
    p.add_argument(
        "--precision-flag",
        choices=("precision_mode", "precision_mode_v2"),
        default="precision_mode",
        help="which ATC flag the atc line uses for --precision (default precision_mode)",
    )
    p.add_argument(
        "--target", default="ascend", help="the compiler (default and only one today: ascend)"
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print only the atc command lines",
    )
    flags.add_progress(p)
    p.set_defaults(func=run)


def parse_pins(items: list[str]) -> dict[str, Any]:
    """``["sr=16000", "mask=[[1,0]]"]`` → ``{"sr": 16000, "mask": [[1, 0]]}`` (values read as TOML)."""
    from surgery.errors import PipelineError

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    pins: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name or not raw.strip():
            raise PipelineError(
                f"--pin {item}: expected NAME=VALUE (e.g. sr=16000 or mask=[[1,0]])"
            )
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            raise PipelineError(
                f"--pin {item}: the value must be a number or a list of numbers"
            ) from None
        if isinstance(value, (str, dict, bool)):
            raise PipelineError(f"--pin {item}: the value must be a number or a list of numbers")
        if name in pins:
            raise PipelineError(f"--pin {name}: given twice")
        pins[name] = value
    return pins


def run(args: argparse.Namespace) -> int:
    from surgery import registry
    from surgery.errors import GateError
    from surgery.preparation import prepare
    from surgery.writeplan import WritePlan, output_or_stdout

    pins = parse_pins(args.pin)
    for path in args.plugins:  # naming a plug-in on the command line is the opt-in to run it
        registry.load_plugin(path)
    extra = [name.strip() for item in args.extra_passes for name in item.split(",") if name.strip()]
    plan = args.write_plan = WritePlan(hint="prepare never overwrites its input")
    report_path = output_or_stdout(args.report, "--report")
    plan.write(report_path, "the report (--report)")
    plan.write(args.html, "the HTML report (--html)")
    before: dict[str, Any] = {}
    try:
        result = prepare(
            args.model,
            args.output,
            input_shapes=args.input_shape,
            pins=pins,
            soc=args.soc,
            buckets=args.buckets,
            data=args.data,
            verify=args.verify,
            target=args.target,
            progress=_prepare_progress(args),
            write_plan=plan,
            extra_passes=extra,
            sets=args.sets,
            plugins=args.plugins,
            allow_code=args.allow_code,
            on_loaded=(lambda m: before.update(graph=_summary(m))) if args.html else None,
            precision=args.precision,
            precision_flag=args.precision_flag,
        )
    except GateError as exc:
        plan.abort()
        if exc.report is not None and not args.quiet:
            print(exc.report.table(), file=sys.stderr)
        raise
    if args.report == "-":
        print(json.dumps(_report_dict(result, args.model), indent=2))
    else:
        if not args.quiet:
            print(
                result.report.table()
                if not result.runs
                else "\n".join(r.report.table() for r in result.runs)
            )
            print(result.summary())
        if report_path is not None:
            plan.transaction.add_text(
                report_path, json.dumps(_report_dict(result, args.model), indent=2) + "\n"
            )
    if args.html:
        from surgery.html_report import render

        reports = [run.report for run in result.runs] if result.runs else [result.report]
        models = [run.model for run in result.runs] if result.runs else [result.model]
        plan.transaction.add_text(
            args.html,
            render(
                reports,
                before=before.get("graph"),
                afters=[_summary(m) for m in models],
                labels=[run.label for run in result.runs] if result.runs else None,
                title=f"surgery prepare {args.model.name}",
                doctor=_doctor_lines(result),
            ),
        )
    plan.commit()
    for line in result.atc_lines():
        print(f"atc: {line}", file=sys.stderr if args.report == "-" else sys.stdout)
    if not result.ready:
        worst = [f for f in result.remaining() if f.severity.value == "will-fail"]
        names = "; ".join(f.title for f in worst[:3])
        print(f"surgery: error: the prepared model is not ready for ATC: {names}", file=sys.stderr)
    return result.exit_code


def _prepare_progress(args: argparse.Namespace) -> Any:
    """prepare prints its stages unless asked not to: it is the command people run by hand and in CI."""
    if args.progress == "auto" and not getattr(args, "quiet", False):
        args.progress = "always"
    return flags.progress_printer(args)


def _summary(model: Any) -> Any:
    from surgery.html_report import GraphSummary

    return GraphSummary.of(model)


def _doctor_lines(result: Any) -> list[str]:
    """What the HTML page says about the doctor before and after (the summary's own lines)."""
    return [
        line
        for line in result.summary().splitlines()
        if line.startswith(("doctor ", "ready", "NOT ready"))
    ]


def _report_dict(result: Any, source: Path) -> dict[str, Any]:
    """The prepare report: the common top-level keys (:func:`surgery.report.envelope`), then doctor and runs."""
    from surgery.report import envelope

    reports = [run.report for run in result.runs] if result.runs else [result.report]
    errors = [r.error for r in reports if r.error]
    single = not result.runs
    head = envelope(
        "prepare",
        source=str(source),
        ok=result.ready,
        error=errors[0] if errors else None,
        outputs=[str(p) for p in result.outputs],
        seconds=sum(r.seconds for r in reports),
        steps=[s.to_dict() for s in result.report.steps] if single else [],
        buckets=[] if single else [run.to_dict() for run in result.runs],
    )
    return {
        **head,
        "ready": result.ready,
        "pipeline": str(result.pipeline_file) if result.pipeline_file else None,
        "outputs": [str(p) for p in result.outputs],
        "doctor_before": result.before.to_dict(),
        "doctor_after": [a.to_dict() for a in result._afters()],
        "runs": [r.to_dict() for r in reports],
        "atc": result.atc_lines(),
        "precision": result.precision(),
    }
