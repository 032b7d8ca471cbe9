"""Layerwise comparison of two models: which intermediate tensor first breaks tolerance.

Both models (or chains of models, e.g. a head and its tail) run in ONNX Runtime with their
intermediate tensors exposed as outputs. Tensors are matched by name, and through the ``renamed``
maps passes record when they replace nodes (``{old name: new name}``). The comparison streams:
tensors are taken in chunks of bounded size (from static shapes when the model has them, else from
the sizes seen so far) in the reference's topological order; each chunk runs both models in
sessions that expose only that chunk's tensors, is compared, and is dropped. Only per-tensor
statistics are kept, and ONNX Runtime never holds more than one chunk of exposed tensors either
(it keeps exposed tensors alive until the end of a run). Tensors found on one side only are listed,
not silently skipped.

The price of bounded memory is one session and one run per chunk and model: a model whose
intermediates exceed the chunk budget is loaded and run several times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from surgery.errors import one_line
from surgery.graph import const_value, is_onnx_domain, value_names
from surgery.pass_base import Tolerance
from surgery.shapes.dims import is_static_shape
from surgery.verify.compare import ArrayDiff, diff_arrays
from surgery.verify.ort import OrtSession

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "LayerwiseReport",
    "TensorComparison",
    "compare_layerwise",
    "divergence_message",
    "first_divergence",
    "resolve_renames",
    "run_exposing",
]

logger = logging.getLogger(__name__)

#: Bytes of tensors (both sides together) fetched per chunk.
DEFAULT_BUDGET_BYTES = 512 << 20
_FIRST_CHUNK = 16
_MAX_CHUNK = 4096
_NON_TENSOR = (
    (ir.SequenceType, ir.OptionalType) if hasattr(ir, "OptionalType") else (ir.SequenceType,)
)


@dataclasses.dataclass
class TensorComparison:
    """How one intermediate tensor of the candidate compares with the reference's."""

    index: int
    """Position in the reference's topological order (among compared tensors)."""
    name: str
    """Name in the reference."""
    candidate_name: str
    op_type: str
    node: str
    """Name of the reference node producing it."""
    diff: ArrayDiff
    shape: list[int] | None = None
    dtype: str | None = None

    @property
    def ok(self) -> bool:
        return self.diff.ok

    def to_dict(self) -> dict:
        d = self.diff.to_dict()
        d.update(
            index=self.index,
            name=self.name,
            candidate_name=self.candidate_name,
            op_type=self.op_type,
            node=self.node,
            shape=self.shape,
            dtype=self.dtype,
        )
        return d

    def line(self) -> str:
        """One line for a terminal."""
        verdict = "ok  " if self.ok else "FAIL"
        renamed = f" (as '{self.candidate_name}')" if self.candidate_name != self.name else ""
        if self.diff.problem:
            stats = self.diff.problem
        else:
            stats = f"cos {self.diff.cosine:.6f}  max_abs {self.diff.max_abs:.3g}  max_rel {self.diff.max_rel:.3g}"
        return one_line(f"{self.index:5d} {verdict} {stats}  {self.name}{renamed} [{self.op_type}]")


@dataclasses.dataclass
class LayerwiseReport:
    """The result of :func:`compare_layerwise`: per-tensor statistics and the first divergence."""

    tolerance: Tolerance
    compared: list[TensorComparison] = dataclasses.field(default_factory=list)
    only_in_reference: list[str] = dataclasses.field(default_factory=list)
    only_in_candidate: list[str] = dataclasses.field(default_factory=list)
    first: TensorComparison | None = None
    suspects: list[str] = dataclasses.field(default_factory=list)
    """Why the first divergent tensor's node diverges: inputs of it that differ (constants included)."""
    runs: int = 0
    """Number of ``session.run`` calls per side (the chunk count)."""
    stopped_early: bool = False

    @property
    def ok(self) -> bool:
        return self.first is None

    def summary(self) -> str:
        lines = [
            f"compared {len(self.compared)} tensors (rtol {self.tolerance.rtol:g}, atol {self.tolerance.atol:g}) "
            f"in {self.runs} run(s) per model"
        ]
        if self.only_in_reference:
            lines.append(
                f"{len(self.only_in_reference)} tensors only in the reference: {_few(self.only_in_reference)}"
            )
        if self.only_in_candidate:
            lines.append(
                f"{len(self.only_in_candidate)} tensors only in the candidate: {_few(self.only_in_candidate)}"
            )
        lines.append(self.first_text() or "no tensor breaks tolerance")
        return "\n".join(one_line(line) for line in lines)

    def first_text(self) -> str | None:
        if self.first is None:
            return None
        f = self.first
        text = f"first divergent tensor: '{f.name}' (output of {f.op_type} '{f.node}'): {f.diff.describe().split(': ', 1)[1]}"
        if self.suspects:
            text += "; " + "; ".join(self.suspects)
        return text

    def to_dict(self) -> dict:
        return {
            "rtol": self.tolerance.rtol,
            "atol": self.tolerance.atol,
            "ok": self.ok,
            "first_divergent": self.first.name if self.first else None,
            "first_divergent_text": self.first_text(),
            "suspects": list(self.suspects),
            "runs": self.runs,
            "stopped_early": self.stopped_early,
            "only_in_reference": list(self.only_in_reference),
            "only_in_candidate": list(self.only_in_candidate),
            "tensors": [c.to_dict() for c in self.compared],
        }


