"""The checker and ONNX Runtime load gates."""

from __future__ import annotations

from surgery.errors import InputError
from surgery.gates.base import BaseGate, Outcome, Schedule
from surgery.gates.state import MissingKernel, RunState
from surgery.instruments import checker
from surgery.instruments.parity import OrtLoadError
from surgery.model_io import LightProto
from surgery.pipeline import Step
from surgery.shapes.observed import tolerated_nodes

__all__ = ["CheckerGate", "OrtLoadGate"]


class CheckerGate(BaseGate):
    """``onnx.checker`` full check (strict shape inference) of the model and every chained model."""

    name = "checker"

    def when(self, run: RunState, step: Step | None) -> Schedule:
        sv = step.verify.checker if step is not None else None
        return Schedule(sv or run.pipeline.verify.checker)

    def start(self, run: RunState) -> None:
        """Check the input: a model that fails only the full check is gated with the basic one."""
        assert run.original is not None
        outcome = checker.check(run.original, full=True)
        if outcome:
            return
        basic = checker.check(run.original, full=False)
        if not basic:
            raise InputError(
                f"the input model fails onnx.checker: {basic.message}; fix it or run with --verify off"
            )
        run.full_check = False
        run.report.notes.append(
            f"the input model fails the checker's full check ({outcome.message}); gates use the basic check"
        )

    def check(self, state: RunState) -> Outcome:
        outcome = checker.check(
            state.light(), full=state.full_check, tolerate=tolerated_nodes(state.model)
        )
        what = "the final model" if state.at_end else "the model"
        if not outcome:
            return Outcome.failed(self.name, f"onnx.checker rejects {what}: {outcome.message}")
        for key, part in state.chained.items():
            outcome = checker.check(LightProto(part), full=state.full_check)
            if not outcome:
                return Outcome.failed(
                    self.name,
                    f"onnx.checker rejects the chained model '{key}': {outcome.message}",
                    tensor=key,
                )
        return Outcome.passed(self.name, numbers={"full_check": state.full_check})


class OrtLoadGate(BaseGate):
    """The model loads in ONNX Runtime (the session stays open for the parity gate)."""

    name = "ort"

    def when(self, run: RunState, step: Step | None) -> Schedule:
        sv = step.verify.ort if step is not None else None
        return Schedule(sv or run.pipeline.verify.ort)

    def _original_lacks_kernel(self, state: RunState) -> bool:
        if "original_lacks_kernel" not in state.store:
            from surgery.verify.ort import OrtSession, is_missing_kernel

            lacks = state.uses_reference_evaluator
            if not lacks and state.original is not None:
                try:
                    OrtSession(state.original).close()
                except Exception as exc:  # ORT's own error classes
                    lacks = is_missing_kernel(exc)
            state.store["original_lacks_kernel"] = lacks
        return bool(state.store["original_lacks_kernel"])

    def check(self, state: RunState) -> Outcome:
        try:
            engine = state.load()
        except MissingKernel as exc:
            if self._original_lacks_kernel(state):
                return Outcome.passed(
                    self.name,
                    "no kernel (as the original)",
                    numbers={"engine": "reference evaluator"},
                )
            return Outcome.failed(self.name, f"onnxruntime cannot load or run the model: {exc}")
        except OrtLoadError as exc:
            return Outcome.failed(self.name, f"onnxruntime cannot load or run the model: {exc}")
        return Outcome.passed(self.name, numbers={"engine": engine})
