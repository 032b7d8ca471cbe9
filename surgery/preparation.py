"""``prepare``: one call from an exported model to a compiler-ready one.

What a user would otherwise do by hand, in four commands and an edit: ``surgery doctor`` on the
export, ``--emit-pipeline``, fill in the decisions only the user can make (static sizes of dynamic
dims, values of inputs that select a branch), ``surgery apply`` with every gate, and ``surgery
doctor`` again on the result. :func:`prepare` does exactly that, with the decisions given as
arguments. It never guesses a decision: where one is needed and missing it raises
:class:`~surgery.errors.InputError` before anything is written, naming the flag to add and the value
it would have guessed, because a guessed batch size or sample rate silently becomes the deployed one.

The pipeline it ran is written beside the output (``OUT.passes.toml``) so the run can be repeated
with ``surgery apply`` and edited. The target compiler is data (:data:`TARGETS`): Ascend's ATC today.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from surgery.errors import InputError, PipelineError
from surgery.graph import value_names
from surgery.report import Report

if TYPE_CHECKING:
    from surgery.pipeline import Mode

__all__ = [
    "TARGETS",
    "Decision",
    "PrepareResult",
    "describe_decisions",
    "pending_decisions",
    "pipeline_path",
    "prepare",
]

#: Compilers prepare knows: the doctor's facts and the command it prints are per target.
TARGETS: tuple[str, ...] = ("ascend",)


@dataclasses.dataclass(frozen=True)
class Decision:
    """A decision the user must make before the model can be made static: which flag, which guess."""

    input: str
    flag: str
    guess: str
    why: str

    def describe(self) -> str:
        return f"input '{self.input}' {self.why}: add {self.flag} {_shell_word(self.guess)}"


@dataclasses.dataclass
class PrepareResult:
    """What :func:`prepare` did: the result model, the apply report, and the doctor before and after."""

    model: ir.Model | None
    report: Report
    before: Any
    after: Any
    pipeline_text: str
    pipeline_file: Path | None
    outputs: list[Path]
    runs: list[Any] = dataclasses.field(default_factory=list)
    gear_command: Any = None
    """With ``buckets``: ATC's single-model alternative (``--dynamic_batch_size`` or
    ``--dynamic_dims`` gears), given only when every gear was built and verified as its own model."""

    @property
    def ready(self) -> bool:
        """True when the final doctor finds nothing that will fail and, when a precision mode was
        emulated, the mode (or its keep-list) meets tolerance."""
        if any(after.will_fail for after in self._afters()):
            return False
        return all(p.get("ok") or p.get("plan_ok") for p in self.precision())

    def precision(self) -> list[dict[str, Any]]:
        """The ``precision-plan`` verdict of each output (empty when no precision mode was asked for)."""
        reports = [run.report for run in self.runs] if self.runs else [self.report]
        found = [r.models.get("precision-plan") for r in reports]
        return [dict(p) for p in found if isinstance(p, Mapping)]

    def _afters(self) -> list[Any]:
        return self.after if isinstance(self.after, list) else [self.after]

    @property
    def exit_code(self) -> int:
        return 0 if self.ready else 1

    def remaining(self) -> list[Any]:
        """Findings the final doctor still reports (every severity), worst first, without repeats."""
        seen: set[tuple[str, str]] = set()
        out = []
        for after in self._afters():
            for finding in after.findings:
                key = (finding.check, finding.title)
                if key not in seen:
                    seen.add(key)
                    out.append(finding)
        return out

    def summary(self) -> str:
        """A short text: what changed, what is left, and the compiler command of each output."""
        lines: list[str] = []
        reports = [run.report for run in self.runs] if self.runs else [self.report]
        for report in reports:
            changed = [s.name for s in report.steps if s.modified]
            initial, final = (
                report.initial,
                (report.steps[-1].after if report.steps else report.initial),
            )
            label = report.extra.get("bucket", {}).get("label")
            head = f"[{label}] " if label else ""
            if initial is not None and final is not None:
                lines.append(
                    f"{head}nodes {initial.nodes} -> {final.nodes}, dynamic dims {initial.dynamic_dims} -> "
                    f"{final.dynamic_dims}; passes that changed the model: {', '.join(changed) or 'none'}"
                )
        before = self.before
        lines.append(
            "doctor before: " + ", ".join(f"{n} {s}" for s, n in before.counts().items() if n)
            if any(before.counts().values())
            else "doctor before: no findings"
        )
        left = self.remaining()
        if not left:
            lines.append("doctor after: no findings")
        for finding in left:
            lines.append(f"doctor after: {finding.severity.value}: {finding.title}")
        lines.extend(self._precision_lines())
        if self.pipeline_file is not None:
            lines.append(
                f"wrote {self.pipeline_file} (the pipeline that ran: repeat or edit it with surgery apply)"
            )
        if self.ready:
            lines.append("ready for ATC")
        elif any(after.will_fail for after in self._afters()):
            lines.append("NOT ready: the final doctor finds what will fail (above)")
        else:
            lines.append("NOT ready: float16 breaks tolerance and no keep-list fixes it (above)")
        return "\n".join(lines)

    def _precision_lines(self) -> list[str]:
        planned = self.precision()
        if not planned:
            return [
                "precision: not emulated (ATC computes in float16 by default: add --precision fp16 to "
                "check it and plan a --keep_dtype list)"
            ]
        lines = []
        reports = [run.report for run in self.runs] if self.runs else [self.report]
        for report, verdict in zip(reports, planned, strict=False):
            label = report.extra.get("bucket", {}).get("label")
            head = f"[{label}] " if label else ""
            step = next((st for st in report.steps if st.name == "precision-plan"), None)
            stats = step.stats if step is not None else {}
            keep = list(verdict.get("keep_dtype") or [])
            if verdict.get("ok"):
                lines.append(
                    f"{head}precision ({verdict.get('mode')}): meets tolerance, nothing to keep in float32"
                )
            elif verdict.get("plan_ok"):
                lines.append(
                    f"{head}precision ({verdict.get('mode')}): breaks tolerance "
                    f"({stats.get('overflows', 0)} overflow(s)); keeping {stats.get('keep_fp32', len(keep))} "
                    f"node(s) in float32 meets it: {report.artifacts.get('keep_dtype', 'keep_dtype')}"
                )
            else:
                lines.append(
                    f"{head}precision ({verdict.get('mode')}): breaks tolerance "
                    f"({stats.get('overflows', 0)} overflow(s)) and the keep-list does not fix it: "
                    "see the precision-plan notes (surgery precision OUT --report - for the details)"
                )
        return lines

    def atc_lines(self) -> list[str]:
        reports = [run.report for run in self.runs] if self.runs else [self.report]
        lines = [
            c["command"]
            for report in reports
            for c in report.extra.get("atc", [])
            if c.get("command")
        ]
        if self.gear_command is not None:
            lines.append(self.gear_command.line())
        return lines


def pipeline_path(output: str | os.PathLike) -> Path:
    """``out.onnx`` → ``out.passes.toml``: where prepare writes the pipeline it ran."""
    out = Path(output)
    return out.with_name(f"{out.stem}.passes.toml")


def _shell_word(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _dim_label(dim: Any, axis: int) -> str:
    from surgery.shapes.dims import dim_name

    return dim_name(dim) or f"dim {axis}"


def pending_decisions(
    model: ir.Model,
    doctor_report: Any,
    *,
    input_shapes: Mapping[str, Sequence[int]],
    pins: Mapping[str, Any],
    bucket_keys: Sequence[str] = (),
) -> list[Decision]:
    """The decisions still missing: dynamic dims without a shape, branch-selecting inputs without a pin.

    ``bucket_keys`` are dim names (``batch``) or input axes (``x[0]``) that ``--buckets`` decides.
    """
    from surgery.doctor.pipeline import decide_shapes
    from surgery.shapes.dims import is_known_dim
    from surgery.shapes.spec import format_atc_shapes

    decisions: list[Decision] = []
    guessed, _notes, undecided = decide_shapes(
        model, None, {k: list(v) for k, v in input_shapes.items()}, list(pins)
    )
    keys = set(bucket_keys)
    for value in model.graph.inputs:
        name = value.name or ""
        if value.const_value is not None or name in pins or name in input_shapes:
            continue
        if name in undecided or value.shape is None:
            decisions.append(
                Decision(name, "--input-shape", f"{name}:<full shape>", "has no shape in the model")
            )
            continue
        open_dims = []
        for axis, dim in enumerate(value.shape):
            if is_known_dim(dim):
                continue
            label = _dim_label(dim, axis)
            if label in keys or f"{name}[{axis}]" in keys:
                continue
            open_dims.append(label)
        if open_dims:
            guess = (
                format_atc_shapes({name: guessed.get(name, [])})
                if name in guessed
                else f"{name}:<shape>"
            )
            decisions.append(
                Decision(name, "--input-shape", guess, f"has dynamic dims ({', '.join(open_dims)})")
            )
    for finding in doctor_report.findings:
        # an If on an input's value (a sample rate, a mode flag): the deployed value is the user's to say
        if "pin-inputs" not in finding.fix:
            continue
        names = finding.details.get("pinnable") or finding.details.get("inputs") or []
        compared = finding.details.get("compared_with") or []
        for name in names:
            if name in pins or any(d.input == name and d.flag == "--pin" for d in decisions):
                continue
            text = f"{name}={compared[0]}" if compared else f"{name}=<value>"
            decisions.append(Decision(name, "--pin", text, f"selects a branch ({finding.title})"))
    return decisions


def describe_decisions(decisions: Sequence[Decision]) -> str:
    """One line for all missing decisions: shapes joined into one ``--input-shape``, one ``--pin`` each."""
    shapes = [d for d in decisions if d.flag == "--input-shape"]
    parts = []
    if shapes:
        why = "; ".join(f"input '{d.input}' {d.why}" for d in shapes)
        spec = ";".join(d.guess for d in shapes)
        parts.append(
            f"{why}: add --input-shape {_shell_word(spec)} (the sizes prepare would guess: check them)"
        )
    for d in decisions:
        if d.flag != "--input-shape":
            parts.append(d.describe())
    return "; ".join(parts)


def _extra_steps(names: Sequence[str], sets: Sequence[str]) -> list[Any]:
    """Steps for ``--pass`` names, with their ``--set NAME.KEY=VALUE`` options."""
    from surgery import registry
    from surgery.options import did_you_mean
    from surgery.pipeline import Step, parse_set

    tables: list[dict[str, Any]] = []
    for name in names:
        registry.get(name)  # the unknown-pass error, with its did-you-mean
        tables.append({"name": name})
    for assignment in sets:
        step, key, value = parse_set(assignment)
        targets = [t for t in tables if t["name"] == step]
        if not targets:
            raise PipelineError(
                f"--set {assignment}: no --pass named '{step}'{did_you_mean(step, list(names))}"
            )
        if key in ("name", "verify"):
            raise PipelineError(f"--set {assignment}: '{key}' is not a pass option")
        for table in targets:
            table[key] = value
    # relative paths stay as given: the written file is read from OUT's folder, as before
    return [
        Step(registry.get(t["name"])(**{k: v for k, v in t.items() if k != "name"})) for t in tables
    ]


def _compose_text(
    emitted: Any,
    pins: Mapping[str, Any],
    data: Path | None,
    header: str,
    *,
    plugins: Sequence[Path] = (),
    extra: Sequence[Any] = (),
    last: Any = None,
) -> str:
    """The emitted pipeline with the user's pins first, the ``--pass`` steps and the ``last`` step
    (``precision-plan``) after it, and the parity data named, as one TOML text."""
    from surgery import registry
    from surgery.pipeline import Pipeline, Step
    from surgery.verify.inputs import InputsConfig

    steps: list[Any] = []
    notes: dict[int, list[str]] = {}

    def section(
        lines: Sequence[str], new: Sequence[Any], inner: Mapping[int, Sequence[str]] | None = None
    ) -> None:
        at = notes.setdefault(len(steps), [])
        while at and at[-1] == "":
            at.pop()
        if at and lines:  # one empty line after the notes of the section before (optional fixes)
            at.append("")
        at += lines
        for i, more in (inner or {}).items():
            notes.setdefault(len(steps) + i, []).extend(more)
        steps.extend(new)

    if pins:
        pin = Step(registry.get("pin-inputs")(values=dict(pins)))
        section(["pins given on the command line (--pin): these inputs become constants"], [pin])
    doctored = emitted.pipeline.steps if emitted.pipeline is not None else []
    section([], doctored, emitted.notes)
    if extra:
        section(["passes given on the command line (--pass)"], extra)
    if last is not None:
        section(
            ["what ATC computes in its float16 mode (--precision): the float32 keep-list"], [last]
        )
    pipeline = Pipeline(steps, inputs=InputsConfig(data=data), plugins=tuple(plugins))
    lines = [header, *emitted.header]
    if plugins:
        lines.append(
            "plug-ins given with --plugin: replaying this file runs their code only with --allow-code"
        )
    return pipeline.to_toml(header=lines, notes={i: n for i, n in notes.items() if n})


#: The ATC precision modes prepare can emulate (``origin`` computes as the model says: nothing to plan).
PRECISION_MODES: tuple[str, ...] = ("fp16", "mixed_float16")


def _precision_step(mode: str, flag: str, data: str | os.PathLike | None) -> Any:
    """The last ``precision-plan`` step of the composed pipeline (on the parity data, when given)."""
    from surgery import registry
    from surgery.pipeline import Step

    if mode not in PRECISION_MODES:
        raise InputError(f"--precision: expected one of {', '.join(PRECISION_MODES)}, got {mode!r}")
    if flag not in ("precision_mode", "precision_mode_v2"):
        raise InputError(
            f"--precision-flag: expected precision_mode or precision_mode_v2, got {flag!r}"
        )
    options: dict[str, Any] = {"mode": mode, "flag": flag}
    if data is not None:
        options["data"] = str(Path(data).resolve())
    return Step(registry.get("precision-plan")(**options))


def _late_findings(after: Any, pipeline: Any) -> list[Any]:
    """Will-fail findings of the result whose fix is a registered pass the pipeline did not run."""
    from surgery import registry
    from surgery.doctor.pipeline import USER_DECISION_PASSES

    ran = {step.name for step in pipeline.steps}
    known = set(registry.names())
    late = []
    for finding in after.findings:
        if finding.severity.value != "will-fail":
            continue
        fixes = [name for name in finding.fix if name not in ran]
        if fixes and all(name in known and name not in USER_DECISION_PASSES for name in fixes):
            late.append(finding)
    return late


def prepare(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    input_shapes: Mapping[str, Sequence[int]] | str | None = None,
    pins: Mapping[str, Any] | None = None,
    soc: str | None = None,
    buckets: str | Mapping[str, Any] | None = None,
    data: str | os.PathLike | None = None,
    verify: Mode | None = None,
    target: str = "ascend",
    progress: Callable[[str], None] | None = None,
    write_pipeline: bool = True,
    write_plan: Any = None,
    precision: str | None = None,
    precision_flag: str = "precision_mode",
    extra_passes: Sequence[str] = (),
    sets: Sequence[str] = (),
    plugins: Sequence[str | os.PathLike] = (),
    on_loaded: Callable[[ir.Model], None] | None = None,
    allow_code: bool = False,
) -> PrepareResult:
    """From an exported model to a compiler-ready one: doctor → pipeline → gated apply → doctor.

    Args:
        model: the exported ``.onnx`` file (never modified).
        output: where the result goes (``OUT.batchN.onnx`` per bucket with ``buckets``).
        input_shapes: static shapes for dynamic inputs (``"x:1,3,224,224;y:1,10"`` or a mapping).
        pins: values for inputs that must become constants (e.g. ``{"sr": 16000}``).
        soc: the Ascend SoC (``Ascend310P3``): the doctor's AICPU check and the atc command use it.
        buckets: one static model per size (``"batch=1,4,8"``) instead of one shape.
        data: an ``.npz`` of parity inputs.
        verify: ``"each"`` (default), ``"end"`` or ``"off"``.
        target: the compiler (only ``"ascend"`` today).
        precision: an ATC precision mode to emulate last (``"fp16"``, ``"mixed_float16"``): a
            ``precision-plan`` step runs on the prepared model, its float32 keep-list is written as
            ``OUT.keep_dtype.txt`` and the atc line carries the precision flags; the model is ready
            only when the mode, or the mode with its keep-list, meets tolerance.
        precision_flag: ``"precision_mode"`` or ``"precision_mode_v2"`` for the atc line.
        extra_passes: registered pass names to run after the doctor's fixes (``--pass``).
        sets: ``NAME.KEY=VALUE`` options of those passes (``--set``).
        plugins: plug-in files already imported by the caller (``--plugin``, the opt-in to run their
            code): named in ``OUT.passes.toml`` so that a replay loads them (with ``--allow-code``).
        on_loaded: called with the input model once loaded, before any pass changes it (the HTML
            report's graph diff takes its summary there).
        allow_code: let the ``extra_passes`` import the code their options name (``--allow-code``).
        write_plan: the caller's :class:`surgery.writeplan.WritePlan` (the CLI's, which adds its
            report and commits); without it the run checks and commits its own files. Either way the
            outputs and ``OUT.passes.toml`` are checked against every input before the run and
            appear together.

    Raises:
        InputError: a decision is missing (the message names the flag and the guess), or bad input.
        GateError: a gate failed (exit 1).
    """
    from surgery import api, model_io
    from surgery.doctor import diagnose, emit_pipeline
    from surgery.pipeline import Pipeline
    from surgery.shapes.spec import parse_bucket_spec, parse_shapes

    say = progress or (lambda message: None)
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    model_path, out = Path(model), Path(output)
    shapes = dict(parse_shapes(input_shapes, where="--input-shape")) if input_shapes else {}
    pins = dict(pins or {})
    bucket_spec = parse_bucket_spec(buckets, where="--buckets") if buckets else {}
    say(f"loading {model_path}")
    ir_model = model_io.load(model_path)
    if on_loaded is not None:
        on_loaded(ir_model)
    from surgery.writeplan import WritePlan

    plan = write_plan if write_plan is not None else WritePlan()
    plan.set_model(ir_model, model_path)
    plan.read(data, "the input arrays (--data)")
    if not bucket_spec:
        plan.write_model(out)
    if write_pipeline:
        plan.write(pipeline_path(out), "the pipeline it ran")
    repro = out.with_name(out.name + ".repro")
    plan.reproducer(repro, explicit=False, role="the reproducer folder")
    names = value_names(ir_model.graph.inputs)
    for given, flag in ((shapes, "--input-shape"), (pins, "--pin")):
        unknown = [n for n in given if n not in names]
        if unknown:
            from surgery.options import did_you_mean

            raise InputError(
                f"{flag}: no input named '{unknown[0]}'{did_you_mean(unknown[0], names)}; the inputs are {', '.join(names)}"
            )
    say("doctor: checking the export")
    before = diagnose(ir_model, soc=soc)
    before.model = str(model_path)
    missing = pending_decisions(
        ir_model, before, input_shapes=shapes, pins=pins, bucket_keys=list(bucket_spec)
    )
    if missing:
        raise InputError(
            "a decision is needed before anything is written: " + describe_decisions(missing)
        )
    header = (
        f"written by `surgery prepare` for {model_path.name}"
        + (f" (SoC {soc})" if soc else "")
        + f"; repeat with: surgery apply {pipeline_path(out).name} MODEL -o OUT"
    )
    plugin_paths = [Path(p).resolve() for p in plugins]
    extra = _extra_steps(list(extra_passes), list(sets))
    # last: the plan is made on the model ATC will compile
    last = _precision_step(precision, precision_flag, data) if precision is not None else None

    def compose(findings_report: Any, source: ir.Model) -> tuple[str, Any]:
        # the pinned inputs are decided: drop them from what fix-shapes must cover
        emitted = emit_pipeline(
            findings_report,
            source,
            input_shapes={k: list(v) for k, v in shapes.items()},
            pinned=list(pins),
        )
        if emitted.problems:
            raise PipelineError(
                f"the pipeline for this model cannot be completed: {emitted.problems[0]}"
            )
        text = _compose_text(
            emitted,
            pins,
            Path(data).resolve() if data else None,
            header,
            plugins=plugin_paths,
            extra=extra,
            last=last,
        )
        # the plug-ins were named by the caller (the opt-in); nothing else in this text is code
        pipeline = Pipeline.from_toml(
            text, base_dir=out.parent, allow_code=bool(plugin_paths) or allow_code
        )
        if bucket_spec:
            pipeline.buckets = dict(bucket_spec)
        return text, pipeline

    text, pipeline = compose(before, ir_model)
    steps = ", ".join(s.name for s in pipeline.steps) or "none"
    say(f"apply: {len(pipeline.steps)} pass(es): {steps}")
    outputs: list[Path] = []
    runs: list[Any] = []
    gear_command: Any = None
    if bucket_spec:
        from surgery.buckets import apply_buckets

        result = apply_buckets(
            model_path,
            pipeline,
            None,
            inputs=data,
            verify=verify,
            output=out,
            reproducer_dir=repro,
            progress=say,
            soc_version=soc,
            write_plan=plan,
        )
        runs = list(result.runs)
        gear_command = result.gears
        report = runs[0].report
        result_model = None
        afters = []
        for run in runs:
            outputs += [Path(p) for p in run.report.outputs]
            say(f"doctor: checking {run.output}")
            after = diagnose(run.model, soc=soc)
            after.model = str(run.output)
            afters.append(after)
        after_report: Any = afters
    else:
        from surgery.api import stage_outputs

        result_model, report = api.apply(
            ir_model, pipeline, inputs=data, verify=verify, reproducer_dir=repro, progress=say
        )
        say(f"doctor: checking {out}")
        after_report = diagnose(result_model, soc=soc)
        # a finding the export hid (e.g. a Focus block the doctor sees only once shapes are static):
        # its fix joins the pipeline and the whole run starts again from the export, gated as before
        found_late = _late_findings(after_report, pipeline)
        if found_late:
            say(
                "doctor: the result needs "
                + ", ".join(sorted({n for f in found_late for n in f.fix}))
                + "; running again from the export with it"
            )
            fresh = model_io.load(model_path)
            text, pipeline = compose(
                dataclasses.replace(before, findings=[*before.findings, *found_late]), fresh
            )
            say(
                f"apply: {len(pipeline.steps)} pass(es): {', '.join(s.name for s in pipeline.steps)}"
            )
            result_model, report = api.apply(
                fresh, pipeline, inputs=data, verify=verify, reproducer_dir=repro, progress=say
            )
            say(f"doctor: checking {out}")
            after_report = diagnose(result_model, soc=soc)
        stage_outputs(plan, result_model, report, out, soc)
        report.source = str(model_path)
        outputs = [Path(p) for p in report.outputs]
        after_report.model = str(out)
    pipeline_file: Path | None = None
    if write_pipeline:
        pipeline_file = pipeline_path(out)
        plan.transaction.add_text(pipeline_file, text)
    if write_plan is None:
        plan.commit()
    return PrepareResult(
        model=result_model,
        report=report,
        before=before,
        after=after_report,
        pipeline_text=text,
        pipeline_file=pipeline_file,
        outputs=outputs,
        runs=runs,
        gear_command=gear_command,
    )