def _few(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(f"'{x}'" for x in names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def resolve_renames(
    renamed: Mapping[str, str] | Sequence[Mapping[str, str]] | None,
) -> Callable[[str], str]:
    """A function following rename maps (one map, or several in pass order) to the final name."""
    if renamed is None:
        return lambda n: n
    maps = [renamed] if isinstance(renamed, Mapping) else list(renamed)

    def follow(name: str) -> str:
        for m in maps:
            seen = 0
            while name in m and seen < 32:
                nxt = m[name]
                if nxt == name:
                    break
                name = nxt
                seen += 1
        return name

    return follow


# -- running with exposed tensors ----------------------------------------------------------------
@dataclasses.dataclass
class _Tensor:
    name: str
    value: ir.Value
    part: int
    op_type: str
    node: str


def _computed(models: Sequence[ir.Model]) -> dict[str, _Tensor]:
    """Node outputs of the main graphs, in order (first definition of a name wins)."""
    out: dict[str, _Tensor] = {}
    for p, model in enumerate(models):
        for node in model.graph:
            if node.op_type == "Constant" and is_onnx_domain(node.domain):
                continue
            for value in node.outputs:
                if not value.name or value.name in out:
                    continue
                if value.type is not None and isinstance(value.type, _NON_TENSOR):
                    continue
                out[value.name] = _Tensor(value.name, value, p, node.op_type, node.name or "")
    return out


@contextlib.contextmanager
def _exposed(model: ir.Model, values: Sequence[ir.Value]) -> Iterator[None]:
    outputs = model.graph.outputs
    present = set(outputs)
    added = [v for v in dict.fromkeys(values) if v not in present]
    for v in added:
        outputs.append(v)
    try:
        yield
    finally:
        for _ in added:
            outputs.pop()


def _base_env(models: Sequence[ir.Model], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feeds plus the declared outputs of every part but the last (what later parts read)."""
    env: dict[str, np.ndarray] = dict(feeds)
    for model in models[:-1]:
        session = OrtSession(model, prepack=True)
        try:
            env.update(session.run(env))
        finally:
            session.close()
    return env


def _fetch(
    model: ir.Model, values: Sequence[ir.Value], env: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run ``model`` in a session exposing only ``values`` and return them.

    A session per chunk keeps ONNX Runtime's own memory bounded too: it holds the exposed tensors
    until the end of a run, so a session exposing every tensor would hold them all.
    """
    if not values:
        return {}
    with _exposed(model, values):
        session = OrtSession(model, prepack=True)
    try:
        return session.run(env, value_names(values))
    finally:
        session.close()


def _as_chain(model: ir.Model | Sequence[ir.Model]) -> list[ir.Model]:
    return [model] if isinstance(model, ir.Model) else list(model)


def run_exposing(
    model: ir.Model | Sequence[ir.Model], feeds: Mapping[str, np.ndarray], names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Run ``model`` (or a chain) and return the named tensors (inputs, intermediates, outputs)."""
    chain = _as_chain(model)
    tensors = _computed(chain)
    env = _base_env(chain, feeds)
    result = {n: env[n] for n in names if n in env}
    for n in names:  # initializers and Constant outputs asked for by name
        if n not in result and n not in tensors:
            array = _constant_of(chain, n)
            if array is not None:
                result[n] = array
    for p, part in enumerate(chain):
        wanted = [
            tensors[n].value
            for n in names
            if n not in result and n in tensors and tensors[n].part == p
        ]
        result.update(_fetch(part, wanted, env))
    missing = [n for n in names if n not in result]
    if missing:
        from surgery.errors import InputError

        raise InputError(f"tensors not found in the model: {_few(missing)}")
    return result


# -- the comparison ------------------------------------------------------------------------------
def _constant_of(models: Sequence[ir.Model], name: str) -> np.ndarray | None:
    for model in models:
        value = model.graph.initializers.get(name)
        if value is None:
            for node in model.graph:
                if node.op_type == "Constant" and node.outputs and node.outputs[0].name == name:
                    value = node.outputs[0]
                    break
        if value is not None:
            array = const_value(value)
            if array is not None:
                return array
    return None


def _suspects(
    first: TensorComparison,
    cand_tensors: Mapping[str, _Tensor],
    ref_models: Sequence[ir.Model],
    statuses: Mapping[str, bool],
    back: Mapping[str, str],
    tol: Tolerance,
) -> list[str]:
    """Inputs of the candidate node behind ``first`` that differ from the reference."""
    tensor = cand_tensors.get(first.candidate_name)
    if tensor is None:
        return []
    node = tensor.value.producer()
    if node is None:
        return []
    notes: list[str] = []
    for inp in node.inputs:
        if inp is None or not inp.name:
            continue
        ref_name = back.get(inp.name, inp.name)
        if ref_name in statuses:
            if not statuses[ref_name]:
                notes.append(f"its input '{inp.name}' already differs")
            continue
        cand_const = const_value(inp)
        if cand_const is None:
            continue
        ref_const = _constant_of(ref_models, ref_name)
        kind = "initializer" if inp.is_initializer() else "constant"
        if ref_const is None:
            notes.append(f"its {kind} input '{inp.name}' is not in the reference")
            continue
        d = diff_arrays(inp.name, cand_const, ref_const, tol)
        if not d.ok:
            detail = d.problem or f"max abs {d.max_abs:.3g}, cosine {d.cosine:.6f}"
            notes.append(f"its {kind} input '{inp.name}' differs from the reference's ({detail})")
    if not notes:
        notes.append(
            f"its inputs match the reference, so {node.op_type} '{node.name}' itself computes differently"
        )
    return notes


def _estimate(value: ir.Value) -> int | None:
    """Bytes of a tensor from its static shape and dtype, or None when unknown."""
    if value.dtype is None or not is_static_shape(value.shape):
        return None
    try:
        itemsize = value.dtype.itemsize
    except Exception:
        return None
    return int(math.prod(value.shape)) * math.ceil(itemsize)


def _next_chunk(
    pairs: Sequence[tuple[_Tensor, _Tensor]], start: int, budget: int, observed: float | None
) -> Sequence[tuple[_Tensor, _Tensor]]:
    """Pairs from ``start`` whose estimated bytes fit ``budget`` (at least one).

    A pair's size comes from the static shapes when known, else from the sizes fetched so far;
    before anything was fetched, unknown sizes limit the first chunk to a few tensors.
    """
    total = 0.0
    end = start
    limit = _MAX_CHUNK
    while end < len(pairs) and end - start < limit:
        r, c = pairs[end]
        est_r, est_c = _estimate(r.value), _estimate(c.value)
        if est_r is None or est_c is None:
            if observed is None:
                limit = min(limit, _FIRST_CHUNK)
                size = 0.0
            else:
                size = observed
        else:
            size = float(est_r + est_c)
        if end > start and total + size > budget:
            break
        total += size
        end += 1
    return pairs[start:end]


def compare_layerwise(
    reference: ir.Model | Sequence[ir.Model],
    candidate: ir.Model | Sequence[ir.Model],
    feeds: Mapping[str, np.ndarray],
    tol: Tolerance,
    *,
    renamed: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    on_result: Callable[[TensorComparison], None] | None = None,
    stop_at_first: bool = False,
) -> LayerwiseReport:
    """Compare every intermediate tensor the two models share, in the reference's order.

    ``reference`` and ``candidate`` are models or chains of models (a head then its tail): a later
    part is fed the inputs and the outputs of the parts before it. ``renamed`` maps reference
    names to candidate names (the ``SurgeryResult.renamed`` maps of the passes in order).
    ``on_result`` is called for each tensor as soon as it is compared; with ``stop_at_first`` the
    comparison ends with the chunk holding the first divergent tensor.
    """
    ref_models, cand_models = _as_chain(reference), _as_chain(candidate)
    follow = resolve_renames(renamed)
    ref_tensors = _computed(ref_models)
    cand_tensors = _computed(cand_models)
    pairs: list[tuple[_Tensor, _Tensor]] = []
    matched: set[str] = set()
    only_ref: list[str] = []
    for name, t in ref_tensors.items():
        other = cand_tensors.get(follow(name))
        if other is None or other.name in matched:
            only_ref.append(name)
            continue
        matched.add(other.name)
        pairs.append((t, other))
    only_cand = [n for n in cand_tensors if n not in matched]
    back = {c.name: r.name for r, c in pairs}
    report = LayerwiseReport(tolerance=tol, only_in_reference=only_ref, only_in_candidate=only_cand)

    statuses: dict[str, bool] = {}
    ref_env = _base_env(ref_models, feeds)
    cand_env = _base_env(cand_models, feeds)
    start, observed = 0, None  # observed: mean bytes of a pair (both sides) fetched so far
    while start < len(pairs):
        chunk = _next_chunk(pairs, start, budget_bytes, observed)
        ref_arrays: dict[str, np.ndarray] = {}
        cand_arrays: dict[str, np.ndarray] = {}
        for p, model in enumerate(ref_models):
            ref_arrays.update(_fetch(model, [r.value for r, _ in chunk if r.part == p], ref_env))
        for p, model in enumerate(cand_models):
            cand_arrays.update(_fetch(model, [c.value for _, c in chunk if c.part == p], cand_env))
        report.runs += 1
        nbytes = sum(a.nbytes for a in ref_arrays.values()) + sum(
            a.nbytes for a in cand_arrays.values()
        )
        for r, c in chunk:
            a, e = cand_arrays.pop(c.name, None), ref_arrays.pop(r.name, None)
            diff = diff_arrays(r.name, a, e, tol)
            entry = TensorComparison(
                index=len(report.compared),
                name=r.name,
                candidate_name=c.name,
                op_type=r.op_type,
                node=r.node,
                diff=diff,
                shape=list(e.shape) if e is not None else None,
                dtype=str(e.dtype) if e is not None else None,
            )
            del a, e
            report.compared.append(entry)
            statuses[r.name] = diff.ok
            if not diff.ok and report.first is None:
                report.first = entry
            if on_result is not None:
                on_result(entry)
        del ref_arrays, cand_arrays
        start += len(chunk)
        if report.first is not None and stop_at_first:
            report.stopped_early = start < len(pairs)
            break
        mean = nbytes / max(len(chunk), 1)
        observed = mean if observed is None else (observed + mean) / 2
    if report.first is not None:
        report.suspects = _suspects(report.first, cand_tensors, ref_models, statuses, back, tol)
    return report


def first_divergence(
    original: ir.Model | Sequence[ir.Model],
    modified: ir.Model | Sequence[ir.Model],
    feeds: Mapping[str, np.ndarray],
    tol: Tolerance,
    *,
    renamed: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
) -> str | None:
    """The name (in ``original``) of the first tensor, in topological order, that breaks ``tol``."""
    report = compare_layerwise(original, modified, feeds, tol, renamed=renamed, stop_at_first=True)
    return report.first.name if report.first else None


def divergence_message(
    original: ir.Model | Sequence[ir.Model],
    modified: ir.Model | Sequence[ir.Model],
    feeds: Mapping[str, np.ndarray],
    tol: Tolerance,
    *,
    renamed: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
) -> str | None:
    """One sentence naming the first divergent tensor and why (for a failed parity gate), or None.

    Never raises: a model that cannot run with its tensors exposed gives None (logged).
    """
    try:
        report = compare_layerwise(
            original, modified, feeds, tol, renamed=renamed, stop_at_first=True
        )
    except Exception as exc:  # a diagnosis must never hide the failure it explains
        logger.info("layerwise comparison failed: %s", exc)
        return None
    return report.first_text()
