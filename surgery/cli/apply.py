"""``surgery apply PIPELINE.toml MODEL.onnx -o OUT.onnx``: run a verified pipeline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from surgery.cli import flags, static_shapes
from surgery.writeplan import output_arg, output_or_stdout

__all__ = ["graph_summary", "register", "run", "write_html", "write_report"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "apply",
        help="run a passes.toml pipeline on a model, gating every pass",
        description="Run a passes.toml pipeline on a model. Every pass that changes the model is "
        "gated by onnx.checker, an ONNX Runtime load and parity with the original.",
    )
    p.add_argument(
        "pipeline",
        type=Path,
        help="the passes.toml file, or a comma-separated list of pass names (make-static,cleanup)",
    )
    p.add_argument("model", type=Path, help="the input .onnx model")
    p.add_argument(
        "-o",
        "--output",
        type=output_arg,
        help="where to write the result (required unless --in-place)",
    )
    flags.add_report(p)
    flags.add_html(p)
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PASS.KEY=VALUE",
        help="override a pass option (PASS is a pass name or its 1-based position); VALUE is TOML",
    )
    p.add_argument(
        "--input-shape",
        metavar="SPEC",
        help="static input shapes ('x:1,3,224,224;y:1,10', onnxsim or Polygraphy syntax): sets the "
        "pipeline's fix-shapes step, or runs one first",
    )
    p.add_argument(
        "--disable", action="append", default=[], metavar="NAME", help="skip the pass NAME"
    )
    flags.add_verify(p, old_off="--no-verify")
    flags.add_data(p, old="--inputs")
    p.add_argument(
        "--in-place", action="store_true", help="overwrite the input model (and its external data)"
    )
    p.add_argument(
        "--repro",
        type=Path,
        metavar="DIR",
        help="where a failing gate writes its reproducer (default: OUT.repro)",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="do not print the report table (the atc lines are always printed)",
    )
    p.add_argument(
        "--allow-code",
        action="store_true",
        help="run the Python code the pipeline file names (rewrite rule modules, plugins = [...]); "
        "without it such a pipeline is refused",
    )
    p.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        type=Path,
        metavar="FILE.py",
        help="import FILE.py and register the passes and gates (SURGERY_GATES) it defines "
        "(repeatable; naming it is the opt-in)",
    )
    flags.add_progress(p)
    static_shapes.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surgery import api, model_io, registry
    from surgery.errors import GateError, InputError
    from surgery.pipeline import (
        apply_sets,
        is_pass_list,
        load_pipeline,
        pipeline_from_names,
        set_input_shapes,
    )
    from surgery.writeplan import WritePlan

    registry.clear_plugin_gates()
    for plugin in args.plugins:  # naming a plug-in on the command line is the opt-in to run it
        registry.load_plugin(plugin)
    args.gates = (
        registry.plugin_gates()
    )  # gates the plug-ins brought (SURGERY_GATES / register_gate)
    if is_pass_list(str(args.pipeline)):
        pipeline = pipeline_from_names(str(args.pipeline), args.sets)
    else:
        pipeline = load_pipeline(args.pipeline, allow_code=args.allow_code)
        apply_sets(pipeline, args.sets)
    pipeline.disable(args.disable)
    # --allow-code is the opt-in for a pass list too (`apply rewrite --set rewrite.rules=...`), not only a file
    pipeline.allow_code = pipeline.allow_code or args.allow_code
    pipeline.check_code()  # before anything runs; a disabled step needs no opt-in
    if args.input_shape:
        set_input_shapes(pipeline, args.input_shape)
    if args.output is None and not args.in_place:
        raise InputError("give -o OUT.onnx (or --in-place to overwrite the input)")
    output: Path = args.model if args.in_place and args.output is None else args.output
    model = model_io.load(args.model)
    plan = args.write_plan = WritePlan(in_place=args.in_place)
    plan.set_model(model, args.model)
    plan.read_pipeline(pipeline)
    plan.read(args.data, "the input arrays (--data)")
    bucketed = bool(args.buckets or pipeline.buckets)
    if not bucketed:
        plan.write_model(output)
    report_path = output_or_stdout(args.report, "--report")
    html_path: Path | None = args.html
    plan.write(report_path, "the report (--report)")
    plan.write(html_path, "the HTML report (--html)")
    repro = args.repro or output.with_name(output.name + ".repro")
    plan.reproducer(repro, explicit=args.repro is not None)
    before = graph_summary(model) if args.html else None
    if bucketed:
        return static_shapes.run_buckets(args, pipeline, output, repro, plan, before=before)
    try:
        result_model, report = api.apply(
            model,
            pipeline,
            inputs=args.data,
            verify=args.verify,
            output=output,
            reproducer_dir=repro,
            progress=flags.progress_printer(args),
            soc_version=args.soc,
            cann=args.cann,
            in_place=args.in_place,
            write_plan=plan,
            gates=args.gates,
        )
    except GateError as exc:
        plan.abort()  # a failed run writes no model, only the report of the failure
        if exc.report is not None:
            exc.report.source = str(args.model)
            if not args.quiet:
                print(exc.report.table(), file=sys.stderr if args.report == "-" else sys.stdout)
            if args.report:
                _note_warnings(exc.report)
                write_report(report_path, exc.report)
            if html_path is not None:
                write_html(
                    html_path,
                    exc.report,
                    before=before,
                    after=None,
                    title=f"surgery apply {args.model.name}",
                )
        raise
    report.source = str(args.model)
    if args.report:
        _note_warnings(report)
        if report_path is not None:
            report.write_json(plan.transaction.add_file(report_path))
    if html_path is not None:
        from surgery.html_report import render

        plan.transaction.add_text(
            html_path,
            render(
                [report],
                before=before,
                afters=[graph_summary(result_model)],
                title=f"surgery apply {args.model.name}",
            ),
        )
    plan.commit()
    if args.report == "-":
        print(json.dumps(report.to_dict(), indent=2))
    elif not args.quiet:
        print(report.table())
    # -q never hides the compiler command: it is what the run is for (stderr when stdout carries the JSON)
    static_shapes.print_atc(report, file=sys.stderr if args.report == "-" else None)
    return 0


def write_report(path: Path | None, report: Any) -> None:
    """Write one JSON report on its own (after a failure), atomically; None prints it on stdout."""
    from surgery import model_io

    if path is None:
        print(json.dumps(report.to_dict(), indent=2))
        return
    with model_io.Transaction() as tx:
        report.write_json(tx.add_file(path))
        tx.commit()


def write_html(path: Path, report: Any, *, before: Any, after: Any, title: str) -> None:
    """Write the HTML page of a failed run on its own, atomically (the model is not written)."""
    from surgery import model_io
    from surgery.html_report import render

    with model_io.Transaction() as tx:
        tx.add_text(
            path,
            render(
                [report], before=before, afters=[after] if after is not None else [], title=title
            ),
        )
        tx.commit()


def graph_summary(model: Any) -> Any:
    """What the HTML graph diff compares (op types and node signatures), taken before a run changes the model."""
    from surgery.html_report import GraphSummary

    return GraphSummary.of(model)


def _note_warnings(report: Any) -> None:
    """Library warnings stay off stderr (see :mod:`surgery.cli`); the report keeps them."""
    from surgery.cli import captured_warnings

    report.warnings.extend(w for w in captured_warnings() if w not in report.warnings)
