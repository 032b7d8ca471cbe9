"""The parity gate: the model's outputs match the original's on several samples.

Before the first pass (:meth:`ParityGate.start`) it plans the inputs, draws the extra samples
(:mod:`surgery.verify.samples`), runs the ORIGINAL once per sample in one session that is freed
straight away (at most one large session alive), drops and replaces any sample on which the
original fails or gives NaN/Inf, and finds the outputs that depend on random ops. After a pass it
runs the model on every sample in the step's one session and compares each output, floats within
the step's tolerance and integers exactly, keeping the worst sample per output. When the pass
changed an ``If`` branch or ``Loop`` body, it first checks that some sample executed it
(:mod:`surgery.gates.branches`).

Tolerance policy (unchanged): an exact pass is held to ``[verify]``; an approx pass to its
``default_tolerance`` (or the user's), carried to later passes since they are compared with the
original; a ``changes`` pass has its deviation reported (enforced only against a user tolerance)
and the references are rebased onto its outputs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.errors import InputError, OriginalCrash
from surgery.gates.base import BaseGate, Outcome, Schedule
from surgery.gates.randomness import random_outputs
from surgery.gates.state import MissingKernel, RunState
from surgery.graph import is_onnx_domain, value_names
from surgery.instruments.parity import ORT_ERRORS, OrtLoadError
from surgery.pass_base import FeedHints, Numerics, Tolerance
from surgery.pipeline import Step
from surgery.shapes.observed import correct_observed_shapes, observation_chunks, observe_shapes
from surgery.verify.compare import ArrayDiff, diff_arrays
from surgery.verify.explain import explain_ort_failure, is_input_failure
from surgery.verify.inputs import FeedPlan, plan_inputs
from surgery.verify.samples import Sample, candidate_samples
from surgery.verify.worker import OrtCrash

__all__ = ["ParityData", "ParityGate", "reference_outputs"]

logger = logging.getLogger(__name__)

RANDOM = "not comparable: the original is random"


@dataclasses.dataclass
class ParityData:
    """The parity gate's memory for one run."""

    plan: FeedPlan
    hints: FeedHints
    samples: list[Sample]
    references: list[dict[str, np.ndarray]]
    output_names: list[str]
    random: dict[str, str]
    dropped: list[str] = dataclasses.field(default_factory=list)
    rebased_after: str | None = None
    original_labels: dict[str, str] = dataclasses.field(default_factory=dict)
    """Path → label of every ``If`` branch / ``Loop`` body of the original (nested ones too)."""
    original_taken: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Path → the samples that executed it on the ORIGINAL (observed while computing references)."""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _finite(outputs: Mapping[str, np.ndarray], skip: Mapping[str, str]) -> bool:
    for name, array in outputs.items():
        if name in skip:
            continue
        array = np.asarray(array)
        if array.dtype.kind in "fc" and array.size and not np.all(np.isfinite(array)):
            return False
    return True


class _Original:
    """One session of the original model, run on sample after sample, then freed.

    Where the original has ``If``/``Loop`` nodes, the session carries a marker output per branch
    (:mod:`surgery.gates.coverage`): after each run ``taken`` says which branches executed. With
    ``observe``, the session also exposes those main-graph tensors: a run with ``shapes=True``
    records their shapes in ``shapes`` (the observation of issue 13 rides on the planned run
    instead of sessions of its own). Should that session fail, a plain one takes over.
    """

    def __init__(self, run: RunState, observe: Sequence[ir.Value] = ()) -> None:
        from surgery.gates.branches import MarkerSession
        from surgery.gates.coverage import branch_targets

        self.run_state = run
        self.session: Any = None
        self.marked: MarkerSession | None = None
        self.taken: dict[str, bool] | None = None
        self.used_reference_evaluator = False
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.observing = False
        # the light proto tells cheaply whether there is any control flow to mark
        assert run.original is not None
        flow = any(
            n.op_type in ("If", "Loop") and is_onnx_domain(n.domain)
            for n in run.original.proto.graph.node
        )
        targets = branch_targets(run.model_original()) if flow else []
        self.labels = {t.path: t.label for t in targets}
        if targets or observe:
            try:
                self.marked = MarkerSession(run.original, targets, observe)
                self.observing = bool(observe)
                return
            except Exception as exc:  # the plain session below says what is wrong, if anything
                logger.info("branch markers not added to the original: %s", exc)
        self._plain()

    def _plain(self) -> None:
        from surgery.verify.ort import OrtSession, is_missing_kernel

        run = self.run_state
        try:
            assert run.original is not None, "the runner keeps the original before any gate runs"
            self.session = OrtSession(run.original)
        except ORT_ERRORS as exc:
            if not is_missing_kernel(exc):
                error = OrtLoadError(_short(exc))
                error.detail = str(exc)  # ORT's whole message, for explain_ort_failure
                raise error from None
            self.used_reference_evaluator = True

    def __call__(
        self, feeds: Mapping[str, np.ndarray], *, shapes: bool = False
    ) -> dict[str, np.ndarray]:
        from surgery.verify.ort import is_missing_kernel
        from surgery.verify.reference import run_reference

        self.taken = None
        if self.marked is not None:
            try:
                outputs, self.taken = self.marked.run(feeds, exposed=shapes and self.observing)
            except Exception as exc:  # instrumentation must never change the verdict: plain session
                logger.info(
                    "marked session of the original failed (%s); running it plain", _short(exc)
                )
                self.marked.close()
                self.marked, self.observing = None, False
                self._plain()
                return self(feeds)
            if (
                shapes and self.observing
            ):  # the exposed tensors and the graph outputs, as observe_shapes
                for exposed in self.marked.exposed:
                    name = exposed or ""
                    array = outputs.pop(name, None)
                    if isinstance(array, np.ndarray):
                        self.shapes[name] = tuple(int(d) for d in array.shape)
                for name, array in outputs.items():
                    if isinstance(array, np.ndarray):
                        self.shapes[name] = tuple(int(d) for d in array.shape)
            return outputs
        if self.session is not None:
            try:
                return self.session.run(feeds)
            except ORT_ERRORS as exc:
                if not is_missing_kernel(exc):
                    raise
                self.close()
                self.used_reference_evaluator = True
        return run_reference(self.run_state.model_original(), feeds)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        if self.marked is not None:
            self.marked.close()
        self.session = self.marked = None


def _original_error(exc: BaseException, plan: Any) -> InputError:
    """The exit-2 error for an original that does not run; a crash keeps its inputs for the reproducer."""
    message = explain_ort_failure(exc, plan.feeds, plan.provenance)
    if isinstance(exc, OrtCrash) or isinstance(exc.__cause__, OrtCrash):
        return OriginalCrash(message, feeds=plan.feeds)
    return InputError(message)


def _record(original: _Original, data: ParityData | None, sample: Sample) -> None:
    from surgery.gates.branches import record

    if data is not None and original.taken is not None:
        record(data.original_taken, original.taken, sample.name)


def _try(
    original: _Original, sample: Sample, *, shapes: bool = False
) -> dict[str, np.ndarray] | BaseException:
    try:
        return original(sample.feeds, shapes=shapes)
    except (
        Exception
    ) as exc:  # ORT and reference-evaluator errors alike: the caller drops the sample
        return exc


def reference_outputs(
    run: RunState, samples: list[Sample], data: ParityData | None = None
) -> list[dict[str, np.ndarray] | BaseException]:
    """The original's outputs on each sample (an exception where it fails), in one session;
    with ``data``, the branches each sample executed on the original are recorded there."""
    original = _Original(run)
    out: list[dict[str, np.ndarray] | BaseException] = []
    try:
        for sample in samples:
            try:
                out.append(original(sample.feeds))
                _record(original, data, sample)
            except (
                Exception
            ) as exc:  # ORT and reference-evaluator errors alike: the sample is dropped
                out.append(exc)
    finally:
        original.close()
    if original.used_reference_evaluator:
        run.uses_reference_evaluator = True
    return out


class ParityGate(BaseGate):
    """Outputs equal the original's on every sample (see the module docstring)."""

    name = "parity"

    # -- schedule -----------------------------------------------------------------------
    def when(self, run: RunState, step: Step | None) -> Schedule:
        cfg = run.pipeline.verify
        sv = step.verify.parity if step is not None else None
        mode = Schedule(sv or cfg.parity)
        if step is None or run.step is not step:
            return mode
        changes = step.pass_.numerics is Numerics.CHANGES or bool(
            run.result and run.result.changed_semantics
        )
        report = run.step_report
        after = report.after if report else None
        if (
            report is not None
            and mode is Schedule.EACH
            and after is not None
            and after.nodes > cfg.parity_max_nodes
            and not changes
        ):
            report.notes.append(
                f"parity deferred to the end: {after.nodes} nodes > parity_max_nodes {cfg.parity_max_nodes}"
            )
            return Schedule.END
        if changes and mode is Schedule.END:
            return Schedule.EACH  # the reference must follow a semantic change
        return mode

    # -- references ---------------------------------------------------------------------
    def start(self, run: RunState) -> None:
        cfg = run.pipeline.verify
        run.progress("computing reference outputs of the original model")
        hints = FeedHints()
        for step in run.pipeline.steps:
            hints.merge(step.pass_.feed_hints(run.model))
        randoms = random_outputs(run.model)
        plan = plan_inputs(run.model, run.pipeline.inputs, hints, seed=cfg.seed)
        chunks = observation_chunks(run.model, plan.feeds)
        try:
            # one session for every reference run of the original; it observes the first chunk of shapes
            original = _Original(run, chunks[0] if chunks else ())
        except (OrtLoadError, *ORT_ERRORS) as exc:
            # what ONNX Runtime said (opset, op, domain, IR version, file), not a guess about inputs
            raise _original_error(exc, plan) from None
        try:
            planned = Sample("planned", plan.feeds)
            first = _try(original, planned, shapes=True)
            if isinstance(first, BaseException):
                guessed = any("generated" in how and "=" in how for how in plan.provenance.values())
                if not guessed or not is_input_failure(first):
                    raise _original_error(first, plan) from None
                plan = plan_inputs(run.model, run.pipeline.inputs, hints, seed=cfg.seed, ones=True)
                planned = Sample("planned", plan.feeds)
                original.shapes.clear()
                first = _try(original, planned, shapes=True)
                if isinstance(first, BaseException):
                    raise _original_error(first, plan) from None
                run.report.notes.append(
                    "symbolic dims guessed first did not run the original; every symbolic dim set to 1"
                )
            data = ParityData(
                plan, hints, [planned], [first], value_names(run.model.graph.outputs), randoms
            )
            data.original_labels = dict(getattr(original, "labels", {}))
            _record(original, data, planned)
            if cfg.samples > 1:
                self._extra_samples(run, data, cfg.samples - 1, original)
        finally:
            original.close()
            run.uses_reference_evaluator = (
                run.uses_reference_evaluator or original.used_reference_evaluator
            )
        run.store[self.name] = data
        # execution beats wrong inference (issue 13): observed shapes of the original correct onnx's
        # the first chunk came with the planned run: observe the rest; the graph outputs' shapes are
        # the planned run's own (also when there is nothing else to observe, or too much)
        observed = dict(original.shapes)
        if len(chunks) > 1:
            observed.update(observe_shapes(run.model, plan.feeds, chunks[1:]))
        if isinstance(first, Mapping):
            for name, array in first.items():
                if isinstance(array, np.ndarray):
                    observed.setdefault(name, tuple(int(d) for d in array.shape))
        run.report.notes.extend(correct_observed_shapes(run.model, plan.feeds, observed))
        run.report.inputs = dict(plan.provenance)
        run.report.oracle = "reference evaluator" if run.uses_reference_evaluator else "onnxruntime"
        run.report.extra["samples"] = [
            {
                "name": s.name,
                "scale": s.scale,
                "inputs": dict(s.provenance) or dict(plan.provenance),
            }
            for s in data.samples
        ]
        if data.original_labels:
            run.report.extra["branches_original"] = {
                label: list(data.original_taken.get(path, []))
                for path, label in data.original_labels.items()
            }
        if data.dropped:
            run.report.notes.append(
                "parity samples dropped (the original fails or gives NaN/Inf on them): "
                + "; ".join(data.dropped)
            )
        if randoms:
            run.report.extra["random_outputs"] = dict(randoms)
            run.report.notes.append(
                "the original model is random ("
                + ", ".join(sorted(set(randoms.values())))
                + "): parity on output(s) "
                + ", ".join(sorted(randoms))
                + f" is {RANDOM}"
            )
        if run.uses_reference_evaluator:
            run.report.notes.append(
                "onnxruntime has no kernel for the original model: references come from onnx's ReferenceEvaluator"
            )

    def _extra_samples(
        self, run: RunState, data: ParityData, wanted: int, original: _Original
    ) -> None:
        """Run the original on candidates until ``wanted`` wide samples ran finitely."""
        candidates = candidate_samples(
            run.model, run.pipeline.inputs, data.hints, data.plan, seed=run.pipeline.verify.seed
        )
        wide = 0
        for sample in candidates:
            second = sample.name == "second size"
            if not second and wide >= wanted:
                break
            outputs = _try(original, sample)
            if isinstance(outputs, BaseException):
                data.dropped.append(f"'{sample.name}' (the original fails: {_short(outputs)})")
                continue
            if not _finite(outputs, data.random):
                data.dropped.append(f"'{sample.name}' (the original gives NaN/Inf)")
                continue
            data.samples.append(sample)
            data.references.append(outputs)
            _record(original, data, sample)
            wide += 0 if second else 1

    # -- the check ----------------------------------------------------------------------
    def _tolerance(self, state: RunState) -> tuple[Tolerance, bool]:
        cfg = state.pipeline.verify
        base = cfg.tolerance
        step = state.step
        if step is None:
            tol = base.loosest(state.carried)
            for s in state.pipeline.steps:
                if s.pass_.numerics is Numerics.APPROX and s.pass_.default_tolerance is not None:
                    tol = tol.loosest(s.verify.tolerance or s.pass_.default_tolerance)
            return tol, False
        user = step.verify.tolerance
        if user is not None:
            tol = user
        elif step.pass_.numerics is Numerics.APPROX and step.pass_.default_tolerance is not None:
            tol = step.pass_.default_tolerance.loosest(base)
        else:
            tol = base
        return tol.loosest(state.carried), user is not None

    def _expected(
        self, state: RunState, data: ParityData, index: int
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
        """Feeds, expected outputs and names for sample ``index`` (a slice of the original for ``extract``)."""
        sample = data.samples[index]
        inputs = {
            v.name for v in state.model.graph.inputs if v.name not in state.model.graph.initializers
        }
        if inputs <= set(sample.feeds) or state.original is None:
            return sample.feeds, data.references[index], data.output_names
        from surgery.partition import slice_reference

        feeds, expected = slice_reference(state.model_original(), state.model, sample.feeds)
        return feeds, expected, value_names(state.model.graph.outputs)

    def check(self, state: RunState) -> Outcome:
        data: ParityData = state.store[self.name]
        cfg = state.pipeline.verify
        step = state.step
        tol, user_set = self._tolerance(state)
        changes = step is not None and (
            step.pass_.numerics is Numerics.CHANGES
            or bool(state.result and state.result.changed_semantics)
        )
        from surgery.gates.branches import check_coverage

        coverage = check_coverage(state, data)
        if coverage.failure is not None:
            return Outcome.failed(
                self.name,
                coverage.failure,
                tensor=coverage.tensor,
                branches=coverage.branches,
                samples=[s.name for s in data.samples],
            )
        worst: dict[str, ArrayDiff] = {}
        per_sample: dict[str, float] = {}
        all_outputs: list[dict[str, np.ndarray]] = []
        for index, sample in enumerate(data.samples):
            feeds, expected, names = self._expected(state, data, index)
            try:
                outputs = state.run(feeds, allow_reference=state.uses_reference_evaluator)
            except MissingKernel as exc:
                return Outcome.failed(
                    self.name, f"onnxruntime has no kernel for the model (the original runs): {exc}"
                )
            except OrtLoadError as exc:
                where = (
                    "" if index == 0 else f" on sample '{sample.name}' (where the original runs)"
                )
                return Outcome.failed(
                    self.name,
                    f"onnxruntime cannot load or run the model{where}: {exc}",
                    samples=[sample.name],
                )
            all_outputs.append(outputs)
            sample_tol = Tolerance(tol.rtol, tol.atol * sample.scale)
            for name in names:
                d = diff_arrays(
                    name,
                    outputs.get(name),
                    expected.get(name),
                    sample_tol,
                    int_tolerance=cfg.int_tolerance,
                )
                d.sample = sample.name
                if (
                    name in data.random
                ):  # never blamed on a node: the original itself differs run to run
                    d.comparable, d.ok, d.problem = False, True, None
                if d.comparable:
                    per_sample[sample.name] = max(per_sample.get(sample.name, 0.0), d.max_abs)
                # shown: the planned sample's numbers, unless a later sample fails
                previous = worst.get(name)
                if previous is None or (previous.ok and not d.ok):
                    worst[name] = d
        diffs = [worst[n] for n in worst]
        samples = [s.name for s in data.samples]
        numbers: dict[str, Any] = {
            "max_abs": max((d.max_abs for d in diffs if d.comparable), default=0.0),
            "rtol": tol.rtol,
            "atol": tol.atol,
            "int_tolerance": cfg.int_tolerance,
            "max_abs_per_sample": per_sample,
        }
        notes = list(coverage.notes)
        if coverage.covered is not None:
            numbers["branches_covered"] = coverage.covered
        random = [d.name for d in diffs if not d.comparable]
        if random:
            notes.append(f"output(s) {', '.join(random)}: {RANDOM}")
        if changes:
            for d in diffs:
                d.enforced = user_set
            bad = [d for d in diffs if not d.ok and (user_set or d.problem is not None)]
            if bad:
                return self._failure(state, data, bad, numbers, samples, coverage.branches, diffs)
            deviation = max((d.max_abs for d in diffs if d.comparable), default=0.0)
            notes.append(
                f"changes semantics: max abs deviation {deviation:.3g} from the reference; later passes are compared with this model"
            )
            data.references = [
                {k: v for k, v in out.items() if k in data.output_names} for out in all_outputs
            ]
            data.rebased_after = step.name if step else None
            state.carried = None
            return Outcome.passed(
                self.name,
                "deviation reported",
                numbers=numbers,
                samples=samples,
                branches=coverage.branches,
                diffs=diffs,
                notes=notes,
            )
        bad = [d for d in diffs if not d.ok]
        if bad:
            return self._failure(state, data, bad, numbers, samples, coverage.branches, diffs)
        if step is not None and step.pass_.numerics is Numerics.APPROX:
            state.carried = tol
        return Outcome.passed(
            self.name,
            numbers=numbers,
            samples=samples,
            branches=coverage.branches,
            diffs=diffs,
            notes=notes,
        )

    def _failure(
        self,
        state: RunState,
        data: ParityData,
        bad: list[ArrayDiff],
        numbers: dict[str, Any],
        samples: list[str],
        branches: dict[str, Any],
        diffs: list[ArrayDiff],
    ) -> Outcome:
        first = bad[0]
        where = f"after pass '{state.step.name}'" if state.step else "at the end of the pipeline"
        message = f"parity gate failed {where}: output {first.describe()}"
        if len(bad) > 1:
            message += f"; {len(bad) - 1} more output(s) differ"
        index = next((i for i, s in enumerate(data.samples) if s.name == first.sample), 0)
        divergence = self._divergence(state, data.samples[index].feeds, first.tolerance)
        if divergence:
            message += f"; {divergence}"
        state.store["failing_sample"] = index
        return Outcome.failed(
            self.name,
            message,
            numbers=numbers,
            tensor=first.name,
            samples=samples,
            branches=branches,
            diffs=diffs,
        )

    def _divergence(
        self, state: RunState, feeds: Mapping[str, np.ndarray], tol: Tolerance | None
    ) -> str | None:
        """Name the first tensor that diverges: between the model before the failing pass and
        after it (or the original and the final model for an end-of-run failure)."""
        reference = state.snapshot if not state.at_end else state.original
        if reference is None or tol is None:
            return None
        from surgery.verify.layerwise import divergence_message

        state.close()  # one large session at a time
        return divergence_message(
            reference.full_model(), state.model, feeds, tol, renamed=state.renamed or None
        )
