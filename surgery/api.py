"""The Python API: ``surgery.apply(model, pipeline)``.

The CLI calls this; this calls the runner; the runner calls passes and instruments.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
import onnx
import onnx_ir as ir

from surgery import libwarnings, model_io
from surgery.errors import PipelineError
from surgery.pass_base import SurgeryPass
from surgery.pipeline import Mode, Pipeline, Step, load_pipeline, parse_verify
from surgery.report import Report
from surgery.runner import Progress, Runner
from surgery.verify import worker as ort_worker
from surgery.verify.inputs import InputsConfig
from surgery.writeplan import WritePlan

__all__ = [
    "ModelT",
    "PipelineLike",
    "apply",
    "artifact_path",
    "extract",
    "resolve_pipeline",
    "stage_outputs",
]


PipelineLike = str | os.PathLike | Pipeline | Sequence[SurgeryPass | Step]

#: "same kind in, same kind out": :func:`apply` returns a ``ModelProto`` for a ``ModelProto``
#: and an ``ir.Model`` for an ``ir.Model``
ModelT = TypeVar("ModelT", onnx.ModelProto, ir.Model)


def resolve_pipeline(pipeline: PipelineLike, *, allow_code: bool = False) -> Pipeline:
    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, (str, os.PathLike)):
        return load_pipeline(pipeline, allow_code=allow_code)
    if isinstance(pipeline, Sequence) and not isinstance(pipeline, str):
        return Pipeline.from_passes(pipeline)
    raise PipelineError(
        f"expected a passes.toml path, a Pipeline or a list of passes, got {type(pipeline).__name__}"
    )


def artifact_path(output: Path, key: str) -> Path:
    """``out.onnx`` + ``tail`` → ``out.tail.onnx``."""
    return output.with_name(f"{output.stem}.{key}{output.suffix or '.onnx'}")


def _capturing_warnings(
    function: Callable[..., tuple[Any, Report]],
) -> Callable[..., tuple[Any, Report]]:
    """Library warnings raised during ``function`` go to the log and ``report.warnings`` (also the
    report of a ``GateError``), never to stderr: see :mod:`surgery.libwarnings`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> tuple[Any, Report]:
        caught: list[str] = []
        try:
            with libwarnings.capture(caught):
                model, report = function(*args, **kwargs)
        except BaseException as exc:
            failed = getattr(exc, "report", None)
            if isinstance(failed, Report):
                failed.warnings.extend(caught)
            raise
        report.warnings.extend(caught)
        return model, report

    return wrapper


@overload
def apply(
    model: ModelT,
    pipeline: PipelineLike,
    *,
    inputs: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    verify: Mode | Mapping[str, Any] | None = None,
    output: str | os.PathLike | None = None,
    reproducer_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    soc_version: str | None = None,
    cann: int | None = None,
    in_place: bool = False,
    write_plan: WritePlan | None = None,
    allow_code: bool = False,
    base_dir: str | os.PathLike | None = None,
    gates: Sequence[Any] = (),
) -> tuple[ModelT, Report]: ...


@overload
def apply(
    model: str | os.PathLike,
    pipeline: PipelineLike,
    *,
    inputs: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    verify: Mode | Mapping[str, Any] | None = None,
    output: str | os.PathLike | None = None,
    reproducer_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    soc_version: str | None = None,
    cann: int | None = None,
    in_place: bool = False,
    write_plan: WritePlan | None = None,
    allow_code: bool = False,
    base_dir: str | os.PathLike | None = None,
    gates: Sequence[Any] = (),
) -> tuple[ir.Model, Report]: ...


