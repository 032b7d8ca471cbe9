"""Shape buckets: one dynamic model in, one static model per bucket out (ATC on 310 needs them).

A bucket spec binds a dim (``batch``, or an input axis ``x[0]``) to several sizes:
``"batch=1,4,8"`` or ``{batch = [1, 4, 8]}`` (several keys must list as many sizes; they are
zipped). For each bucket the pipeline runs once, gated as usual, with the binding added to its
``fix-shapes`` step (one is put first if it has none), and the result is written as
``OUT.batch1.onnx``, ``OUT.batch4.onnx`` … with the ``atc`` line that compiles it. When every
bucket was built and verified as its own static model, the single-model alternative is given as
well: ATC's dynamic batch gears (``--dynamic_batch_size``) when the buckets cover dim 0 of every
input, its ``--dynamic_dims`` gears otherwise (a sequence length, an image size).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from surgery import model_io, registry
from surgery.atc import AtcCommand, atc_command, dynamic_batch_command, dynamic_dims_command
from surgery.errors import PipelineError, SurgeryError
from surgery.pipeline import Pipeline, Step
from surgery.report import Report
from surgery.shapes.spec import parse_bucket_spec

__all__ = ["BucketRun", "BucketsResult", "apply_buckets", "bucket_label", "bucket_pipeline"]

logger = logging.getLogger(__name__)

BucketSpec = str | Mapping[str, Any]


@dataclasses.dataclass
class BucketRun:
    """One bucket's result."""

    label: str
    binding: dict[str, int]
    model: ir.Model
    report: Report
    output: Path | None = None
    atc: AtcCommand | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "binding": self.binding,
            "output": str(self.output) if self.output else None,
            "atc": self.atc.to_dict() if self.atc else None,
            "report": self.report.to_dict(),
        }


@dataclasses.dataclass
class BucketsResult:
    """Every bucket's run, and the single-model gear alternative when it applies."""

    runs: list[BucketRun]
    gears: AtcCommand | None = None
    """ATC's single-model alternative: ``--dynamic_batch_size`` or ``--dynamic_dims`` gears."""

    @property
    def dynamic_batch(self) -> AtcCommand | None:
        """The gear command when it is ATC's dynamic batch (``--dynamic_batch_size``)."""
        return self.gears if self.gears is not None and self.gears.dynamic_batch_size else None

    @property
    def ok(self) -> bool:
        return all(r.report.ok for r in self.runs)

    def to_dict(self, *, source: str | None = None) -> dict[str, Any]:
        """The same top-level keys as a single run's report (:func:`surgery.report.envelope`), ``kind`` buckets."""
        from surgery.report import envelope

        errors = [r.report.error for r in self.runs if r.report.error]
        head = envelope(
            "buckets",
            source=source
            if source is not None
            else (self.runs[0].report.source if self.runs else ""),
            ok=self.ok,
            error=errors[0] if errors else None,
            outputs=[o for r in self.runs for o in r.report.outputs],
            seconds=sum(r.report.seconds for r in self.runs),
            steps=[],
            buckets=[r.to_dict() for r in self.runs],
        )
        return {
            **head,
            "dynamic_batch_alternative": self.dynamic_batch.to_dict()
            if self.dynamic_batch
            else None,
            "gears_alternative": self.gears.to_dict() if self.gears else None,
        }


def _gears_verified(runs: list[BucketRun], *, batch: bool) -> bool:
    """Every gear's model passed its gates and is static, with the same inputs and ranks; for
    batch gears they differ from each other in dim 0 only."""
    from surgery.atc import input_shapes

    tails = set()
    for run in runs:
        shapes, dynamic = input_shapes(run.model)
        if dynamic or not run.report.ok or (batch and any(not dims for dims in shapes.values())):
            logger.info("bucket %s is not a verified static gear: no gear command", run.label)
            return False
        tails.add(tuple((name, dims[1:] if batch else len(dims)) for name, dims in shapes.items()))
    return len(tails) == 1


def bucket_label(binding: Mapping[str, int]) -> str:
    """``{"batch": 4}`` → ``batch4``; ``{"x[0]": 4, "seq": 128}`` → ``x0_4_seq128`` (file-name safe)."""
    parts = []
    for key, size in binding.items():
        stem = re.sub(r"[^A-Za-z0-9]+", "", key) or "dim"
        parts.append(f"{stem}{'_' if stem[-1].isdigit() else ''}{size}")
    return "_".join(parts)


