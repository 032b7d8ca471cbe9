"""Branch coverage: a pass that changed an ``If`` branch or a ``Loop`` body must be tested on it.

Parity only sees the branches its samples take: ``cond = ReduceSum(x) > 1000`` is false on every
generated input, so a pass may rewrite the then-branch at will. When the fingerprint shows that a
pass changed a top-level ``If`` branch or ``Loop`` body, the condition values (the ``If``
condition; a ``Loop``'s trip count and condition) are read on every sample, from the model after
the pass, with those tensors exposed. A changed branch that no sample took triggers a search over
samples at the ends of the ranges (:func:`~surgery.verify.samples.extreme_samples`, through which
a condition that follows the inputs is reached); the first that takes it and on which the original
runs finitely joins the parity samples for the rest of the run. If none does, the gate fails,
naming the branch, unless ``[verify] allow_unexercised = true``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from surgery.gates.fingerprint import changed_graphs
from surgery.verify.samples import Sample, extreme_samples

if TYPE_CHECKING:  # pragma: no cover
    from surgery.gates.parity import ParityData
    from surgery.gates.state import RunState

__all__ = ["Coverage", "check_coverage"]

logger = logging.getLogger(__name__)

_TOP = re.compile(r"^graph/(If|Loop) '(?P<node>[^']*)'\.(?P<attr>then_branch|else_branch|body)")


@dataclasses.dataclass
class Coverage:
    branches: dict[str, Any] = dataclasses.field(default_factory=dict)
    failure: str | None = None
    tensor: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def _changed(state: RunState) -> list[tuple[ir.Node, str]]:
    """Top-level If/Loop nodes of the current model with a changed branch, and which branch."""
    paths = changed_graphs(state.fingerprint_before, state.fingerprint_after)
    if not paths:
        return []
    wanted: dict[str, set[str]] = {}
    for path in paths:
        m = _TOP.match(path)
        if m:
            wanted.setdefault(m.group("node"), set()).add(m.group("attr"))
    out: list[Any] = []
    for index, node in enumerate(state.model.graph):
        key = node.name or str(index)
        if node.op_type in ("If", "Loop") and key in wanted:
            out.extend((node, attr) for attr in sorted(wanted[key]))
    return out


def _taken(node: ir.Node, attr: str, values: Mapping[str, np.ndarray]) -> bool | None:
    """Whether the sample whose exposed tensors are ``values`` executed ``attr`` of ``node``."""
    def read(i: int) -> np.ndarray | None:
        v = node.inputs[i] if len(node.inputs) > i else None
        return None if v is None or not v.name or v.name not in values else np.asarray(values[v.name])

    if node.op_type == "If":
        cond = read(0)
        if cond is None:
            return None
        taken = bool(cond.reshape(-1)[0])
        return taken if attr == "then_branch" else not taken
    trip, cond = read(0), read(1)
    runs = True
    if node.inputs and node.inputs[0] is not None and trip is not None:
        runs = runs and int(trip.reshape(-1)[0]) > 0
    if len(node.inputs) > 1 and node.inputs[1] is not None and cond is not None:
        runs = runs and bool(cond.reshape(-1)[0])
    return runs


def _label(node: ir.Node, attr: str) -> str:
    what = {"then_branch": "then-branch", "else_branch": "else-branch", "body": "body"}[attr]
    return f"{what} of {node.op_type} '{node.name}'"


def _probe(state: RunState, names: list[str], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    from surgery.verify.layerwise import run_exposing

    try:
        return run_exposing(state.model, feeds, names)
    except Exception as exc:  # a model that cannot run here is the other gates' business
        logger.info("could not read branch conditions: %s", exc)
        return None


def check_coverage(state: RunState, data: ParityData) -> Coverage:
    coverage = Coverage()
    changed = _changed(state)
    if not changed:
        return coverage
    state.close()  # the probes open sessions of their own: one at a time
    names = sorted({v.name for node, _ in changed for v in node.inputs[:2] if v is not None and v.name})
    for node, attr in changed:
        coverage.branches[_label(node, attr)] = []
    inputs = {v.name for v in state.model.graph.inputs}
    for sample in data.samples:
        if not inputs <= set(sample.feeds) | set(state.model.graph.initializers):
            return coverage  # a slice of the original: its feeds are intermediates, not samples
        values = _probe(state, names, sample.feeds)
        if values is None:
            return coverage
        for node, attr in changed:
            if _taken(node, attr, values):
                coverage.branches[_label(node, attr)].append(sample.name)
    missing = [(node, attr) for node, attr in changed if not coverage.branches[_label(node, attr)]]
    for node, attr in list(missing):
        if not _condition_inputs(state.model, [node]):  # a constant condition: no input can take it
            coverage.notes.append(f"{_label(node, attr)} was changed; its condition depends on no graph input, so no input executes it")
            missing.remove((node, attr))
            del coverage.branches[_label(node, attr)]
    if missing and data.rebased_after is None:
        _search(state, data, names, missing, coverage)
    missing = [(node, attr) for node, attr in changed if not coverage.branches.get(_label(node, attr), True)]
    if missing:
        label = _label(*missing[0])
        if state.pipeline.verify.allow_unexercised:
            coverage.notes.append(f"{label} was changed but never executed by the parity samples (allowed by [verify] allow_unexercised)")
            return coverage
        coverage.tensor = label
        coverage.failure = (
            f"{label} was changed but never executed by the parity samples "
            f"({', '.join(repr(s.name) for s in data.samples)}); declare inputs that take it, "
            "or set [verify] allow_unexercised = true"
        )
    return coverage


def _condition_inputs(model: ir.Model, nodes: list[ir.Node]) -> list[str]:
    """Graph inputs the conditions of ``nodes`` are computed from (walking producers back)."""
    inputs = {v.name for v in model.graph.inputs}
    found: list[str] = []
    seen: set[int] = set()
    stack = [v for node in nodes for v in node.inputs[:2] if v is not None]
    while stack and len(seen) < 10_000:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        producer = value.producer()
        if producer is None:
            if value.name and value.name in inputs and value.name not in found:
                found.append(value.name)
            continue
        stack.extend(v for v in producer.inputs if v is not None)
    return found


def _followed(data: ParityData, names: list[str]) -> list[Sample]:
    """Samples that vary only the inputs a condition follows: bools flipped, numbers at range ends."""
    planned = data.plan.feeds
    out: list[Sample] = []
    flipped = {n: np.logical_not(planned[n]) for n in names if n in planned and np.asarray(planned[n]).dtype.kind == "b"}
    if flipped:
        out.append(Sample("condition inputs flipped", {**planned, **flipped}, 1.0, dict.fromkeys(flipped, "flipped")))
    numeric = [n for n in names if n in planned and np.asarray(planned[n]).dtype.kind in "iuf"]
    for scale in (1.0, 1e3, 1e6):
        for sign in (1, -1):
            feeds = dict(planned)
            for n in numeric:
                a = np.asarray(planned[n])
                if a.dtype.kind == "f":
                    feeds[n] = np.full(a.shape, sign * scale, dtype=a.dtype)
                else:
                    info = np.iinfo(a.dtype)
                    feeds[n] = np.full(a.shape, int(np.clip(sign * scale, info.min, info.max)), dtype=a.dtype)
            if numeric:
                out.append(Sample(f"condition inputs at {sign * scale:g}", feeds, scale, dict.fromkeys(numeric, f"all {sign * scale:g}")))
    return out


def _search(state: RunState, data: ParityData, names: list[str], missing: list[tuple[ir.Node, str]], coverage: Coverage) -> None:
    """Follow the conditions back to the graph inputs and vary those, then try samples at the
    ends of the ranges; keep each sample that takes a missing branch."""
    import itertools

    from surgery.gates.parity import _finite, reference_outputs

    cfg = state.pipeline.verify
    followed = _followed(data, _condition_inputs(state.model, [n for n, _ in missing]))
    extremes = extreme_samples(state.model_original(), state.pipeline.inputs, data.hints, data.plan, seed=cfg.seed)
    for sample in itertools.chain(followed, extremes):
        if not missing:
            return
        values = _probe(state, names, sample.feeds)
        if values is None:
            continue
        takes = [(n, a) for n, a in missing if _taken(n, a, values)]
        if not takes:
            continue
        reference = reference_outputs(state, [sample])[0]
        if isinstance(reference, BaseException) or not _finite(reference, data.random):
            continue
        found = Sample(f"{sample.name} (found for {_label(*takes[0])})", sample.feeds, sample.scale, sample.provenance)
        data.samples.append(found)
        data.references.append(reference)
        for node, attr in takes:
            coverage.branches[_label(node, attr)].append(found.name)
            coverage.notes.append(f"{_label(node, attr)}: no planned sample took it; sample '{found.name}' from the range ends does")
        missing[:] = [m for m in missing if m not in takes]
