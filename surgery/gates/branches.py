"""Branch coverage: a pass that changed an ``If`` branch or a ``Loop`` body must be tested on it.

Parity only sees the branches its samples take: ``cond = ReduceSum(x) > 1000`` is false on every
generated input, so a pass may rewrite the then-branch at will. Which branches each sample
executes is observed with markers (:mod:`surgery.gates.coverage`), nested branches included: on
the ORIGINAL while its references are computed (the parity gate's one reference session), and on
the new model, in one probe session, whenever the fingerprint shows that a pass changed a branch.

A changed branch (the innermost changed one: executing it executes those around it) that no
sample took triggers a search for inputs that take it. The condition of every ``If``/``Loop`` on
the way is followed back to a comparison of values of the main graph (``Greater(ReduceSum(x),
1000)``, ``Equal(n, 7)``, a trip count); the graph inputs it reads are filled with ``t``, shifted
by ``t`` or scaled by ``t``, the compared difference is measured at two values of ``t`` and the
crossing solved for (a secant step; ints at the rounded value ±1); then samples with the
condition's inputs flipped or at large magnitudes, and samples at the ends of the ranges are
tried. The first found samples on which the original runs finitely join the parity samples for
the rest of the run. If none does, the gate fails naming the branch and the samples, unless
``[verify] allow_unexercised = true``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from surgery.gates.coverage import Target, branch_targets, instrument
from surgery.gates.fingerprint import changed_graphs
from surgery.model_io import LightProto
from surgery.verify.samples import Sample, extreme_samples, fixed_inputs

if TYPE_CHECKING:  # pragma: no cover
    from surgery.gates.parity import ParityData
    from surgery.gates.state import RunState

__all__ = ["MAX_PROBES", "Coverage", "MarkerSession", "check_coverage"]

logger = logging.getLogger(__name__)

MAX_PROBES = 80
"""Probe runs of the new model the search may spend on one step."""

_COMPARE = {"Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal"}
_THROUGH = {"Not", "Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape", "Flatten"}


@dataclasses.dataclass
class Coverage:
    branches: dict[str, Any] = dataclasses.field(default_factory=dict)
    """label → {"original": samples, "new": samples or None (not probed), "changed": bool}."""
    failure: str | None = None
    tensor: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def covered(self) -> str | None:
        """``"k/n"``: changed branches executed by some sample, of those changed."""
        changed = [b for b in self.branches.values() if b["changed"]]
        if not changed:
            return None
        return f"{sum(1 for b in changed if b['new'])}/{len(changed)}"


class MarkerSession:
    """One ONNX Runtime session of a model with a marker output per branch (and exposed values)."""

    def __init__(
        self, light: LightProto, targets: Sequence[Target], expose: Sequence[ir.Value] = ()
    ) -> None:
        from surgery.verify.ort import OrtSession

        marked, self.markers = instrument(light, targets, expose)
        self.outputs = [o.name for o in light.proto.graph.output]
        self.session = OrtSession(marked)
        self.exposed = [v.name for v in expose]
        self.runs = 0

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        outputs: Sequence[str] | None = None,
        exposed: bool = True,
    ) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
        """The model's outputs (or only ``outputs``), the exposed values (unless ``exposed`` is
        False) and path → executed."""
        self.runs += 1
        wanted = None
        if outputs is not None or not exposed:
            names = list(outputs) if outputs is not None else self.outputs
            wanted = [*names, *(self.exposed if exposed else ()), *self.markers]
        out = self.session.run(feeds, wanted)
        taken = {
            self.markers[k].path: bool(np.asarray(out.pop(k)).reshape(-1)[0])
            for k in list(out)
            if k in self.markers
        }
        return out, taken

    def close(self) -> None:
        self.session.close()


def record(table: dict[str, list[str]], taken: Mapping[str, bool] | None, sample: str) -> None:
    """Add ``sample`` to the samples of every path it executed."""
    for path, yes in (taken or {}).items():
        names = table.setdefault(path, [])
        if yes and sample not in names:
            names.append(sample)


def _innermost(changed: list[Target]) -> list[Target]:
    paths = [t.path for t in changed]
    return [t for t in changed if not any(p.startswith(t.path + "/") for p in paths)]


def _level_nodes(model: ir.Model, target: Target) -> list[ir.Node]:
    """The ``If``/``Loop`` node of every level of ``target``'s chain."""
    nodes: list[ir.Node] = []
    graph: ir.Graph = model.graph
    for _, index, _, attr in target.chain:
        node = list(graph)[index] if index < len(graph) else None
        if node is None:
            break
        nodes.append(node)
        graph = node.attributes[attr].as_graph()
    return nodes