def bucket_pipeline(
    pipeline: Pipeline, binding: Mapping[str, int], model: ir.Model | None = None
) -> Pipeline:
    """A copy of ``pipeline`` whose ``fix-shapes`` step also binds ``binding`` (added first if absent).

    The buckets win over the step's ``shapes``: with ``model``, an axis the binding covers (by dim
    name or as ``x[0]``) is left to the binding (-1) instead of conflicting with a size written for
    it (the batch 1 a doctor-emitted or ``prepare``-composed pipeline fixes).
    """
    fix_shapes = registry.get("fix-shapes")  # a built-in pass, looked up: the core imports none
    steps = list(pipeline.steps)
    for i, step in enumerate(steps):
        if step.name == fix_shapes.name:
            dims = {**step.pass_.options.dims, **binding}
            changes: dict[str, Any] = {"dims": dims}
            if model is not None and step.pass_.options.shapes:
                changes["shapes"] = _leave_bucketed(step.pass_.options.shapes, binding, model)
            steps[i] = Step(step.pass_.with_options(**changes), step.verify)
            break
    else:
        steps.insert(0, Step(fix_shapes(dims=dict(binding))))
    return dataclasses.replace(pipeline, steps=steps, buckets={})


def _leave_bucketed(shapes: Any, binding: Mapping[str, int], model: ir.Model) -> Any:
    """``shapes`` with -1 ("keep") at every input axis the bucket ``binding`` sets."""
    from surgery.shapes.spec import parse_shapes

    parsed = {k: list(v) for k, v in parse_shapes(shapes, where="fix-shapes.shapes").items()}
    changed = False
    for value in model.graph.inputs:
        dims = parsed.get(value.name or "")
        if not dims or value.shape is None or len(value.shape) != len(dims):
            continue
        for axis, dim in enumerate(value.shape):
            named = isinstance(dim, ir.SymbolicDim) and dim.value in binding
            if (named or f"{value.name}[{axis}]" in binding) and dims[axis] != -1:
                dims[axis] = -1
                changed = True
    return parsed if changed else shapes


def _fresh(model: model_io.ModelLike) -> Any:
    """A model each bucket may transform in place without touching the others."""
    if isinstance(model, (str, os.PathLike)):
        return model_io.load(model)
    if isinstance(model, onnx.ModelProto):
        return ir.from_proto(model)
    if isinstance(model, ir.Model):
        return model.clone()
    return model_io.to_ir(model)


def _covers_batch(model: ir.Model, spec: Mapping[str, tuple[int, ...]]) -> bool:
    """Whether the buckets bind dim 0 of every input (and nothing else)."""
    if len(spec) != 1:
        return False
    key = next(iter(spec))
    inputs = [v for v in model.graph.inputs if v.name not in model.graph.initializers]
    if not inputs:
        return False
    m = re.match(r"^(?P<name>.+)\[(?P<axis>-?\d+)\]$", key)
    if m:
        return len(inputs) == 1 and inputs[0].name == m.group("name") and int(m.group("axis")) == 0
    for value in inputs:
        if value.shape is None or len(value.shape) == 0:
            return False
        dim0 = value.shape[0]
        if not (isinstance(dim0, ir.SymbolicDim) and dim0.value == key):
            return False
    return True


