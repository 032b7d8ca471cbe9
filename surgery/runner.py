"""The runner: applies a pipeline's passes in order and gates each one.

The runner loops passes × gates over one :class:`~surgery.gates.state.RunState`. After every pass
that modified the model (or that edited it while saying it did not: the fingerprints before and
after differ) each gate (:mod:`surgery.gates`) is asked for its schedule and, when it runs,
for an :class:`~surgery.gates.base.Outcome`. The built-in gates, in order:

1. ``checker``: ``onnx.checker`` full check (strict shape inference), on a proto without the large weights;
2. ``signature``: graph input/output names, order, types, ranks and static dims, unless the pass declared the change;
3. ``ort``: the model loads in ONNX Runtime;
4. ``parity``: its outputs match the ORIGINAL model's on several samples (integers exactly),
   and every changed branch was executed by some sample.

Gates given in ``gates=`` run after them. The runner decides only from ``Outcome.status``: a
failed gate stops the run with a :class:`~surgery.errors.GateError` that names the pass, the
tensor and the numbers, after the instruments wrote a reproducer folder. Each built-in gate can
run after each pass, at the end only, or not at all (``[verify]`` and ``[pass.verify]``).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx_ir as ir

from surgery.errors import GateError, OriginalCrash, PassError, SurgeryError
from surgery.gates import BUILTIN_GATES, Gate, Instrument, Outcome, Schedule, Status
from surgery.gates.fingerprint import fingerprint
from surgery.gates.instruments import ProgressInstrument, ReproducerInstrument, TimingInstrument
from surgery.gates.state import RunState
from surgery.graph import iter_graphs
from surgery.model_io import LightProto, graph_initializer_bytes
from surgery.pass_base import SurgeryResult
from surgery.pipeline import Pipeline, Step
from surgery.report import ModelStats, Report, StepReport
from surgery.shapes.dims import dynamic_dims, graph_dynamic_dims
from surgery.shapes.observed import refresh_and_report

__all__ = ["Runner", "dynamic_dims", "model_stats"]

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


def model_stats(model: ir.Model) -> ModelStats:
    """Node count, weights and dynamic dims of ``model``, in one walk over its graphs."""
    nodes = initializers = nbytes = dynamic = 0
    for graph in iter_graphs(model):
        nodes += len(graph)
        if isinstance(graph, ir.Function):
            continue
        dynamic += graph_dynamic_dims(graph)
        initializers += len(graph.initializers)
        nbytes += graph_initializer_bytes(graph)
    return ModelStats(
        nodes=nodes, initializers=initializers, initializer_bytes=nbytes, dynamic_dims=dynamic
    )


class Runner:
    """Runs a :class:`~surgery.pipeline.Pipeline` on an ``ir.Model`` in place.

    ``gates`` are added after the built-in ones (checker, signature, ort, parity); ``instruments``
    after progress, timing and the reproducer. Neither needs a change here: see :mod:`surgery.gates`.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        reproducer_dir: Path | None = None,
        progress: Progress | None = None,
        gates: Sequence[Gate] = (),
        instruments: Sequence[Instrument] = (),
    ) -> None:
        self.pipeline = pipeline
        self.reproducer_dir = reproducer_dir
        self.progress = progress or (lambda message: None)
        for gate in gates:
            if not isinstance(gate, Gate):
                raise TypeError(
                    f"{gate!r} is not a gate: it needs name, schedule, when(), start() and check()"
                )
        self.gates: list[Gate] = [cls() for cls in BUILTIN_GATES]
        self.gates += gates
        self.instruments: list[Instrument] = [ProgressInstrument(self.progress), TimingInstrument()]
        if reproducer_dir is not None:
            self.instruments.append(ReproducerInstrument(reproducer_dir))
        self.instruments.extend(instruments)

    # -- the run --------------------------------------------------------------------------
    def run(self, model: ir.Model, report: Report | None = None) -> tuple[ir.Model, Report]:
        report = report or Report()
        started = time.perf_counter()
        report.initial = model_stats(model)
        report.extra["original_outputs"] = [v.name for v in model.graph.outputs]
        run = RunState(pipeline=self.pipeline, model=model, report=report, progress=self.progress)
        active = [
            g
            for g in self.gates
            if any(g.when(run, s) is not Schedule.OFF for s in self.pipeline.steps)
        ]
        if active:
            run.original = LightProto(model)
        for gate in sorted(
            active, key=lambda g: getattr(g, "start_order", 0)
        ):  # stable: else as listed
            t0 = time.perf_counter()
            try:
                gate.start(run)
            except (
                OriginalCrash
            ) as exc:  # exit 2, with a reproducer of the original and the inputs it crashed on
                self._original_crashed(run, exc)
                raise
            report.gate_setup[gate.name] = time.perf_counter() - t0
        for instrument in self.instruments:
            instrument.start(run)
        deferred: list[Gate] = []
        initial_fingerprint = fingerprint(model) if active else None
        run.fingerprint_after = initial_fingerprint
        for index, step in enumerate(self.pipeline.steps, 1):
            run.index = index
            step_report = StepReport(
                index=index,
                name=step.name,
                numerics=step.pass_.numerics.value,
                options=step.pass_.options_dict(),
            )
            report.steps.append(step_report)
            previous = report.steps[-2].after if len(report.steps) > 1 else report.initial
            step_report.before = previous or model_stats(run.model)
            run.begin(step, None, step_report)
            run.fingerprint_before = run.fingerprint_after
            for instrument in self.instruments:
                instrument.before_pass(run)
            t0 = time.perf_counter()
            result = self._run_pass(step, run.model)
            step_report.seconds = time.perf_counter() - t0
            run.result = result
            run.model = result.model
            for instrument in self.instruments:
                instrument.after_pass(run)
            self._record(run, result, step_report, report)
            run.fingerprint_after = fingerprint(run.model) if active else None
            run.silent_edit = (
                bool(active)
                and not result.modified
                and run.fingerprint_after != run.fingerprint_before
            )
            if run.silent_edit:
                step_report.notes.append(
                    f"pass '{step.name}' returned modified=False but changed the model: gated anyway"
                )
                report.notes.append(
                    f"silent edit: pass '{step.name}' changed the model but reported modified=False"
                )
            if not (result.modified or result.chained or run.silent_edit):
                step_report.after = step_report.before
                for gate in self.gates:
                    step_report.gates[gate.name] = Outcome.skipped(gate.name, "unchanged")
                continue
            step_report.modified = True
            step_report.notes.extend(
                refresh_and_report(run.model)
            )  # fresh shapes: a runner invariant (issue 13)
            step_report.after = model_stats(run.model)
            for gate in self.gates:
                schedule = gate.when(run, step) if gate in active else Schedule.OFF
                if schedule is Schedule.EACH:
                    outcome = self._check(gate, run)
                elif schedule is Schedule.END:
                    outcome = Outcome(gate.name, Status.DEFERRED)
                    if gate not in deferred:
                        deferred.append(gate)
                else:
                    outcome = Outcome.skipped(gate.name)
                step_report.gates[gate.name] = outcome
                step_report.notes.extend(outcome.notes)
                if outcome.status is Status.FAILED:
                    self._fail(run, outcome)
            run.close()
            for instrument in self.instruments:
                instrument.after_gates(run)
        if deferred:
            self.progress("final checks")
            run.begin(None, None, None)
            # the end-of-run checks judge the whole run: what changed since the original
            run.fingerprint_before, run.fingerprint_after = (
                initial_fingerprint,
                fingerprint(run.model),
            )
            for gate in deferred:
                outcome = self._check(gate, run)
                report.final.append(outcome)
                report.notes.extend(f"final {gate.name}: {note}" for note in outcome.notes)
                if outcome.status is Status.FAILED:
                    self._fail(run, outcome)
            run.close()
        report.models.update(run.chained)
        report.chained = list(run.chained)
        report.seconds = time.perf_counter() - started
        return run.model, report

    def _record(
        self, run: RunState, result: SurgeryResult, step_report: StepReport, report: Report
    ) -> None:
        """What the pass said about itself, into the run state and the report."""
        step_report.modified = bool(result.modified)
        step_report.stats = dict(result.stats)
        step_report.notes.extend(result.notes)
        step_report.signature_changes = dict(result.signature_changes)
        run.renamed.update(result.renamed)
        run.chained.update(result.chained)
        report.models.update(result.artifacts)

    def _check(self, gate: Gate, run: RunState) -> Outcome:
        t0 = time.perf_counter()
        outcome = gate.check(run)
        outcome.seconds = time.perf_counter() - t0
        if run.step_report is not None:
            run.step_report.timings[gate.name] = outcome.seconds
        return outcome

    def _run_pass(self, step: Step, model: ir.Model) -> SurgeryResult:
        try:
            result = step.pass_(model)
        except PassError as exc:
            if exc.pass_name is None:
                raise PassError(str(exc), pass_name=step.name) from None
            raise
        except SurgeryError:
            raise
        except Exception as exc:
            logger.debug("pass %s raised:\n%s", step.name, traceback.format_exc())
            raise PassError(
                f"internal error: {type(exc).__name__}: {exc}", pass_name=step.name
            ) from exc
        if not isinstance(result, SurgeryResult):
            result = SurgeryResult(result.model, result.modified)
        undeclared = step.pass_.undeclared_stats(result.stats)
        if undeclared:
            cls = type(step.pass_).__name__
            result.notes.append(
                f"{step.name} reported statistics it does not declare: {', '.join(undeclared)} "
                f"(a bug of the pass: add them to {cls}.statistics)"
            )
        return result

    # -- failures -------------------------------------------------------------------------
    def _original_crashed(self, run: RunState, exc: OriginalCrash) -> None:
        run.close()
        message = str(exc)
        for instrument in self.instruments:
            write = getattr(instrument, "on_original_failure", None)
            if write is not None:
                exc.reproducer = write(run, exc.feeds, message) or exc.reproducer
        run.report.ok = False
        run.report.error = str(exc)

    def _fail(self, run: RunState, outcome: Outcome) -> None:
        run.close()
        name = run.step.name if run.step is not None else None
        message = outcome.message or f"gate {outcome.gate} failed"
        if name and not message.startswith(name) and "after pass" not in message:
            message = f"{name}: {message}"
        elif name is None and "at the end" not in message:
            message = f"at the end of the pipeline: {message}"
        folder: str | None = None
        for instrument in self.instruments:
            folder = instrument.on_failure(run, outcome, message) or folder
        run.report.ok = False
        run.report.error = message
        error = GateError(message, pass_name=name, gate=outcome.gate, reproducer=folder)
        error.report = run.report
        raise error


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