def check_coverage(state: RunState, data: ParityData) -> Coverage:
    coverage = Coverage()
    original = data.original_taken
    changed_paths = set(changed_graphs(state.fingerprint_before, state.fingerprint_after))
    targets = branch_targets(state.model) if changed_paths else []
    changed = [t for t in targets if t.path in changed_paths]
    for path, label in data.original_labels.items():
        coverage.branches[label] = {
            "original": list(original.get(path, [])),
            "new": None,
            "changed": False,
        }
    if not changed:
        return coverage
    inputs = {v.name for v in state.model.graph.inputs}
    if not all(inputs <= set(s.feeds) | set(state.model.graph.initializers) for s in data.samples):
        return coverage  # a slice of the original: its feeds are intermediates, not samples
    state.close()  # the probe is a session of its own: one at a time
    required = _innermost(changed)
    try:
        probe = MarkerSession(state.light(), targets, _operands(state.model, required))
    except Exception as exc:  # a model that cannot load is the ort gate's business
        logger.info("could not instrument the branches: %s", exc)
        coverage.notes.append(
            f"branch coverage not observed (the marked model does not load: {_first_line(exc)})"
        )
        return coverage
    taken_new: dict[str, list[str]] = {}
    found: list[tuple[Sample, list[Target]]] = []
    try:
        for sample in data.samples:
            try:
                _, taken = probe.run(sample.feeds, outputs=[])
            except Exception as exc:  # the parity run reports a model that cannot run
                logger.info("could not run the branch probe: %s", exc)
                coverage.notes.append(
                    f"branch coverage not observed (the marked model does not run: {_first_line(exc)})"
                )
                return coverage
            record(taken_new, taken, sample.name)
        missing = [t for t in required if not taken_new.get(t.path)]
        for target in list(missing):
            if not _condition_inputs(state.model, _level_nodes(state.model, target)):
                coverage.notes.append(
                    f"{target.label} was changed; its condition depends on no graph input, so no input executes it"
                )
                missing.remove(target)
                required.remove(target)
        if missing and data.rebased_after is None:
            found = _search(state, data, probe, missing)
    finally:
        probe.close()
    if found:
        _adopt(state, data, found, taken_new, coverage)
    for target in changed:
        entry = coverage.branches.setdefault(
            target.label, {"original": list(original.get(target.path, [])), "new": None}
        )
        entry["new"], entry["changed"] = list(taken_new.get(target.path, [])), True
    missing = [t for t in required if not taken_new.get(t.path)]
    if missing:
        label = missing[0].label
        if state.pipeline.verify.allow_unexercised:
            coverage.notes.append(
                f"{label} was changed but never executed by the parity samples (allowed by [verify] allow_unexercised)"
            )
            return coverage
        coverage.tensor = label
        coverage.failure = (
            f"{label} was changed but never executed by the parity samples "
            f"({', '.join(repr(s.name) for s in data.samples)}); declare inputs that take it, "
            "or set [verify] allow_unexercised = true"
        )
    return coverage


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _adopt(
    state: RunState,
    data: ParityData,
    found: list[tuple[Sample, list[Target]]],
    taken_new: dict[str, list[str]],
    coverage: Coverage,
) -> None:
    """Keep the found samples on which the original runs finitely (references computed once)."""
    from surgery.gates.parity import _finite, reference_outputs

    references = reference_outputs(state, [s for s, _ in found], data)
    done: set[str] = set()
    for (sample, takes), reference in zip(found, references, strict=True):
        fresh = [t for t in takes if t.path not in done]
        if not fresh:
            continue
        if isinstance(reference, BaseException) or not _finite(reference, data.random):
            coverage.notes.append(
                f"sample '{sample.name}' takes {fresh[0].label} but the original fails or gives NaN/Inf on it"
            )
            continue
        data.samples.append(sample)
        data.references.append(reference)
        for target in fresh:
            taken_new.setdefault(target.path, []).append(sample.name)
            done.add(target.path)
            coverage.notes.append(
                f"{target.label}: no planned sample took it; sample '{sample.name}' does"
            )


