"""``surgery compare A.onnx B.onnx``: layerwise comparison; names the first divergent tensor.

Both models run in ONNX Runtime with their intermediate tensors exposed, matched by name (and
through ``--renamed`` maps recorded by passes). The comparison streams in chunks: per-tensor lines
are printed as they come and ``--report`` is written incrementally; only statistics are kept. Exit
code 0 when every shared tensor is within tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from surgery.cli import flags
from surgery.errors import InputError, one_line
from surgery.shapes.dims import is_static_shape

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two models tensor by tensor and name the first divergent tensor",
        description="Run A (the reference) and B with intermediate tensors exposed, compare every tensor they share "
        "(cosine, max abs, max rel) in A's topological order, and name the first one that breaks tolerance.",
    )
    p.add_argument("a", type=Path, help="the reference model")
    p.add_argument("b", type=Path, help="the model to check")
    p.add_argument(
        "--tail",
        type=Path,
        action="append",
        default=[],
        metavar="TAIL.onnx",
        help="run this model after B, fed B's outputs (B is a split head); repeatable",
    )
    flags.add_data(p, old="--inputs")
    flags.add_pipeline_inputs(p)
    flags.add_report(p, what="every tensor's statistics (streamed)", old="--json")
    p.add_argument(
        "--renamed",
        type=Path,
        action="append",
        default=[],
        metavar="MAP.json",
        help="a JSON object {name in A: name in B} (repeatable, applied in order)",
    )
    flags.add_tolerance(p, rtol=1e-4, atol=1e-5, what="the comparison")
    p.add_argument(
        "--budget-mb",
        type=float,
        default=512.0,
        help="MiB of tensors (both models) per chunk; each chunk is one session and run per model (default 512)",
    )
    p.add_argument(
        "--failures-only", action="store_true", help="print only tensors that break tolerance"
    )
    p.add_argument(
        "--stop-at-first",
        action="store_true",
        help="stop after the chunk holding the first divergence",
    )
    p.set_defaults(func=run)


class _JsonStream:
    """Writes ``{"tensors": [...], "summary": {...}}`` one tensor at a time (into the staging folder)."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.file.write('{"tensors": [\n')
        self.count = 0

    def add(self, record: dict[str, Any]) -> None:
        if self.count:
            self.file.write(",\n")
        self.file.write(json.dumps(record))
        self.count += 1

    def close(self, summary: dict[str, Any]) -> None:
        self.file.write('\n],\n"summary": ' + json.dumps(summary, indent=1) + "}\n")
        if self.file is not sys.stdout:
            self.file.close()


