"""The parity gate: run a model (and the models chained after it) and compare with a reference.

The reference is the ORIGINAL model's outputs, computed once by :class:`Oracle` and its session
freed straight away, so at most one large session is alive at a time. Where ONNX Runtime has no
kernel for the original (e.g. float64 Conv on CPU), the oracle falls back to onnx's
``ReferenceEvaluator`` and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
from onnxruntime.capi.onnxruntime_pybind11_state import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    NotImplemented,
    RuntimeException,
)

from surgery.model_io import LightProto
from surgery.pass_base import Tolerance
from surgery.verify.compare import ArrayDiff, diff_arrays
from surgery.verify.ort import OrtSession, is_missing_kernel
from surgery.verify.reference import run_reference

__all__ = ["ORT_ERRORS", "Evaluation", "Oracle", "OrtLoadError", "compare_outputs", "evaluate"]

logger = logging.getLogger(__name__)

ORT_ERRORS = (Fail, InvalidArgument, InvalidGraph, NotImplemented, RuntimeException)


class OrtLoadError(Exception):
    """ONNX Runtime refused to load a model."""

    #: ORT's whole message (the exception's text is its first line), for explain_ort_failure
    detail: str = ""


class Evaluation:
    """Outputs of one model chain on the parity feeds, and which engine produced them."""

    def __init__(self, outputs: dict[str, np.ndarray], engine: str) -> None:
        self.outputs = outputs
        self.engine = engine


def _run_one(
    model: ir.Model,
    light: LightProto | None,
    feeds: Mapping[str, np.ndarray],
    allow_reference: bool,
) -> tuple[dict[str, np.ndarray], str]:
    try:
        session = OrtSession(light if light is not None else LightProto(model))
    except ORT_ERRORS as exc:
        if allow_reference and is_missing_kernel(exc):
            logger.info(
                "onnxruntime has no kernel (%s); using the reference evaluator",
                str(exc).splitlines()[0],
            )
            return run_reference(model, feeds), "reference evaluator"
        raise OrtLoadError(str(exc).strip().splitlines()[0][:400]) from None
    try:
        missing = [n for n in session.input_names if n not in feeds]
        if missing:
            raise OrtLoadError(
                f"the model needs inputs the parity run does not have: {', '.join(missing)}"
            )
        return session.run(feeds), "onnxruntime"
    except ORT_ERRORS as exc:
        if allow_reference and is_missing_kernel(exc):
            session.close()
            return run_reference(model, feeds), "reference evaluator"
        raise OrtLoadError("running failed: " + str(exc).strip().splitlines()[0][:400]) from None
    finally:
        session.close()


def evaluate(
    model: ir.Model,
    feeds: Mapping[str, np.ndarray],
    *,
    light: LightProto | None = None,
    chained: Sequence[ir.Model] = (),
    allow_reference: bool = False,
) -> Evaluation:
    """Run ``model`` then every chained model (fed the inputs and all outputs so far)."""
    outputs, engine = _run_one(model, light, feeds, allow_reference)
    available = dict(feeds)
    available.update(outputs)
    for part in chained:
        part_out, part_engine = _run_one(part, None, available, allow_reference)
        available.update(part_out)
        outputs.update(part_out)
        if part_engine != engine:
            engine = f"{engine} + {part_engine}"
    return Evaluation(outputs, engine)


class Oracle:
    """Reference outputs: the original model's, then rebased after a pass that changes semantics."""

    def __init__(
        self, model: ir.Model, feeds: Mapping[str, np.ndarray], light: LightProto | None = None
    ) -> None:
        evaluation = evaluate(model, feeds, light=light, allow_reference=True)
        self.outputs: dict[str, np.ndarray] = evaluation.outputs
        self.output_names = [v.name for v in model.graph.outputs]
        self.engine = evaluation.engine
        self.uses_reference = "reference" in evaluation.engine
        self.rebased_after: str | None = None

    def rebase(self, outputs: Mapping[str, np.ndarray], after: str) -> None:
        self.outputs = {k: v for k, v in outputs.items() if k in self.output_names}
        self.rebased_after = after


def compare_outputs(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    names: Sequence[str],
    tol: Tolerance,
) -> list[ArrayDiff]:
    return [diff_arrays(name, actual.get(name), expected.get(name), tol) for name in names]