# -- the search ---------------------------------------------------------------------------------
def _const_array(value: ir.Value) -> np.ndarray | None:
    tensor = value.const_value
    if tensor is None:
        producer = value.producer()
        if (
            producer is not None
            and producer.op_type == "Constant"
            and "value" in producer.attributes
        ):
            tensor = producer.attributes["value"].value
    if tensor is None:
        return None
    try:
        return np.asarray(tensor.numpy())
    except Exception:  # e.g. an external tensor that cannot be read here
        return None


def _in_main(model: ir.Model, value: ir.Value) -> bool:
    producer = value.producer()
    if producer is None:
        return value in model.graph.inputs or value.name in model.graph.initializers
    return producer.graph is model.graph


def _comparison(
    value: ir.Value | None, model: ir.Model
) -> tuple[ir.Value, ir.Value | None, str] | None:
    """The main-graph comparison a condition (or a trip count) reduces to: (lhs, rhs, op).

    ``rhs`` None: ``lhs`` is numeric and the condition is ``lhs > 0`` (a trip count).
    """
    seen = 0
    while value is not None and seen < 16:
        seen += 1
        producer = value.producer()
        if value.dtype is not None and value.dtype != ir.DataType.BOOL and _in_main(model, value):
            return (value, None, "Greater") if _const_array(value) is None else None
        if producer is None:
            return None
        if producer.op_type in _COMPARE and len(producer.inputs) == 2:
            lhs, rhs = producer.inputs
            if lhs is None or rhs is None or not (_in_main(model, lhs) and _in_main(model, rhs)):
                return None
            return lhs, rhs, producer.op_type
        if producer.op_type not in _THROUGH or not producer.inputs:
            return None
        value = producer.inputs[0]
    return None


def _conditions(
    model: ir.Model, target: Target
) -> list[tuple[int, tuple[ir.Value, ir.Value | None, str]]]:
    """(level, comparison) for each level of ``target`` whose condition is solvable."""
    out = []
    for level, node in enumerate(_level_nodes(model, target)):
        values = node.inputs[:1] if node.op_type == "If" else node.inputs[:2]
        for value in values:
            found = _comparison(value, model) if value is not None else None
            if found is not None:
                out.append((level, found))
    return out


def _operands(model: ir.Model, targets: Sequence[Target]) -> list[ir.Value]:
    out: dict[str, ir.Value] = {}
    for target in targets:
        for _, (lhs, rhs, _) in _conditions(model, target):
            for v in (lhs, rhs):
                if v is not None and _const_array(v) is None and v.name:
                    out.setdefault(v.name, v)
    return list(out.values())


def _difference(
    lhs: ir.Value, rhs: ir.Value | None, values: Mapping[str, np.ndarray]
) -> float | None:
    def read(v: ir.Value | None) -> np.ndarray | None:
        if v is None:
            return np.zeros((), np.float64)
        array = values.get(v.name or "")
        return np.asarray(array) if array is not None else _const_array(v)

    a, b = read(lhs), read(rhs)
    if a is None or b is None or a.size == 0 or b.size == 0:
        return None
    try:
        d = float(
            np.asarray(a, np.float64).reshape(-1)[0] - np.asarray(b, np.float64).reshape(-1)[0]
        )
    except (TypeError, ValueError):
        return None
    return d if np.isfinite(d) else None