def _renames(paths: list[Path]) -> list[dict[str, str]]:
    maps = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read a rename map: {exc}") from None
        if isinstance(data, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            maps.append(data)
        else:
            raise InputError(
                f'{path}: a rename map must be a JSON object of names {{"old": "new"}}'
            )
    return maps


def _real_inputs(model: Any) -> list[str]:
    return [v.name for v in model.graph.inputs if v.name not in model.graph.initializers]


def _check_inputs(
    a: Any, b: Any, config: Any, hints: Any, args: argparse.Namespace, out: TextIO
) -> None:
    """Refuse to compare models that take different inputs unless the values that differ are known.

    A pass that pins an input (``pin-inputs``) leaves B without it: A must be fed the pinned value,
    or the comparison blames a node for a difference in what the two models were given.
    """
    a_inputs, b_inputs = _real_inputs(a), set(_real_inputs(b))
    extra = [n for n in _real_inputs(b) if n not in set(a_inputs)]
    if extra:
        raise InputError(
            f"{args.b} takes input(s) {', '.join(extra)} that {args.a} does not have: "
            "these are not two versions of one model (or B is a split tail: give it with --tail)"
        )
    known = set(hints.values) | set(config.specs)
    if config.data is not None:
        from surgery.verify.inputs import read_npz

        known |= set(read_npz(config.data))
    pinned = [n for n in a_inputs if n not in b_inputs and n not in known]
    if pinned:
        beside = Path(args.b).with_name(Path(args.b).stem + ".passes.toml")
        hint = (
            f"give --pipeline {beside}"
            if beside.is_file()
            else "give --pipeline PASSES.toml (its pin-inputs values)"
        )
        raise InputError(
            f"input(s) {', '.join(pinned)} of {args.a} are not inputs of {args.b} (pinned or removed by a pass): "
            f"the comparison needs the values B was built with; {hint} or --data with those values"
        )
    for name in a_inputs:
        if name not in b_inputs:
            print(
                one_line(
                    f"input {name}: pinned in {Path(args.b).name}; {Path(args.a).name} is fed the same value"
                ),
                file=out,
            )


def run(args: argparse.Namespace) -> int:
    from surgery import model_io
    from surgery.pass_base import FeedHints, Tolerance
    from surgery.verify.inputs import InputsConfig, plan_inputs
    from surgery.verify.layerwise import compare_layerwise
    from surgery.writeplan import WritePlan, output_or_stdout

    report_path = output_or_stdout(args.report, "--report")
    out = (
        sys.stderr if args.report == "-" else sys.stdout
    )  # stdout carries the JSON with --report -
    a = model_io.load(args.a)
    b_chain = [model_io.load(args.b)] + [model_io.load(t) for t in args.tail]
    writes = args.write_plan = WritePlan()
    writes.read_model(a, args.a, "model A")
    writes.read_model(b_chain[0], args.b, "model B")
    for tail, path in zip(b_chain[1:], args.tail, strict=True):
        writes.read_model(tail, path, "the tail model (--tail)")
    writes.read(args.data, "the input arrays (--data)")
    writes.read(args.pipeline, "the pipeline (--pipeline)")
    for path in args.renamed:
        writes.read(path, "the rename map (--renamed)")
    writes.write(report_path, "the JSON statistics (--report)")
    renamed = _renames(args.renamed)
    inputs_config = InputsConfig(data=args.data)
    hints = FeedHints()
    if args.pipeline is not None:
        from surgery.pipeline import load_pipeline

        pipeline = load_pipeline(args.pipeline)
        inputs_config = InputsConfig(
            specs=pipeline.inputs.specs, data=args.data or pipeline.inputs.data
        )
        for step in pipeline.steps:
            hints.merge(step.pass_.feed_hints(a))
    _check_inputs(a, b_chain[0], inputs_config, hints, args, out)
    # B's static input shapes decide generated shapes, so that a model with fixed shapes runs too
    for v in b_chain[0].graph.inputs:
        if is_static_shape(v.shape) and v.name:
            hints.shapes[v.name] = tuple(int(d) for d in v.shape)
    a_dynamic = {v.name for v in a.graph.inputs if not is_static_shape(v.shape)}
    hints.shapes = {k: s for k, s in hints.shapes.items() if k in a_dynamic}
    plan = plan_inputs(a, inputs_config, hints)
    for name, how in plan.provenance.items():
        print(one_line(f"input {name}: {how}"), file=out)
    tol = Tolerance(args.rtol, args.atol)
    stream = None
    if report_path is not None:
        stream = _JsonStream(writes.transaction.add_file(report_path).open("w", encoding="utf-8"))
    elif args.report == "-":
        stream = _JsonStream(sys.stdout)

    def on_result(entry: Any) -> None:
        if not args.failures_only or not entry.ok:
            print(entry.line(), file=out)
        if stream is not None:
            stream.add(entry.to_dict())

    try:
        report = compare_layerwise(
            a,
            b_chain if len(b_chain) > 1 else b_chain[0],
            plan.feeds,
            tol,
            renamed=renamed or None,
            budget_bytes=int(args.budget_mb * (1 << 20)),
            on_result=on_result,
            stop_at_first=args.stop_at_first,
        )
    except BaseException:
        if stream is not None and stream.file is not sys.stdout:
            stream.file.close()
        writes.abort()  # a comparison that did not finish writes nothing
        raise
    if stream is not None:
        summary = report.to_dict()
        summary.pop("tensors")
        stream.close(summary)
        writes.commit()
    print(report.summary(), file=out)
    if not report.compared:
        raise InputError(
            f"{args.a} and {args.b} share no tensor: nothing was compared (are they versions of one model? "
            "--renamed maps names that changed)"
        )
    return 0 if report.ok else 1
