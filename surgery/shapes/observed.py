"""Shapes that execution contradicts: when onnx's inference is wrong, the shapes ORT computes win.

onnx's shape inference has bugs of its own. onnx 1.23's ``STFT`` ignores the schema default
``onesided=1`` and promises ``n_fft`` frequency bins where ONNX Runtime (and the spec) give
``n_fft // 2 + 1``: a model that runs fails the checker gate as soon as its tensors are annotated,
and ``make-static`` (checker off) writes a shape the model does not have.

The runner runs the ORIGINAL model once on the parity sample with every main-graph tensor
exposed and records each tensor's shape on its value (:func:`record_observations`,
``ir.Value.meta``). From then on every inference merge (:func:`~surgery.shapes.infer.refresh_shapes`,
``make-static``'s rounds, per-node inference) replaces a known size that contradicts the observed
one (:func:`~surgery.shapes.infer.honour_observation`): no pass writes a shape execution
contradicts, and the contradicted value keeps its corrected shape when shapes are cleared, so
onnx propagates the right one downstream. The parity feeds always have the shapes of the model's
current inputs (the feed plan follows ``fix-shapes``), so a size inference claims to know must
equal the sample's; symbolic dims are never made static from one sample.

:func:`contradictions` lists what was corrected; the op at fault is the one whose inputs agree with
execution (its consumers only inherited the error). :func:`contradiction_notes` says so once in the
report; :func:`tolerated_nodes` gives the checker gate exactly those ops, whose strict-inference
error it accepts (:func:`only_tolerated_errors`). Subgraph and function tensors cannot be exposed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from surgery.graph import value_names
from surgery.shapes.dims import is_known_dim, shape_text
from surgery.shapes.infer import CONTRADICTED_KEY, OBSERVED_KEY, proven_shapes, refresh_shapes

__all__ = [
    "MAX_OBSERVED_NODES",
    "Contradiction",
    "contradiction_notes",
    "contradictions",
    "correct_declared_outputs",
    "correct_observed_shapes",
    "observe_shapes",
    "only_tolerated_errors",
    "record_observations",
    "refresh_and_report",
    "tolerated_nodes",
]

logger = logging.getLogger(__name__)

#: Models with more main-graph nodes are not observed (one more full run with every tensor kept).
MAX_OBSERVED_NODES = 20000
#: Bytes of exposed tensors fetched per ORT session (estimated from shapes; 4 MiB when unknown).
_CHUNK_BYTES = 256 << 20
_UNKNOWN_BYTES = 4 << 20
_REPORTED_KEY = "surgery.contradiction_reported"


@dataclasses.dataclass(frozen=True)
class Contradiction:
    """onnx inference and execution disagreed on the shape of one main-graph tensor."""

    value: str
    node: str
    op_type: str
    inferred: str
    """What onnx inferred, as text (``[1, 97, 512, 2]``)."""
    observed: tuple[int, ...]
    root: bool
    """True for the op whose own inference is wrong (its inputs agree with execution)."""

    def reported(self, model: ir.Model) -> bool:
        value = next((o for n in model.graph for o in n.outputs if o.name == self.value), None)
        return value is not None and bool(value.meta.get(_REPORTED_KEY))

    def __str__(self) -> str:
        return (
            f"onnx shape inference of {self.op_type} '{self.node}' is wrong: it gives '{self.value}' "
            f"{self.inferred}, ONNX Runtime computes {shape_text(self.observed)}"
        )


def _nbytes(value: ir.Value, sizes: Mapping[str, int] | None = None) -> int:
    """Bytes of ``value`` with its symbolic dims at ``sizes`` (the sizes the feeds give them)."""
    shape = value.shape
    if shape is not None and sizes:
        dims = [
            int(d) if is_known_dim(d) else sizes.get(str(getattr(d, "value", None))) for d in shape
        ]
        if None not in dims:
            shape = ir.Shape(dims)
    if shape is None or not all(is_known_dim(d) for d in shape) or value.dtype is None:
        return _UNKNOWN_BYTES
    try:
        itemsize = value.dtype.itemsize
    except Exception:  # exotic element types: a guess is enough to size a chunk
        itemsize = 8
    return int(np.prod([int(d) for d in shape if is_known_dim(d)], dtype=np.int64)) * int(itemsize)


_SMALL = 4096
_GENERATORS = frozenset(
    {
        "ConstantOfShape",
        "Expand",
        "Range",
        "Tile",
        "Resize",
        "Upsample",
        "Pad",
        "OneHot",
        "RandomNormal",
        "RandomUniform",
        "EyeLike",
        "Loop",
        "Scan",
        "If",
    }
)


def _estimates(
    model: ir.Model, feeds: Mapping[str, np.ndarray], sizes: Mapping[str, int]
) -> dict[ir.Value, int]:
    """Estimated bytes of every main-graph value: from its shape where known (symbolic dims at the
    feeds' sizes); else small for a shape computation (``Shape``/``Size``, or an op other than the
    ones that make tensors from shapes whose inputs are all small); else ``_UNKNOWN_BYTES``."""
    out: dict[ir.Value, int] = {}
    for value in model.graph.inputs:
        array = feeds.get(value.name or "")
        out[value] = int(array.nbytes) if isinstance(array, np.ndarray) else _nbytes(value, sizes)
    for value in model.graph.initializers.values():
        tensor = value.const_value
        out[value] = int(tensor.nbytes) if tensor is not None else _UNKNOWN_BYTES
    for node in model.graph:
        small = node.op_type not in _GENERATORS and all(
            out.get(v, _UNKNOWN_BYTES) <= _SMALL for v in node.inputs if v is not None
        )
        for o in node.outputs:
            known = _nbytes(o, sizes)
            if known != _UNKNOWN_BYTES or o.shape is not None:
                out[o] = known
            elif node.op_type in ("Shape", "Size") or small:
                out[o] = _SMALL
            else:
                out[o] = _UNKNOWN_BYTES
    return out


def observation_chunks(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> list[list[ir.Value]]:
    """The main-graph tensors to observe, in chunks of bounded size (sizes from the feeds'
    shapes where a dim is symbolic); ``[]`` when the model is too large to observe."""
    if len(model.graph) > MAX_OBSERVED_NODES:
        logger.info("not observing shapes: %d nodes > %d", len(model.graph), MAX_OBSERVED_NODES)
        return []
    sizes: dict[str, int] = {}
    for value in model.graph.inputs:
        array = feeds.get(value.name or "")
        if (
            value.shape is None
            or not isinstance(array, np.ndarray)
            or array.ndim != len(value.shape)
        ):
            continue
        for dim, size in zip(value.shape, array.shape, strict=False):
            symbol = getattr(dim, "value", None)
            if not is_known_dim(dim) and isinstance(symbol, str):
                sizes.setdefault(symbol, int(size))
    present = set(model.graph.outputs)
    wanted = [
        o
        for node in model.graph
        if node.op_type != "Constant"
        for o in node.outputs
        if o.name and o not in present and (o.type is None or isinstance(o.type, ir.TensorType))
    ]
    wanted = list(dict.fromkeys(wanted))
    estimate = _estimates(model, feeds, sizes)
    chunks: list[list[ir.Value]] = [[]]
    size = 0
    for value in wanted:
        nbytes = estimate.get(value, _UNKNOWN_BYTES)
        # the first chunk rides on the reference run of the original (no session of its own): twice the budget
        if chunks[-1] and size + nbytes > _CHUNK_BYTES * (2 if len(chunks) == 1 else 1):
            chunks.append([])
            size = 0
        chunks[-1].append(value)
        size += nbytes
    return chunks if chunks[0] else []


def observe_shapes(
    model: ir.Model,
    feeds: Mapping[str, np.ndarray],
    chunks: Sequence[Sequence[ir.Value]] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Shapes ONNX Runtime computes for every main-graph node output of ``model`` on ``feeds``.

    Tensors are fetched in chunks of bounded size (:func:`observation_chunks`, or ``chunks``), a
    session per chunk (ORT keeps exposed tensors until the end of a run); only their shapes are
    kept. Returns ``{}`` when the model is too large to observe or ORT cannot run it (the checks
    then rely on inference alone).
    """
    from surgery.verify.ort import OrtSession

    if chunks is None:
        chunks = observation_chunks(model, feeds)
    observed: dict[str, tuple[int, ...]] = {}
    outputs = model.graph.outputs
    try:
        for i, chunk in enumerate(chunks):
            extra = list(chunk) + ([] if i else list(outputs))
            for value in chunk:
                outputs.append(value)
            try:
                session = OrtSession(model)
            finally:
                for _ in chunk:
                    outputs.pop()
            try:
                for name, array in session.run(feeds, value_names(extra)).items():
                    if isinstance(array, np.ndarray):  # sequences and maps have no shape to compare
                        observed[name] = tuple(int(d) for d in array.shape)
            finally:
                session.close()
    except (
        Exception
    ) as exc:  # observation is a cross-check: ORT failing here is reported by the gates
        text = str(exc).strip().splitlines()
        logger.info(
            "could not observe shapes in ONNX Runtime: %s", text[0] if text else type(exc).__name__
        )
        return {}
    return observed