def _family(
    kind: str, base: Mapping[str, np.ndarray], names: list[str]
) -> Callable[[float], dict[str, np.ndarray]]:
    def feeds(t: float) -> dict[str, np.ndarray]:
        out = dict(base)
        for n in names:
            a = np.asarray(base[n])
            if kind == "fill":
                new = np.full(a.shape, t, dtype=np.float64)
            elif kind == "shift":
                new = a.astype(np.float64) + t
            else:
                new = a.astype(np.float64) * t
            if a.dtype.kind in "iu":
                info = np.iinfo(a.dtype)
                new = np.clip(np.rint(new), info.min, info.max)
            out[n] = new.astype(a.dtype)
        return out

    return feeds


def _steps(t_star: float, integer: bool) -> Iterator[float]:
    if integer:
        r = float(np.rint(t_star))
        yield from (r, r + 1, r - 1, r + 2, r - 2)
        return
    scale = max(1.0, abs(t_star))
    yield t_star
    for m in (1e-3, 1e-2, 0.1, 1.0):
        yield t_star + m * scale
        yield t_star - m * scale


def _solve(
    state: RunState,
    data: ParityData,
    probe: MarkerSession,
    target: Target,
    base: dict[str, np.ndarray],
    budget: list[int],
) -> tuple[dict[str, np.ndarray], str] | None:
    """Feeds that execute ``target``, solved level by level from ``base``; and how they were made."""
    model = state.model
    fixed = fixed_inputs(model, state.pipeline.inputs, data.hints)
    nodes = _level_nodes(model, target)
    chain_paths: list[str] = []
    link: Target | None = target
    while link is not None:
        chain_paths.insert(0, link.path)
        link = link.parent
    how: list[str] = []
    feeds = dict(base)

    def probe_run(f: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, bool]] | None:
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        try:
            return probe.run(f, outputs=[])
        except Exception:  # an input the model refuses: not a sample
            return None

    conditions = _conditions(model, target)
    for level in range(len(nodes)):
        first = probe_run(feeds)
        if first is None:
            return None
        if first[1].get(chain_paths[level]):
            continue
        solved = False
        for _, (lhs, rhs, op) in [c for c in conditions if c[0] == level]:
            compared = [_Dummy(lhs)] + ([_Dummy(rhs)] if rhs is not None else [])
            names = [
                n
                for n in _condition_inputs(model, compared)
                if n in feeds and n not in fixed and np.asarray(feeds[n]).dtype.kind in "iuf"
            ]
            if not names:
                continue
            integer = all(np.asarray(feeds[n]).dtype.kind in "iu" for n in names)
            for kind, (t0, t1) in (
                ("fill", (0.0, 1.0)),
                ("shift", (0.0, 1.0)),
                ("scale", (1.0, 2.0)),
            ):
                make = _family(kind, feeds, names)
                r0, r1 = probe_run(make(t0)), probe_run(make(t1))
                if r0 is None or r1 is None:
                    break
                d0, d1 = _difference(lhs, rhs, r0[0]), _difference(lhs, rhs, r1[0])
                if d0 is None or d1 is None or d1 == d0:
                    continue
                t_star = t0 - d0 * (t1 - t0) / (d1 - d0)
                if rhs is None:  # a trip count: at least one iteration
                    t_star = t0 + (1 - d0) * (t1 - t0) / (d1 - d0)
                for t in _steps(t_star, integer):
                    candidate = make(t)
                    r = probe_run(candidate)
                    if r is None:
                        break
                    if r[1].get(chain_paths[level]):
                        feeds = candidate
                        how.append(f"{', '.join(names)} {kind} {t:.6g} ({op} solved)")
                        solved = True
                        break
                if solved:
                    break
            if solved:
                break
        if not solved:
            return None
    return feeds, "; ".join(how)