@_capturing_warnings
def apply(
    model: model_io.ModelLike,
    pipeline: PipelineLike,
    *,
    inputs: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    verify: Mode | Mapping[str, Any] | None = None,
    output: str | os.PathLike | None = None,
    reproducer_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    soc_version: str | None = None,
    cann: int | None = None,
    in_place: bool = False,
    write_plan: WritePlan | None = None,
    allow_code: bool = False,
    base_dir: str | os.PathLike | None = None,
    gates: Sequence[Any] = (),
) -> tuple[onnx.ModelProto | ir.Model, Report]:
    """Run ``pipeline`` on ``model`` with verification gates; return the model and a report.

    Same kind in, same kind out (typed with ``ModelT``): a ``ModelProto`` gives a ``ModelProto``,
    an ``ir.Model`` an ``ir.Model``; a path gives an ``ir.Model``.

    Args:
        model: a path, an ``onnx.ModelProto`` (left untouched; a new proto is returned) or an
            ``onnx_ir.Model`` (transformed in place and returned).
        pipeline: a ``passes.toml`` path, a :class:`~surgery.pipeline.Pipeline`, or a list of pass
            instances (``[RemoveDropout(), Cleanup()]``).
        inputs: arrays to feed parity runs, or a path to an ``.npz``; otherwise ``[inputs]`` and
            generated values are used.
        verify: ``"each"``, ``"end"`` or ``"off"`` for every gate, or a ``[verify]``-style mapping.
        output: where to save the result (atomically, with external data when needed); chained
            models and model artifacts are saved beside it as ``OUT.<name>.onnx``. Every file the
            run reads and writes is checked first (:mod:`surgery.writeplan`): an output that would
            overwrite an input is refused with :class:`InputError`.
        reproducer_dir: where a failing gate writes its reproducer (default: a new temporary folder).
        progress: called with a short message before each step.
        soc_version: the Ascend SoC for the ``atc`` command lines put in ``report.extra["atc"]``.
        cann: the CANN release (7 or 8) a model left with dynamic dims is compiled with: its atc line
            then writes each ``-1`` with that release's meaning (``>= 1`` on 7, ``>= 0`` on 8) as a
            dynamic-shape command, refused on Ascend310/310B, which take static shapes or gears only.
        in_place: ``output`` may be the input model itself (it and its data are replaced together).
        write_plan: the caller's plan (the CLI's): the outputs are checked and staged in it, and
            committed by the caller with its other files. Without it the run commits on its own.
        allow_code: run the Python code a pipeline *file* names (``rewrite`` rule modules,
            ``plugins``). A passes.toml is data and may come with a downloaded model, so without
            this a step that would import code is refused (``PipelineError``) before anything
            runs. Passes built in Python (``[Rewrite(rules=...)]``) are your own code and need no
            opt-in.
        base_dir: the folder external data must lie in (default: the model file's folder; for a
            ``ModelProto`` loaded with ``load_external_data=False``, which carries no folder, the
            working directory). Locations outside it are refused (``InputError``).
        gates: extra gates (:class:`surgery.gates.Gate`) run after the built-in ones, after every
            pass (or as their ``schedule`` says).

    Raises:
        InputError, PipelineError, PassError: bad input (exit code 2 on the command line).
        GateError: a gate failed (exit code 1).
    """
    started = time.perf_counter()
    pipe = resolve_pipeline(pipeline, allow_code=allow_code)
    pipe.check_code(allow_code)
    if isinstance(verify, str):
        if verify not in ("each", "end", "off"):
            raise PipelineError(f"verify: expected each, end or off, got {verify!r}")
        pipe.verify = pipe.verify.with_mode(verify)
    elif verify is not None:
        pipe.verify = parse_verify(verify, pipe.verify)
    if inputs is not None:
        if isinstance(inputs, (str, os.PathLike)):
            pipe.inputs = InputsConfig(specs=pipe.inputs.specs, data=Path(inputs))
        else:
            pipe.inputs = InputsConfig(
                specs=pipe.inputs.specs, data=pipe.inputs.data, arrays=dict(inputs)
            )
    # one ONNX Runtime worker for the run's sessions, started now so that its start-up overlaps
    # loading the model, and killed at the end of the run
    with ort_worker.scope(prestart=pipe.verify.ort != "off" or pipe.verify.parity != "off"):
        ir_model = model_io.to_ir(model, base_dir=base_dir)
        plan = write_plan
        if output is not None and plan is None:  # every read and write checked before the run
            plan = WritePlan(in_place=in_place)
            plan.set_model(ir_model, model if isinstance(model, (str, os.PathLike)) else None)
            plan.read_pipeline(pipe)
            plan.read(
                inputs if isinstance(inputs, (str, os.PathLike)) else None, "the input arrays"
            )
            plan.write_model(output)
            if reproducer_dir is not None:
                plan.reproducer(reproducer_dir, explicit=True)
        report = Report(
            source=str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
        )
        repro = (
            Path(reproducer_dir)
            if reproducer_dir
            else Path(tempfile.gettempdir()) / f"surgery-repro-{os.getpid()}-{int(time.time())}"
        )
        runner = Runner(pipe, reproducer_dir=repro, progress=progress, gates=gates)
        result_model, report = runner.run(ir_model, report)
    if output is not None and plan is not None:
        try:
            stage_outputs(plan, result_model, report, Path(output), soc_version, cann)
            if write_plan is None:
                plan.commit()
        except BaseException:
            if write_plan is None:
                plan.abort()
            raise
    report.seconds = time.perf_counter() - started
    return model_io.like_input(model, result_model) if not isinstance(
        model, (str, os.PathLike)
    ) else result_model, report


