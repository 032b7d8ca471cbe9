"""``--emit-pipeline``: a ``passes.toml`` that applies the fix of every finding that has one.

Findings that will fail or are slow get their passes; fixes of precision risks and information
findings, and passes that change the deployment (``split-postprocess``), are written commented out
— except the split of an NMS that computes a graph output: that output's shape depends on the
data, so the split (head for the compiler, CPU tail) is written as a step, after ``make-static``.
Where a fix needs a decision only the user can make — the static size of a dynamic dim — the file
uses a stated default with a ``# DECIDE`` comment: batch (dim 0) 1, image height/width 640, any
other dim 128. ``dims`` (by dim name) and ``input_shapes`` (by input) override them.
Only passes the registry knows are written as steps; a needed pass this build lacks is named in a
comment, so the file always loads.

Names come from the model, and the model may come from anywhere: every name is written through
:mod:`surgery.tomlwrite` (escaped strings, comments that no text can end), and the file is checked
to parse into exactly the steps intended, without importing anything (the doctor runs no user code).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir

from surgery.doctor.context import Context
from surgery.doctor.facts import load_facts
from surgery.doctor.finding import DoctorReport, Finding, Severity
from surgery.doctor.fixes import PASS_ORDER, USER_DECISION_PASSES, order_passes
from surgery.pass_base import SurgeryPass
from surgery.pipeline import Pipeline, Step, StepVerify
from surgery.shapes.dims import is_known_dim, is_static_shape
from surgery.tomlwrite import Unrepresentable, plain, string, text_of

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_OTHER",
    "DEFAULT_SPATIAL",
    "EmittedPipeline",
    "decide_shapes",
    "emit_pipeline",
]

logger = logging.getLogger(__name__)

DEFAULT_BATCH = 1
DEFAULT_SPATIAL = 640
DEFAULT_OTHER = 128
#: ``make-static.max_unroll`` written for a model with a Scan (make-static's own default is 64).
SCAN_MAX_UNROLL = 256

_ACTIVE = (Severity.WILL_FAIL, Severity.SLOW)


@dataclasses.dataclass
class EmittedPipeline:
    """The TOML text, the passes written as steps, and anything that kept it from being complete."""

    text: str
    steps: list[str]
    missing: list[str]
    commented: list[str]
    problems: list[str]
    pipeline: Pipeline | None = None
    """The steps as a :class:`~surgery.pipeline.Pipeline`: ``text`` is its ``to_toml`` with ``header`` and ``notes``."""
    header: list[str] = dataclasses.field(default_factory=list)
    notes: dict[int, list[str]] = dataclasses.field(default_factory=dict)


def decide_shapes(
    model: ir.Model,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, list[int]] | None = None,
    pinned: Collection[str] = (),
) -> tuple[dict[str, list[int]], list[str], list[str]]:
    """Static shapes for every dynamic input: (shapes, comments on the decisions, inputs left undecided).

    ``pinned`` inputs become constants before fix-shapes runs (``pin-inputs``): they get no shape.
    A dim tied to the batch (dim 0) of another input — by name or through the graph, e.g. a
    recurrent state's ``[2, batch, 128]`` — gets that input's batch size, not a placeholder.
    """
    from surgery.doctor.batch_dims import batch_dims

    ctx = Context(model, load_facts())
    dims = dict(dims or {})
    input_shapes = dict(input_shapes or {})
    tied = batch_dims(model)
    by_name = {v.name: v for v in model.graph.inputs}

    def batch_of(source: str) -> tuple[int, str]:
        """The batch size the input ``source`` gets at dim 0, and why."""
        if input_shapes.get(source):
            return int(input_shapes[source][0]), "given"
        first = ctx.shape(by_name[source]) if source in by_name else None
        label = first[0] if first else None
        if isinstance(label, str) and label in dims:
            return dims[label], "given"
        return DEFAULT_BATCH, f"default {DEFAULT_BATCH}"

    chosen: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    notes: list[str] = []
    undecided: list[str] = []
    for value in model.graph.inputs:
        if value.const_value is not None or value.name in pinned:
            continue
        name = value.name
        if not name:
            continue  # a graph input always has a name in a valid model
        current = ctx.shape(value)
        if name in input_shapes:
            shapes[name] = list(input_shapes[name])
            notes.append(f"{name}: {shapes[name]} (given)")
            continue
        if current is None:
            undecided.append(name)
            continue
        if is_static_shape(current):
            continue
        shape: list[int] = []
        reasons: list[str] = []
        for i, d in enumerate(current):
            if is_known_dim(d):
                shape.append(d)
                continue
            label = d if isinstance(d, str) else f"dim {i}"
            if isinstance(d, str) and d in dims:
                size, why = dims[d], "given"
            elif isinstance(d, str) and d in chosen:
                size, why = chosen[d], "same name as above"
            elif (name, i) in tied and tied[(name, i)] != name:
                size, given = batch_of(tied[(name, i)])
                why = f"DECIDE: batch, the same dim as dim 0 of '{tied[(name, i)]}' ({given})"
            elif i == 0:
                size, why = (
                    DEFAULT_BATCH,
                    "DECIDE: batch, default 1 (one model per batch size on ATC)",
                )
            elif len(current) == 4 and i in (2, 3):
                size, why = (
                    DEFAULT_SPATIAL,
                    f"DECIDE: image {'height' if i == 2 else 'width'}, default {DEFAULT_SPATIAL}",
                )
            else:
                size, why = (
                    DEFAULT_OTHER,
                    f"DECIDE: no default fits every model, {DEFAULT_OTHER} is a placeholder",
                )
            if isinstance(d, str):
                chosen.setdefault(d, size)
            shape.append(size)
            reasons.append(f"{label}={size} ({why})")
        shapes[name] = shape
        notes.append(f"{name}: {shape} <- " + "; ".join(reasons))
    return shapes, notes, undecided


def _max_standard_opset(ctx: Context) -> int:
    """The newest opset at which the shipped data registers any standard op (18)."""
    return max(
        v for f in ctx.facts.ops["ai.onnx"].values() if f.standard and f.opsets for v in f.opsets
    )


def _convert_target(ctx: Context) -> tuple[int, str]:
    """The highest opset (at most the newest ATC parses) at which ATC registers every ai.onnx op of the model."""
    max_opset = _max_standard_opset(ctx)
    common: set[int] | None = None
    blockers: list[str] = []
    for entry in ctx.entries:
        node = entry.node
        if ctx.calls_function(node):
            continue
        fact = ctx.facts.lookup(node.domain, node.op_type)
        if fact is None or fact.domain != "ai.onnx" or fact.opsets is None:
            continue
        versions = {v for v in fact.opsets if v <= max_opset}
        common = versions if common is None else common & versions
        if not common and not blockers:
            blockers.append(node.op_type)
    if common:
        target = max(common)
        return target, f"the highest opset at which ATC registers every op of the model is {target}"
    return max_opset, (
        f"no single opset registers every op (conflict at {', '.join(blockers) or '?'}); "
        f"{max_opset} is the newest ATC parses"
    )


def _registered() -> tuple[dict[str, type], str | None]:
    try:
        from surgery import registry

        return {cls.name: cls for cls in registry.all_passes()}, None
    except Exception as exc:  # a broken plug-in must not stop the doctor
        logger.warning("could not load the pass registry: %s", exc)
        return {}, f"could not load the pass registry: {exc}"


def _option_names(cls: type[SurgeryPass]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls.Options)}


def emit_pipeline(
    report: DoctorReport,
    model: ir.Model,
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, list[int]] | None = None,
    pinned: Collection[str] = (),
) -> EmittedPipeline:
    """Build the ``passes.toml`` text that fixes ``report``'s findings on ``model``.

    ``pinned`` names inputs a ``pin-inputs`` step placed before this pipeline turns into constants.
    """
    ctx = Context(model, load_facts())
    fixes_for: dict[str, list[Finding]] = {}
    suggested: dict[str, list[Finding]] = {}
    for finding in report.findings:
        target = fixes_for if finding.severity in _ACTIVE else suggested
        for name in finding.fix:
            target.setdefault(name, []).append(finding)
    # a Dropout in training mode makes the original model random: no gate can compare anything
    # with it until remove-dropout has run, so that pass is required and goes first
    training = [f for f in report.findings if f.details.get("training_mode")]
    if training:
        fixes_for.setdefault("remove-dropout", []).extend(training)
        suggested.pop("remove-dropout", None)
    # NMS computing a graph output: that output's shape depends on the data, which no static
    # compiler holds (assert-static refuses it), so the split is part of the fix, not a choice
    needs_split = [
        f
        for f in report.findings
        if "split-postprocess" in f.fix and f.details.get("data_dependent_outputs")
    ]
    if needs_split:
        fixes_for.setdefault("split-postprocess", []).extend(needs_split)
        suggested.pop("split-postprocess", None)
        for name in ("make-static", "assert-static"):
            fixes_for.setdefault(name, [])
    active = order_passes(fixes_for)
    if active and "cleanup" not in active:
        active = order_passes([*active, "cleanup"])
    if training:
        active = ["remove-dropout", *(n for n in active if n != "remove-dropout")]
    registered, registry_problem = _registered()
    problems = [registry_problem] if registry_problem else []

    header = [
        f"passes.toml written by `surgery doctor` for {Path(report.model).name if report.model else 'the model'}",
        f"SoC: {report.soc or 'not given'}; findings: "
        + ", ".join(f"{n} {s}" for s, n in report.counts().items()),
        "Lines marked DECIDE hold defaults for decisions only you can make: check them.",
    ]
    steps: list[Step] = []
    notes: dict[int, list[str]] = {}
    pending: list[str] = []  # notes of what is not a step, written before the next step
    missing: list[str] = []
    commented: list[str] = []

    def because(findings: list[Finding]) -> str:
        titles = list(dict.fromkeys(f.title for f in findings))
        more = f" (+{len(titles) - 3} more)" if len(titles) > 3 else ""
        return "; ".join(titles[:3]) + more

    def commented_step(name: str) -> list[str]:
        return ["[[pass]]", f"name = {string(name)}", ""]

    for name in active:
        findings = fixes_for.get(name, [])
        reason = because(findings) if findings else "tidies what the passes above leave behind"
        cls = registered.get(name)
        if cls is None:
            missing.append(name)
            pending += [f"NEEDED, not available in this build: {name}", f"  fixes: {reason}", ""]
            continue
        kwargs: dict[str, Any] = {}
        verify = StepVerify()
        about: list[str] = [f"fixes: {reason}"]
        if name == "remove-dropout" and training:
            about.append(
                "first: a Dropout in training mode makes the original random, so nothing can be "
                "verified before it goes"
            )
        if name == "split-postprocess" and needs_split:
            outputs = sorted({o for f in needs_split for o in f.details["data_dependent_outputs"]})
            about += [
                f"the output(s) {', '.join(outputs)} have a shape that depends on the data (NMS): "
                "a static-shape compiler cannot hold them",
                "the model becomes the head (for ATC); NMS and what follows run on the CPU from OUT.tail.onnx",
                "(the gates verify head then tail against the original). Remove this step to keep NMS on",
                "the NPU: its output is then padded to a fixed size, and assert-static refuses the model.",
            ]
        elif name in USER_DECISION_PASSES:
            commented.append(name)
            pending += [
                *about,
                f"DECIDE: {name} changes the deployment (head on the NPU, tail on the CPU); uncomment to use it",
                *commented_step(name),
            ]
            continue
        options = _option_names(cls)
        if name == "fix-shapes":
            shapes, decided, undecided = decide_shapes(model, dims, input_shapes, pinned)
            if not shapes and not undecided:
                pending += ["fix-shapes: not needed, every input is static or pinned", ""]
                continue
            about += decided
            unwritable = _unwritable(shapes)
            for name_ in unwritable:
                shapes.pop(name_)
            if unwritable:
                about.append(
                    f"DECIDE: these input names cannot be written in TOML (not Unicode text), "
                    f"fix their shapes another way: {', '.join(map(repr, unwritable))}"
                )
                problems.append(
                    f"fix-shapes: input names TOML cannot hold: {', '.join(map(repr, unwritable))}"
                )
            if undecided:
                about.append(
                    f"DECIDE: inputs with unknown rank, give their full shape: {', '.join(undecided)}"
                )
                problems.append(f"fix-shapes: inputs without a shape: {', '.join(undecided)}")
            if "shapes" in options:
                kwargs["shapes"] = shapes
            else:
                problems.append("fix-shapes has no 'shapes' option: set the shapes by hand")
                about.append(f"set the input shapes: {shapes}")
            if "make-static" in active:
                # fixing the inputs alone can leave an untaken If branch that no longer type-checks
                # (it is folded away by make-static): the gates after make-static verify both
                about.append(
                    "verified together with make-static (the gates after it compare with the original)"
                )
                verify = StepVerify(checker="end", ort="end", parity="end")
        elif name == "make-static":
            loops = {str(f.details.get("op")) for f in findings} & {"Loop", "Scan"}
            if loops and "unroll_loops" in options:
                about.append(
                    f"unroll_loops: ATC has no {'/'.join(sorted(loops))} parser; unrolling needs a constant "
                    "trip count (Loop) or a static scan length (Scan)"
                )
                kwargs["unroll_loops"] = True
                if "Scan" in loops and "max_unroll" in options:
                    # a Scan runs over frames or time steps: 98 for 1 s of 16 kHz audio at a 10 ms hop
                    about.append(
                        f"max_unroll {SCAN_MAX_UNROLL}: a Scan usually runs over frames (98 for 1 s of "
                        "16 kHz audio at a 10 ms hop); raise it for longer inputs"
                    )
                    kwargs["max_unroll"] = SCAN_MAX_UNROLL
        elif name == "convert-opset":
            opset_target, why = _convert_target(ctx)
            about.append(f"target {opset_target}: {why}")
            if "target" in options:
                kwargs["target"] = opset_target
        try:
            step = Step(cls(**kwargs), verify)
        except Exception as exc:  # a plug-in's pass of this name with another schema
            problems.append(f"{name} cannot be built with the options it needs: {exc}")
            pending += [*about, f"DECIDE: set its options by hand ({exc})", *commented_step(name)]
            continue
        notes[len(steps)] = [*pending, *about]
        pending = []
        steps.append(step)

    leftovers = [n for n in order_passes(suggested) if n not in active]
    if leftovers:
        pending.append(
            "Optional: fixes of precision risks and information findings (uncomment to use)"
        )
        for name in leftovers:
            commented.append(name)
            avail = "" if name in registered else " (not available in this build)"
            pending += [f"fixes: {because(suggested[name])}{avail}", *commented_step(name)]
    if pending:
        notes[len(steps)] = pending
    pipeline = Pipeline(steps)
    text = pipeline.to_toml(header=header, notes=notes)
    if registered:
        problems += _validate(text, pipeline)
    return EmittedPipeline(
        text=text,
        steps=[s.name for s in steps],
        missing=missing,
        commented=commented,
        problems=problems,
        pipeline=pipeline,
        header=header,
        notes=notes,
    )


def _unwritable(shapes: Mapping[str, Any]) -> list[Any]:
    """Input names a TOML string cannot hold exactly (undecodable bytes)."""
    bad = []
    for name in shapes:
        try:
            text_of(name)
        except Unrepresentable:
            bad.append(name)
    return bad


def _validate(text: str, intended: Pipeline) -> list[str]:
    """The written file must parse and mean what was intended: these steps, options and overrides.

    Parsing constructs the passes but imports nothing: ``rewrite`` imports its module only when it
    runs, and ``plugins`` are refused without ``allow_code``.
    """
    from surgery.errors import SurgeryError

    try:
        written = Pipeline.from_toml(text, allow_code=False)
    except SurgeryError as exc:
        return [f"the written pipeline does not load: {exc}"]

    def meaning(pipeline: Pipeline) -> list[Any]:
        return [(s.name, plain(s.pass_.given_options()), s.verify) for s in pipeline.steps]

    if meaning(written) != meaning(intended):  # pragma: no cover - a bug in the writer
        return [f"the written pipeline holds {written.steps}, not the intended {intended.steps}"]
    return []


assert set(USER_DECISION_PASSES) <= set(PASS_ORDER)