class _Dummy:
    """A stand-in node whose only input is ``value`` (for :func:`_condition_inputs`)."""

    def __init__(self, value: ir.Value) -> None:
        self.inputs = [value]


def _condition_inputs(model: ir.Model, nodes: Sequence[Any]) -> list[str]:
    """Graph inputs the conditions of ``nodes`` are computed from (walking producers back)."""
    inputs = {v.name for v in model.graph.inputs}
    found: list[str] = []
    seen: set[int] = set()
    stack = [v for node in nodes for v in list(node.inputs)[:2] if v is not None]
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
    """Samples that vary only the inputs a condition follows: bools flipped, numbers at large magnitudes."""
    planned = data.plan.feeds
    out: list[Sample] = []
    flipped = {
        n: np.logical_not(planned[n])
        for n in names
        if n in planned and np.asarray(planned[n]).dtype.kind == "b"
    }
    if flipped:
        out.append(
            Sample(
                "condition inputs flipped",
                {**planned, **flipped},
                1.0,
                dict.fromkeys(flipped, "flipped"),
            )
        )
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
                    feeds[n] = np.full(
                        a.shape, int(np.clip(sign * scale, info.min, info.max)), dtype=a.dtype
                    )
            if numeric:
                out.append(
                    Sample(
                        f"condition inputs at {sign * scale:g}",
                        feeds,
                        scale,
                        dict.fromkeys(numeric, f"all {sign * scale:g}"),
                    )
                )
    return out


def _search(
    state: RunState, data: ParityData, probe: MarkerSession, missing: list[Target]
) -> list[tuple[Sample, list[Target]]]:
    """Samples that execute the missing targets: solved first, then followed inputs, then range ends."""
    found: list[tuple[Sample, list[Target]]] = []
    missing = list(missing)
    budget = [MAX_PROBES]
    planned = data.plan.feeds

    def takes(feeds: Mapping[str, np.ndarray]) -> list[Target]:
        if budget[0] <= 0:
            return []
        budget[0] -= 1
        try:
            _, taken = probe.run(feeds, outputs=[])
        except Exception:  # an input the model refuses: not a sample
            return []
        return [t for t in missing if taken.get(t.path)]

    for target in list(missing):
        if target not in missing:
            continue
        solved = _solve(state, data, probe, target, dict(planned), budget)
        if solved is None:
            continue
        feeds, how = solved
        hit = takes(feeds) or [target]
        sample = Sample(
            f"solved for {target.label}", feeds, _scale(planned, feeds), {"search": how}
        )
        found.append((sample, hit))
        missing = [t for t in missing if t not in hit]
    if not missing:
        return found
    cfg = state.pipeline.verify
    followed = _followed(
        data,
        _condition_inputs(state.model, [n for t in missing for n in _level_nodes(state.model, t)]),
    )
    extremes = extreme_samples(
        state.model_original(), state.pipeline.inputs, data.hints, data.plan, seed=cfg.seed
    )
    for sample in itertools.chain(followed, extremes):
        if not missing or budget[0] <= 0:
            break
        hit = takes(sample.feeds)
        if hit:
            found.append(
                (
                    Sample(
                        f"{sample.name} (found for {hit[0].label})",
                        sample.feeds,
                        sample.scale,
                        sample.provenance,
                    ),
                    hit,
                )
            )
            missing = [t for t in missing if t not in hit]
    return found


def _scale(planned: Mapping[str, np.ndarray], feeds: Mapping[str, np.ndarray]) -> float:
    """How much larger than planned the float inputs are (the absolute tolerance is scaled by it)."""
    scale = 1.0
    for n, a in feeds.items():
        a = np.asarray(a)
        p = np.asarray(planned.get(n, a))
        if a.dtype.kind == "f" and a.size and p.size:
            top = float(np.max(np.abs(p))) or 1.0
            scale = max(scale, float(np.max(np.abs(a))) / top)
    return scale