def apply_buckets(
    model: model_io.ModelLike,
    pipeline: Any,
    buckets: BucketSpec | None = None,
    *,
    inputs: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    verify: Any = None,
    output: str | os.PathLike | None = None,
    reproducer_dir: str | os.PathLike | None = None,
    progress: Any = None,
    soc_version: str | None = None,
    write_plan: Any = None,
    allow_code: bool = False,
    gates: Any = (),
) -> BucketsResult:
    """Run ``pipeline`` once per bucket (see the module docstring); each run is gated.

    ``buckets`` defaults to the pipeline's ``[buckets]`` table (``allow_code``: as in
    :func:`surgery.apply`). Raises what :func:`surgery.apply`
    raises, the message prefixed with the bucket (``bucket batch4: ...``). Every bucket's output is
    checked by the write plan before the first bucket runs, and the files of all buckets are
    committed together after the last: a failing bucket leaves no file of the earlier ones.
    ``write_plan`` is the caller's (the CLI's, which commits it with its report); without it the
    buckets commit on their own.
    """
    from surgery.api import artifact_path, resolve_pipeline

    pipe = resolve_pipeline(pipeline, allow_code=allow_code)
    pipe.check_code(allow_code)
    if allow_code and not pipe.allow_code:  # the opt-in travels with the per-bucket pipelines
        pipe = dataclasses.replace(pipe, allow_code=True)
    source = buckets if buckets is not None else pipe.buckets
    if not source:
        raise PipelineError('no buckets: give e.g. --buckets "batch=1,4,8" or a [buckets] table')
    spec = parse_bucket_spec(source, where="buckets")
    count = len(next(iter(spec.values())))
    out = Path(output) if output is not None else None
    plan = write_plan
    if out is not None and plan is None:
        from surgery.writeplan import WritePlan

        plan = WritePlan()
        given = model_io.load(model) if isinstance(model, (str, os.PathLike)) else model
        plan.set_model(
            given if isinstance(given, ir.Model) else None,
            model if isinstance(model, (str, os.PathLike)) else None,
        )
        plan.read_pipeline(pipe)
        plan.read(inputs if isinstance(inputs, (str, os.PathLike)) else None, "the input arrays")
        if reproducer_dir is not None:
            plan.reproducer(reproducer_dir, explicit=True)
    if out is not None and plan is not None:
        for i in range(count):
            label = bucket_label({key: sizes[i] for key, sizes in spec.items()})
            plan.write_model(artifact_path(out, label), f"the bucket {label} output")
    try:
        runs, probe = _run_buckets(
            model,
            pipe,
            spec,
            count,
            out,
            plan,
            inputs,
            verify,
            reproducer_dir,
            progress,
            soc_version,
            gates,
        )
        if plan is not None and write_plan is None:
            plan.commit()
    except BaseException:
        if plan is not None and write_plan is None:
            plan.abort()
        raise
    gears: AtcCommand | None = None
    # One failing gear fails a whole ATC build: the gear command is given only when every gear was
    # built and gated as its own static model above, and each is still static.
    batch = probe is not None and _covers_batch(probe, spec)
    if probe is not None and _gears_verified(runs, batch=batch):
        from surgery.atc import input_shapes

        src = str(model) if isinstance(model, (str, os.PathLike)) else "MODEL.onnx"
        try:
            if batch:
                sizes = next(iter(spec.values()))
                gears = dynamic_batch_command(
                    runs[0].model,
                    src,
                    sizes,
                    soc_version=soc_version,
                    output=out if out is not None else None,
                )
            else:
                profiles = [input_shapes(run.model)[0] for run in runs]
                gears = dynamic_dims_command(
                    probe,
                    src,
                    profiles,
                    soc_version=soc_version,
                    output=out if out is not None else None,
                )
        except SurgeryError as exc:  # e.g. one bucket: ATC gears need 2 to 100 profiles
            logger.info("no gear alternative: %s", exc)
    return BucketsResult(runs, gears)


def _run_buckets(
    model: Any,
    pipe: Pipeline,
    spec: Mapping[str, tuple[int, ...]],
    count: int,
    out: Path | None,
    plan: Any,
    inputs: Any,
    verify: Any,
    reproducer_dir: Any,
    progress: Any,
    soc_version: str | None,
    gates: Any = (),
) -> tuple[list[BucketRun], ir.Model | None]:
    from surgery.api import apply, artifact_path

    runs: list[BucketRun] = []
    probe: ir.Model | None = None
    for i in range(count):
        binding = {key: sizes[i] for key, sizes in spec.items()}
        label = bucket_label(binding)
        working = _fresh(model)
        if probe is None:
            probe = working.clone() if isinstance(working, ir.Model) else None
        target = artifact_path(out, label) if out is not None else None
        if progress is not None:
            progress(f"bucket {label}")
        try:
            result, report = apply(
                working,
                bucket_pipeline(pipe, binding, working if isinstance(working, ir.Model) else None),
                inputs=inputs,
                verify=verify,
                output=target,
                reproducer_dir=(Path(reproducer_dir) / label) if reproducer_dir else None,
                progress=progress,
                soc_version=soc_version,
                write_plan=plan,
                gates=gates,
            )
        except SurgeryError as exc:
            if exc.args and isinstance(exc.args[0], str):
                exc.args = (f"bucket {label}: {exc.args[0]}", *exc.args[1:])
            raise
        try:
            atc = (
                atc_command(result, target, soc_version=soc_version) if target is not None else None
            )
        except (
            SurgeryError
        ) as exc:  # a name ATC's syntax cannot carry: the model is written, the line is not
            logger.warning("bucket %s: no atc command: %s", label, exc)
            atc = None
        report.extra["bucket"] = {"label": label, "binding": binding}
        runs.append(BucketRun(label, binding, result, report, target, atc))
    return runs, probe