def extract(
    model: ir.Model | str | os.PathLike,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    input_types: Sequence[str] = (),
    data: str | os.PathLike | None = None,
    verify: Mode = "each",
    rtol: float = 0.0,
    atol: float = 0.0,
    output: str | os.PathLike | None = None,
    reproducer_dir: str | os.PathLike | None = None,
    write_plan: WritePlan | None = None,
) -> tuple[ir.Model, Report]:
    """The part of ``model`` computing ``outputs`` from ``inputs``, through the runner like any
    pipeline: the ``extract`` pass, then the gates (checker, ORT, parity of the part against the
    original's tensors on every sample, exact unless ``rtol``/``atol`` say otherwise).

    ``input_types`` types new inputs the model leaves untyped (``'feat:float32[1,64,56,56]'``);
    ``data`` is an ``.npz`` of the original's inputs for the parity samples. What ``surgery
    extract`` runs.

    Raises:
        InputError, PipelineError, PassError: bad names or a cut that does not separate (exit 2).
        GateError: the part does not reproduce the original's tensors (exit 1).
    """
    from surgery import registry  # the pass is looked up: the core imports none

    step = registry.get("extract")(
        inputs=list(inputs), outputs=list(outputs), input_types=list(input_types)
    )
    gates = {"checker": verify, "ort": verify, "parity": verify, "rtol": rtol, "atol": atol}
    return apply(
        model,
        [step],
        inputs=data,
        verify=gates,
        output=output,
        reproducer_dir=reproducer_dir,
        write_plan=write_plan,
    )


def stage_outputs(
    plan: WritePlan,
    result_model: ir.Model,
    report: Report,
    out: Path,
    soc_version: str | None,
    cann: int | None = None,
) -> None:
    """Stage the model, its ``ir.Model`` artifacts and the split manifest in the run's transaction."""
    tx = plan.transaction
    report.outputs.extend(str(p) for p in tx.add_model(result_model, out))
    for key, extra in report.models.items():
        if isinstance(extra, ir.Model):
            target = artifact_path(out, key)
            plan.write(target, f"the {key} model")
            tx.add_model(extra, target)
            report.files[key] = str(target)
    if report.chained:
        from surgery import partition

        chained = {k: report.models[k] for k in report.chained}
        files = {"head": out.name, **{k: artifact_path(out, k).name for k in chained}}
        data = partition.manifest(
            result_model,
            chained,
            files=files,
            original_outputs=report.extra.get("original_outputs"),
        )
        manifest_path = out.with_name(out.stem + ".split.json")
        plan.write(manifest_path, "the split manifest")
        tx.add_text(manifest_path, json.dumps(data, indent=2) + "\n")
        report.files["manifest"] = str(manifest_path)
    from surgery.atc import keep_dtype_path, planned_keep_dtype, report_atc_commands

    keep = planned_keep_dtype(report)
    if keep:  # a precision-plan step's float32 keep-list, for the atc line's --keep_dtype
        from surgery.precision import keep_dtype_text

        target = keep_dtype_path(out)
        plan.write(target, "the keep_dtype file")
        tx.add_text(target, keep_dtype_text(keep))
        report.files["keep_dtype"] = str(target)
    report_atc_commands(report, result_model, out, soc_version=soc_version, cann=cann)
