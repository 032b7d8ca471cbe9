"""The Python API: ``surgery.apply(model, pipeline)``.

The CLI calls this; this calls the runner; the runner calls passes and instruments.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx_ir as ir

from surgery import model_io
from surgery.errors import InputError, PipelineError
from surgery.pass_base import SurgeryPass
from surgery.pipeline import Mode, Pipeline, Step, load_pipeline, parse_verify
from surgery.report import Report
from surgery.runner import Progress, Runner
from surgery.verify import worker as ort_worker
from surgery.verify.inputs import InputsConfig

__all__ = ["apply", "PipelineLike", "resolve_pipeline", "artifact_path"]

logger = logging.getLogger(__name__)

PipelineLike = Union[str, os.PathLike, Pipeline, Sequence[Union[SurgeryPass, Step]]]


def resolve_pipeline(pipeline: PipelineLike) -> Pipeline:
    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, (str, os.PathLike)):
        return load_pipeline(pipeline)
    if isinstance(pipeline, Sequence):
        return Pipeline.from_passes(pipeline)
    raise PipelineError(f"expected a passes.toml path, a Pipeline or a list of passes, got {type(pipeline).__name__}")


def artifact_path(output: Path, key: str) -> Path:
    """``out.onnx`` + ``tail`` → ``out.tail.onnx``."""
    return output.with_name(f"{output.stem}.{key}{output.suffix or '.onnx'}")


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
) -> tuple[Any, Report]:
    """Run ``pipeline`` on ``model`` with verification gates; return the model and a report.

    Args:
        model: a path, an ``onnx.ModelProto`` (left untouched; a new proto is returned) or an
            ``onnx_ir.Model`` (transformed in place and returned).
        pipeline: a ``passes.toml`` path, a :class:`~surgery.pipeline.Pipeline`, or a list of pass
            instances (``[RemoveDropout(), Cleanup()]``).
        inputs: arrays to feed parity runs, or a path to an ``.npz``; otherwise ``[inputs]`` and
            generated values are used.
        verify: ``"each"``, ``"end"`` or ``"off"`` for every gate, or a ``[verify]``-style mapping.
        output: where to save the result (atomically, with external data when needed); chained
            models and model artifacts are saved beside it as ``OUT.<name>.onnx``.
        reproducer_dir: where a failing gate writes its reproducer (default: a new temporary folder).
        progress: called with a short message before each step.
        soc_version: the Ascend SoC for the ``atc`` command lines put in ``report.extra["atc"]``.

    Raises:
        InputError, PipelineError, PassError: bad input (exit code 2 on the command line).
        GateError: a gate failed (exit code 1).
    """
    started = time.perf_counter()
    pipe = resolve_pipeline(pipeline)
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
            pipe.inputs = InputsConfig(specs=pipe.inputs.specs, data=pipe.inputs.data, arrays=dict(inputs))
    # one ONNX Runtime worker for the run's sessions, started now so that its start-up overlaps
    # loading the model, and killed at the end of the run
    with ort_worker.scope(prestart=pipe.verify.ort != "off" or pipe.verify.parity != "off"):
        ir_model = model_io.to_ir(model)
        report = Report(source=str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__)
        repro = Path(reproducer_dir) if reproducer_dir else Path(tempfile.gettempdir()) / f"surgery-repro-{os.getpid()}-{int(time.time())}"
        runner = Runner(pipe, reproducer_dir=repro, progress=progress)
        result_model, report = runner.run(ir_model, report)
    if output is not None:
        out = Path(output)
        for path in model_io.save(result_model, out):
            report.outputs.append(str(path))
        for key, extra in report.models.items():
            if isinstance(extra, ir.Model):
                target = artifact_path(out, key)
                model_io.save(extra, target)
                report.artifacts[key] = str(target)
        if report.chained:
            from surgery import partition

            chained = {k: report.models[k] for k in report.chained}
            files = {"head": out.name, **{k: artifact_path(out, k).name for k in chained}}
            data = partition.manifest(result_model, chained, files=files, original_outputs=report.extra.get("original_outputs"))
            manifest_path = partition.write_manifest(out.with_name(out.stem + ".split.json"), data)
            report.artifacts["manifest"] = str(manifest_path)
        from surgery.atc import report_atc_commands

        report_atc_commands(report, result_model, out, soc_version=soc_version)
    report.seconds = time.perf_counter() - started
    return model_io.like_input(model, result_model) if not isinstance(model, (str, os.PathLike)) else result_model, report


def check_output_path(model: ir.Model, model_path: Path, output: Path, *, in_place: bool) -> None:
    """Refuse to write over the input model or its external data (unless ``in_place``)."""
    if in_place:
        return
    src, dst = model_path.resolve(), output.resolve()
    if src == dst:
        raise InputError(f"{output}: the output path is the input model; use --in-place to overwrite it")
    data = dst.with_name(dst.name + ".data")
    for _, tensor in model_io.external_tensors(model):
        if (Path(tensor.base_dir) / tensor.location).resolve() == data:
            raise InputError(f"{output}: writing it would overwrite the input's external data {data}")