def record_observations(model: ir.Model, observed: Mapping[str, tuple[int, ...]]) -> int:
    """Record each observed shape on its main-graph value; returns how many were recorded."""
    count = 0
    for node in model.graph:
        for out in node.outputs:
            shape = observed.get(out.name or "")
            if shape is not None:
                out.meta[OBSERVED_KEY] = tuple(shape)
                count += 1
    return count


def contradictions(model: ir.Model) -> list[Contradiction]:
    """Main-graph values whose inferred shape execution contradicted, in graph order."""
    found: list[Contradiction] = []
    wrong: set[ir.Value] = set()
    for node in model.graph:
        inherited = any(v is not None and v in wrong for v in node.inputs)
        for out in node.outputs:
            said = out.meta.get(CONTRADICTED_KEY)
            if said is None:
                continue
            wrong.add(out)
            found.append(
                Contradiction(
                    out.name or "",
                    node.name or "",
                    node.op_type,
                    said,
                    tuple(out.meta[OBSERVED_KEY]),
                    root=not inherited,
                )
            )
    return found


def contradiction_notes(model: ir.Model) -> list[str]:
    """Report lines for contradictions not reported yet (each op at fault once)."""
    fresh = [c for c in contradictions(model) if not c.reported(model)]
    roots = [c for c in fresh if c.root]
    notes = [f"{c}; the observed shape is used" for c in roots]
    if len(fresh) > len(roots):
        notes.append(
            f"{len(fresh) - len(roots)} tensor(s) downstream of them took the observed shapes too"
        )
    values = {v.name: v for node in model.graph for v in node.outputs if v.name}
    for c in fresh:
        if c.value in values:
            values[c.value].meta[_REPORTED_KEY] = True
    return notes


