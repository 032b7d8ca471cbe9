"""The runner: applies a pipeline's passes in order and gates each one.

After every pass that modified the model the runner (never the pass) checks it:

1. ``onnx.checker`` full check (strict shape inference), on a proto without the large weights;
2. the model loads in ONNX Runtime;
3. its outputs match the ORIGINAL model's on the same inputs within the step's tolerance.

A failed gate stops the run with a :class:`~surgery.errors.GateError` that names the pass, the
tensor and the numbers, after writing a reproducer folder. Each gate can run after each pass, at the
end only, or not at all (``[verify]`` and ``[pass.verify]``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.errors import GateError, InputError, PassError, SurgeryError
from surgery.graph import GraphLike, iter_graphs
from surgery.instruments import checker
from surgery.instruments.parity import ORT_ERRORS, Evaluation, Oracle, OrtLoadError, compare_outputs, evaluate
from surgery.instruments.reproducer import write_reproducer
from surgery.model_io import LightProto, graph_initializer_bytes
from surgery.pass_base import FeedHints, Numerics, SurgeryResult, Tolerance
from surgery.pipeline import Pipeline, Step
from surgery.report import ModelStats, Report, StepReport
from surgery.verify.explain import explain_ort_failure, is_input_failure
from surgery.verify.inputs import FeedPlan, plan_inputs

__all__ = ["Runner", "model_stats", "dynamic_dims"]

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


def _graph_dynamic_dims(graph: GraphLike) -> int:
    count = 0
    seen: set[ir.Value] = set()
    for values in ([*graph.inputs, *graph.outputs], *(node.outputs for node in graph)):
        for v in values:
            shape = v.shape
            if shape is None or v in seen:
                continue
            seen.add(v)
            for d in shape:
                if not isinstance(d, int):
                    count += 1
    return count


def dynamic_dims(model: ir.Model) -> int:
    """Number of non-constant dims (symbolic or unknown) over all typed values of all graphs."""
    return sum(_graph_dynamic_dims(graph) for graph in iter_graphs(model, functions=False))


def model_stats(model: ir.Model) -> ModelStats:
    """Node count, weights and dynamic dims of ``model``, in one walk over its graphs."""
    nodes = initializers = nbytes = dynamic = 0
    for graph in iter_graphs(model):
        nodes += len(graph)
        if isinstance(graph, ir.Function):
            continue
        dynamic += _graph_dynamic_dims(graph)
        initializers += len(graph.initializers)
        nbytes += graph_initializer_bytes(graph)
    return ModelStats(nodes=nodes, initializers=initializers, initializer_bytes=nbytes, dynamic_dims=dynamic)


@dataclasses.dataclass
class _State:
    """What the runner carries from pass to pass."""

    model: ir.Model
    snapshot: LightProto | None
    chained: dict[str, ir.Model]
    original: LightProto | None = None
    carried: Tolerance | None = None  # loosest tolerance of approx passes since the reference
    end_checks: set[str] = dataclasses.field(default_factory=set)
    """Gates deferred to the end of the run: "checker", "ort", "parity"."""
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)


class Runner:
    """Runs a :class:`~surgery.pipeline.Pipeline` on an ``ir.Model`` in place."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        reproducer_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.reproducer_dir = reproducer_dir
        self.progress = progress or (lambda message: None)

    # -- set-up ---------------------------------------------------------------------------
    def _modes(self, step: Step | None) -> tuple[str, str, str]:
        cfg = self.pipeline.verify
        sv = step.verify if step is not None else None
        return (
            (sv.checker if sv and sv.checker else cfg.checker),
            (sv.ort if sv and sv.ort else cfg.ort),
            (sv.parity if sv and sv.parity else cfg.parity),
        )

    def _needs_parity(self) -> bool:
        return any(self._modes(s)[2] != "off" for s in self.pipeline.steps)

    def _hints(self, model: ir.Model) -> FeedHints:
        hints = FeedHints()
        for step in self.pipeline.steps:
            hints.merge(step.pass_.feed_hints(model))
        return hints

    def _oracle(self, model: ir.Model, light: LightProto, report: Report) -> tuple[FeedPlan, Oracle]:
        cfg = self.pipeline.verify
        hints = self._hints(model)
        plan = plan_inputs(model, self.pipeline.inputs, hints, seed=cfg.seed)
        try:
            oracle = Oracle(model, plan.feeds, light)
        except Exception as first:  # ORT errors and crashes, OrtLoadError, reference-evaluator failures
            guessed = any("generated" in how and "=" in how for how in plan.provenance.values())
            if not guessed or not is_input_failure(first):
                raise InputError(explain_ort_failure(first, plan.feeds, plan.provenance)) from None
            plan = plan_inputs(model, self.pipeline.inputs, hints, seed=cfg.seed, ones=True)
            try:
                oracle = Oracle(model, plan.feeds, light)
            except Exception as second:
                raise InputError(explain_ort_failure(second, plan.feeds, plan.provenance)) from None
            report.notes.append("symbolic dims guessed first did not run the original; every symbolic dim set to 1")
        report.inputs = dict(plan.provenance)
        report.oracle = oracle.engine
        if oracle.uses_reference:
            report.notes.append("onnxruntime has no kernel for the original model: references come from onnx's ReferenceEvaluator")
        return plan, oracle

    # -- the run --------------------------------------------------------------------------
    def run(self, model: ir.Model, report: Report | None = None) -> tuple[ir.Model, Report]:
        report = report or Report()
        started = time.perf_counter()
        cfg = self.pipeline.verify
        report.initial = model_stats(model)
        report.extra["original_outputs"] = [v.name for v in model.graph.outputs]
        self._gated = any(m != "off" for s in self.pipeline.steps for m in self._modes(s))
        light = LightProto(model) if self._gated else None
        full_check = True
        if light is not None and any(self._modes(s)[0] != "off" for s in self.pipeline.steps):
            outcome = checker.check(light, full=True)
            if not outcome:
                basic = checker.check(light, full=False)
                if not basic:
                    raise InputError(f"the input model fails onnx.checker: {basic.message}; fix it or run with --verify off")
                full_check = False
                report.notes.append(f"the input model fails the checker's full check ({outcome.message}); gates use the basic check")
        plan: FeedPlan | None = None
        oracle: Oracle | None = None
        if self._needs_parity():
            self.progress("computing reference outputs of the original model")
            plan, oracle = self._oracle(model, light, report)
        state = _State(model=model, snapshot=light if self.reproducer_dir else None, chained={}, original=light)
        total = len(self.pipeline.steps)
        nodes_each_limit = cfg.parity_max_nodes
        for index, step in enumerate(self.pipeline.steps, 1):
            self.progress(f"[{index}/{total}] {step.name}")
            step_report = StepReport(
                index=index, name=step.name, numerics=step.pass_.numerics.value, options=step.pass_.options_dict()
            )
            report.steps.append(step_report)
            previous = report.steps[-2].after if len(report.steps) > 1 else report.initial
            step_report.before = previous or model_stats(state.model)
            t0 = time.perf_counter()
            result = self._run_pass(step, state.model)
            step_report.seconds = time.perf_counter() - t0
            state.model = result.model
            step_report.modified = bool(result.modified)
            step_report.stats = dict(result.stats)
            step_report.notes.extend(result.notes)
            state.renamed.update(result.renamed)
            for key, part in result.chained.items():
                state.chained[key] = part
            for key, value in result.artifacts.items():
                report.models[key] = value
            if not result.modified and not result.chained:
                step_report.after = step_report.before
                step_report.checker = step_report.ort = step_report.parity_status = "unchanged"
                continue
            step_report.after = model_stats(state.model)
            if not self._gated:
                step_report.checker = step_report.ort = step_report.parity_status = "off"
                continue
            self._gate_step(step, step_report, result, state, plan, oracle, full_check, nodes_each_limit, report)
        if state.end_checks:
            self._gate_end(state, plan, oracle, full_check, report)
        report.models.update(state.chained)
        report.chained = list(state.chained)
        report.seconds = time.perf_counter() - started
        return state.model, report

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
            raise PassError(f"internal error: {type(exc).__name__}: {exc}", pass_name=step.name) from exc
        if not isinstance(result, SurgeryResult):
            result = SurgeryResult(result.model, result.modified)
        return result

    def _tolerance(self, step: Step, state: _State) -> tuple[Tolerance, bool]:
        """The step's tolerance and whether the user set it explicitly."""
        user = step.verify.tolerance
        base = self.pipeline.verify.tolerance
        if user is not None:
            tol = user
        elif step.pass_.numerics is Numerics.APPROX and step.pass_.default_tolerance is not None:
            tol = step.pass_.default_tolerance.loosest(base)
        else:
            tol = base
        return tol.loosest(state.carried), user is not None

    def _gate_step(
        self,
        step: Step,
        step_report: StepReport,
        result: SurgeryResult,
        state: _State,
        plan: FeedPlan | None,
        oracle: Oracle | None,
        full_check: bool,
        nodes_each_limit: int,
        report: Report,
    ) -> None:
        checker_mode, ort_mode, parity_mode = self._modes(step)
        changes = step.pass_.numerics is Numerics.CHANGES or result.changed_semantics
        if parity_mode == "each" and step_report.after and step_report.after.nodes > nodes_each_limit and not changes:
            parity_mode = "end"
            step_report.notes.append(
                f"parity deferred to the end: {step_report.after.nodes} nodes > parity_max_nodes {nodes_each_limit}"
            )
        if changes and parity_mode == "end":
            parity_mode = "each"  # the reference must follow a semantic change
        for gate, mode in (("checker", checker_mode), ("ort", ort_mode), ("parity", parity_mode)):
            if mode == "end":
                state.end_checks.add(gate)
        light = LightProto(state.model)
        if checker_mode == "each":
            outcome = checker.check(light, full=full_check)
            step_report.checker = "ok" if outcome else "FAILED"
            if not outcome:
                self._fail(step, state, plan, report, "checker", f"onnx.checker rejects the model: {outcome.message}")
            for key, part in result.chained.items():
                outcome = checker.check(LightProto(part), full=full_check)
                if not outcome:
                    step_report.checker = "FAILED"
                    self._fail(step, state, plan, report, "checker", f"onnx.checker rejects the chained model '{key}': {outcome.message}")
        else:
            step_report.checker = "at end" if checker_mode == "end" else "off"
        tol, user_set = self._tolerance(step, state)
        if parity_mode == "each" and oracle is not None and plan is not None:
            feeds, expected, names = self._reference(state, plan, oracle)
            evaluation = self._evaluate(step, state, light, plan, oracle, report, step_report, feeds=feeds)
            diffs = compare_outputs(evaluation.outputs, expected, names, tol)
            step_report.parity = diffs
            if changes:
                for d in diffs:
                    d.enforced = user_set
                bad = [d for d in diffs if not d.ok and (user_set or d.problem is not None)]
                step_report.parity_status = "deviation reported" if not bad else "FAILED"
                deviation = max((d.max_abs for d in diffs), default=0.0)
                step_report.notes.append(
                    f"changes semantics: max abs deviation {deviation:.3g} from the reference; later passes are compared with this model"
                )
                if bad:
                    self._fail_parity(step, state, plan, report, bad, evaluation)
                oracle.rebase(evaluation.outputs, step.name)
                state.carried = None
            else:
                bad = [d for d in diffs if not d.ok]
                step_report.parity_status = "ok" if not bad else "FAILED"
                if bad:
                    self._fail_parity(step, state, plan, report, bad, evaluation)
                if step.pass_.numerics is Numerics.APPROX:
                    state.carried = tol
        elif ort_mode == "each":
            step_report.parity_status = "at end" if parity_mode == "end" else "off"
            self._evaluate(step, state, light, plan, oracle, report, step_report, load_only=True)
        else:
            step_report.ort = "at end" if ort_mode == "end" else "off"
            step_report.parity_status = "at end" if parity_mode == "end" else "off"
            if step.pass_.numerics is Numerics.APPROX:
                state.carried = tol
        if self.reproducer_dir is not None:
            state.snapshot = light

    def _evaluate(
        self,
        step: Step | None,
        state: _State,
        light: LightProto,
        plan: FeedPlan | None,
        oracle: Oracle | None,
        report: Report,
        step_report: StepReport | None,
        *,
        load_only: bool = False,
        feeds: dict[str, np.ndarray] | None = None,
    ) -> Evaluation:
        allow_reference = oracle is not None and oracle.uses_reference
        try:
            if load_only:
                from surgery.verify.ort import OrtSession

                try:
                    OrtSession(light).close()
                except ORT_ERRORS as exc:
                    from surgery.verify.ort import is_missing_kernel

                    if allow_reference and is_missing_kernel(exc):
                        if step_report:
                            step_report.ort = "no kernel (as the original)"
                        return Evaluation({}, "none")
                    raise OrtLoadError(str(exc).strip().splitlines()[0][:400]) from None
                if step_report:
                    step_report.ort = "ok"
                return Evaluation({}, "onnxruntime")
            assert plan is not None
            evaluation = evaluate(
                state.model, feeds if feeds is not None else plan.feeds, light=light,
                chained=list(state.chained.values()), allow_reference=allow_reference,
            )
        except OrtLoadError as exc:
            if step_report:
                step_report.ort = "FAILED"
            self._fail(step, state, plan, report, "ort", f"onnxruntime cannot load or run the model: {exc}")
        if step_report:
            step_report.ort = "ok" if evaluation.engine.startswith("onnxruntime") and "reference" not in evaluation.engine else "no kernel (as the original)"
        return evaluation

    def _gate_end(self, state: _State, plan: FeedPlan | None, oracle: Oracle | None, full_check: bool, report: Report) -> None:
        self.progress("final checks")
        light = LightProto(state.model)
        if "checker" in state.end_checks:
            outcome = checker.check(light, full=full_check)
            report.final_checks.append(f"final checker: {'ok' if outcome else 'FAILED'}")
            if not outcome:
                self._fail(None, state, plan, report, "checker", f"onnx.checker rejects the final model: {outcome.message}")
        if "parity" in state.end_checks and oracle is not None and plan is not None:
            tol = self.pipeline.verify.tolerance.loosest(state.carried)
            for s in self.pipeline.steps:
                if s.pass_.numerics is Numerics.APPROX and s.pass_.default_tolerance is not None:
                    tol = tol.loosest(s.verify.tolerance or s.pass_.default_tolerance)
            feeds, expected, names = self._reference(state, plan, oracle)
            evaluation = self._evaluate(None, state, light, plan, oracle, report, None, feeds=feeds)
            diffs = compare_outputs(evaluation.outputs, expected, names, tol)
            report.extra.setdefault("final_parity", [d.to_dict() for d in diffs])
            bad = [d for d in diffs if not d.ok]
            report.final_checks.append(f"final parity: {'ok' if not bad else 'FAILED'} ({len(diffs)} outputs)")
            if bad:
                self._fail_parity(None, state, plan, report, bad, evaluation)
        elif "ort" in state.end_checks or "parity" in state.end_checks:
            self._evaluate(None, state, light, plan, oracle, report, None, load_only=True)
            report.final_checks.append("final onnxruntime load: ok")

    def _reference(self, state: _State, plan: FeedPlan, oracle: Oracle) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
        """Feeds, expected outputs and output names to compare the current model against.

        Normally the parity feeds and the oracle's outputs. When a pass cut the model down to a
        slice of the original (``extract``), its inputs are intermediate tensors of the original:
        both the slice's feeds and its expected outputs are read from a run of the original.
        """
        inputs = {v.name for v in state.model.graph.inputs if v.name not in state.model.graph.initializers}
        if inputs <= set(plan.feeds) or state.original is None:
            return plan.feeds, oracle.outputs, oracle.output_names
        from surgery.partition import slice_reference

        feeds, expected = slice_reference(state.original.full_model(), state.model, plan.feeds)
        return feeds, expected, [v.name for v in state.model.graph.outputs]

    # -- failures -------------------------------------------------------------------------
    def _fail_parity(self, step: Step | None, state: _State, plan: FeedPlan | None, report: Report, bad: list, evaluation: Evaluation) -> None:
        worst = bad[0]
        where = f"after pass '{step.name}'" if step else "at the end of the pipeline"
        message = f"parity gate failed {where}: output {worst.describe()}"
        if len(bad) > 1:
            message += f"; {len(bad) - 1} more output(s) differ"
        divergence = self._divergence(state, plan, worst.tolerance, step is not None)
        if divergence:
            message += f"; {divergence}"
        self._fail(step, state, plan, report, "parity", message)

    def _divergence(self, state: _State, plan: FeedPlan | None, tol: Tolerance | None, after_step: bool) -> str | None:
        """Name the first tensor that diverges: between the model before the failing pass and
        after it (or the original and the final model for an end-of-run failure)."""
        reference = state.snapshot if after_step else state.original
        if reference is None or plan is None or tol is None:
            return None
        from surgery.verify.layerwise import divergence_message

        return divergence_message(reference.full_model(), state.model, plan.feeds, tol, renamed=state.renamed or None)

    def _fail(self, step: Step | None, state: _State, plan: FeedPlan | None, report: Report, gate: str, message: str) -> None:
        name = step.name if step else None
        if name and not message.startswith(name) and "after pass" not in message:
            message = f"{name}: {message}"
        folder: str | None = None
        if self.reproducer_dir is not None and state.snapshot is not None:
            try:
                passes = [dict(name=s.name, **_toml_options(s)) for s in ([step] if step else self.pipeline.steps)]
                cfg = self.pipeline.verify
                verify = {"checker": "each", "ort": "each", "parity": "each", "rtol": cfg.rtol, "atol": cfg.atol, "seed": cfg.seed}
                path = self.reproducer_dir
                write_reproducer(path, state.snapshot, plan.feeds if plan else {}, passes, verify, message)
                folder = str(path)
            except Exception as exc:  # the reproducer must never hide the real failure
                logger.warning("could not write the reproducer: %s", exc)
        report.ok = False
        report.error = message
        error = GateError(message, pass_name=name, gate=gate, reproducer=folder)
        error.report = report
        raise error


def _toml_options(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in step.pass_.options_dict().items():
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            value = value.tolist()
        out[key] = value
    return out

