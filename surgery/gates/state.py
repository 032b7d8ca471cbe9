"""The run state the runner carries from pass to pass and hands to every gate.

It owns the expensive shared resources so gates never build them twice: the light proto of the
current model (built once per step), one ONNX Runtime session of it (opened by the first gate that
needs it, closed when the step's gates are done, so no second large session is ever alive), and
the parity samples with the original's outputs on them (computed once, cached).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.instruments.parity import ORT_ERRORS, OrtLoadError
from surgery.model_io import LightProto
from surgery.pass_base import SurgeryResult, Tolerance
from surgery.pipeline import Pipeline, Step
from surgery.report import Report, StepReport

__all__ = ["MissingKernel", "RunState"]


class MissingKernel(Exception):
    """ONNX Runtime has no kernel for an op of the model (the reference evaluator may run it)."""


@dataclasses.dataclass
class RunState:
    """Everything one run shares between the runner, its gates and its instruments."""

    pipeline: Pipeline
    model: ir.Model
    report: Report
    original: LightProto | None = None
    """The input model (light proto: large weights by reference), kept for references and slices."""
    step: Step | None = None
    """The pass just run; None for the end-of-run checks."""
    index: int = 0
    result: SurgeryResult | None = None
    step_report: StepReport | None = None
    snapshot: LightProto | None = None
    """The model as it was before the current pass (for the reproducer and layerwise diagnosis)."""
    chained: dict[str, ir.Model] = dataclasses.field(default_factory=dict)
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)
    full_check: bool = True
    carried: Tolerance | None = None
    """Loosest tolerance of approx passes since the reference was last taken."""
    fingerprint_before: Any = None
    fingerprint_after: Any = None
    silent_edit: bool = False
    """The pass returned modified=False but the fingerprint says the model changed."""
    uses_reference_evaluator: bool = False
    """The original needed onnx's ReferenceEvaluator (ORT has no kernel for it). Not to be confused
    with the reference *outputs* (the original's, which parity compares against)."""
    store: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Per-gate data for the run, keyed by gate name (a gate's memory between steps)."""
    progress: Any = None
    _light: LightProto | None = None
    _original_model: ir.Model | None = None
    _session: Any = None
    _engine: str | None = None

    def __post_init__(self) -> None:
        if self.progress is None:
            self.progress = lambda message: None

    def model_original(self) -> ir.Model:
        """The original as a full ``ir.Model`` (weights shared with the input, not copied)."""
        assert self.original is not None
        if self._original_model is None:
            self._original_model = self.original.full_model()
        return self._original_model

    @property
    def uses_reference(self) -> bool:
        """Deprecated alias of :attr:`uses_reference_evaluator` (its old name)."""
        return self.uses_reference_evaluator

    @uses_reference.setter
    def uses_reference(self, value: bool) -> None:
        self.uses_reference_evaluator = value

    # -- per-step resources ---------------------------------------------------------------
    @property
    def at_end(self) -> bool:
        return self.step is None

    def light(self) -> LightProto:
        """The current model's light proto, built once per step."""
        if self._light is None:
            self._light = LightProto(self.model)
        return self._light

    def begin(
        self, step: Step | None, result: SurgeryResult | None, step_report: StepReport | None
    ) -> None:
        self.close()
        self._light = None
        self.step, self.result, self.step_report = step, result, step_report

    def close(self) -> None:
        """Free the step's ORT session (called after the step's gates)."""
        if self._session is not None:
            self._session.close()
        self._session = None
        self._engine = None

    def load(self) -> str:
        """Load the current model in ONNX Runtime (once per step); return the engine used.

        Raises :class:`OrtLoadError` when ORT refuses it, :class:`MissingKernel` when ORT has no
        kernel for one of its ops (the parity gate may then fall back to the reference evaluator).
        """
        if self._engine is not None:
            return self._engine
        from surgery.verify.ort import OrtSession, is_missing_kernel

        try:
            self._session = OrtSession(self.light())
        except ORT_ERRORS as exc:
            first = (
                str(exc).strip().splitlines()[0][:400] if str(exc).strip() else type(exc).__name__
            )
            if is_missing_kernel(exc):
                self._engine = "reference evaluator"
                raise MissingKernel(first) from None
            error = OrtLoadError(first)
            error.detail = str(exc)  # ORT's whole message, for explain_ort_failure
            raise error from None
        self._engine = "onnxruntime"
        return self._engine

    def run(
        self, feeds: Mapping[str, np.ndarray], *, allow_reference: bool = False
    ) -> dict[str, np.ndarray]:
        """Outputs of the current model, then of every chained model, on ``feeds``;
        ``allow_reference``: fall back to onnx's ReferenceEvaluator where ORT has no kernel."""
        from surgery.verify.ort import is_missing_kernel
        from surgery.verify.reference import run_reference

        try:
            self.load()
        except MissingKernel:
            if not allow_reference:
                raise
        if self._session is None:
            outputs = run_reference(self.model, feeds)
        else:
            missing = [n for n in self._session.input_names if n not in feeds]
            if missing:
                raise OrtLoadError(
                    f"the model needs inputs the parity run does not have: {', '.join(missing)}"
                )
            try:
                outputs = self._session.run(feeds)
            except ORT_ERRORS as exc:
                if allow_reference and is_missing_kernel(exc):
                    outputs = run_reference(self.model, feeds)
                else:
                    raise OrtLoadError(
                        "running failed: " + str(exc).strip().splitlines()[0][:400]
                    ) from None
        if self.chained:
            from surgery.instruments.parity import evaluate

            available = dict(feeds)
            available.update(outputs)
            for part in self.chained.values():
                part_out = evaluate(part, available, allow_reference=allow_reference).outputs
                available.update(part_out)
                outputs.update(part_out)
        return outputs

    @property
    def engine(self) -> str:
        return self._engine or "not run"