def correct_observed_shapes(
    model: ir.Model,
    feeds: Mapping[str, np.ndarray],
    observed: Mapping[str, tuple[int, ...]] | None = None,
) -> list[str]:
    """Observe ``model`` (the original) on ``feeds`` (or take the shapes ``observed`` there),
    record the shapes, correct what inference got wrong; returns report notes. The runner's
    call, once, before the first pass."""
    if not record_observations(
        model, observe_shapes(model, feeds) if observed is None else observed
    ):
        return []
    declared = correct_declared_outputs(model)
    proven_shapes(
        model
    )  # finds contradictions (recorded on the values), annotations left as they are
    if not contradictions(model) and not declared:
        return []  # inference agrees with execution: the model is not touched
    refresh_shapes(model)
    return declared + contradiction_notes(model)


def correct_declared_outputs(model: ir.Model) -> list[str]:
    """Graph outputs whose *declared* shape execution contradicts (another rank, or a static dim of
    another size — an exporter's stale annotation, which ORT only warns about): the contradicted
    dims become unknown (all of them, at the observed rank, when the rank is wrong), for inference
    to fill in. Without this, the first pass that re-infers the output fails the signature gate
    on a change it did not make. Returns report notes."""
    notes = []
    for value in model.graph.outputs:
        observed = value.meta.get(OBSERVED_KEY)
        shape = value.shape
        if observed is None or shape is None:
            continue
        dims = list(shape)
        if len(dims) != len(observed):
            fixed: list[int | ir.SymbolicDim] = [ir.SymbolicDim(None) for _ in observed]
        elif any(is_known_dim(d) and int(d) != o for d, o in zip(dims, observed, strict=True)):
            fixed = [
                ir.SymbolicDim(None) if is_known_dim(d) and int(d) != o else d
                for d, o in zip(dims, observed, strict=True)
            ]
        else:
            continue
        value.shape = ir.Shape(fixed)
        notes.append(
            f"output '{value.name}': the model declares {shape_text(tuple(dims))} but ONNX Runtime computes "
            f"{shape_text(tuple(observed))}: the declared shape is wrong and is re-inferred"
        )
    return notes


def refresh_and_report(model: ir.Model) -> list[str]:
    """:func:`~surgery.shapes.infer.refresh_shapes`, then the notes of contradictions found since
    the last report (during a pass or this refresh). The runner's call after each pass."""
    refresh_shapes(model)
    return contradiction_notes(model)


def tolerated_nodes(model: ir.Model) -> frozenset[str]:
    """Names of the main-graph nodes whose own shape inference execution proved wrong."""
    return frozenset(c.node for c in contradictions(model) if c.root and c.node)


_ERROR_RE = re.compile(r"\(op_type:([^,]*), node name: ([^)]*)\):")


def only_tolerated_errors(message: str, nodes: Collection[str]) -> bool:
    """Whether every error of a strict shape-inference message names one of ``nodes``.

    onnx lists each failing node as ``(op_type:STFT, node name: stft): ...``; a message naming no
    node (a structural error) is never tolerated.
    """
    if not nodes:
        return False
    named = _ERROR_RE.findall(message)
    return bool(named) and all(name in nodes for _, name in named)
