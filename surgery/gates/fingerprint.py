"""Fingerprints of a model's graphs, to catch an edit the pass did not report.

A pass that edits the model but returns ``modified=False`` would skip every gate and have its edit
saved. The runner fingerprints the model before and after each pass: per graph (main graph, each
``If``/``Loop``/``Scan`` body by path, each model-local function) a digest of the structure (ops,
names, wiring, attributes, graph inputs/outputs and their types) and of small constants by value
(an edit to an intermediate value's type annotation alone is not seen: it changes no result).
Large weights are never serialized: they enter by identity (the tensor object, its dtype and
shape) and, for in-memory arrays, by a sampled checksum of their bytes (the length and
1024 blocks of 64 bytes spread evenly over the buffer: :mod:`surgery.checksum`, read in place), so a
pass that edits a large weight's numpy array in place and reports ``modified=False`` is seen too;
an edit that touches none of the sampled blocks (a few scattered elements of a large tensor) is
not. A fingerprint costs one walk over the nodes plus 64 KiB read per
large weight. Memory-mapped (external) weights are read-only: identity suffices. Per-graph
digests also tell the parity gate WHICH subgraph a pass changed (branch coverage).
"""

from __future__ import annotations

import hashlib
from typing import Any

import onnx_ir as ir

from surgery.checksum import sampled_digest

__all__ = ["SMALL_CONSTANT", "changed_graphs", "fingerprint"]

SMALL_CONSTANT = 4096
"""Constants up to this many bytes are fingerprinted by value; larger ones by identity and a sample."""

_GRAPH = ir.AttributeType.GRAPH
_GRAPHS = ir.AttributeType.GRAPHS
_TENSOR = ir.AttributeType.TENSOR


def _tensor_key(tensor: Any) -> Any:
    if tensor is None:
        return None
    nbytes = getattr(tensor, "nbytes", SMALL_CONSTANT + 1)
    if nbytes <= SMALL_CONSTANT and not isinstance(tensor, ir.ExternalTensor):
        try:
            return (
                str(tensor.dtype),
                tuple(tensor.shape),
                hashlib.blake2b(tensor.tobytes(), digest_size=8).digest(),
            )
        except Exception:  # e.g. string tensors: fall back to identity
            pass
    return (str(getattr(tensor, "dtype", None)), id(tensor), _sampled(tensor))


def _sampled(tensor: Any) -> Any:
    """A sampled checksum of an in-memory tensor's bytes, read in place (None if the bytes are not
    an in-memory numpy buffer: external data, lazy or foreign tensors)."""
    if isinstance(tensor, ir.ExternalTensor) or not isinstance(tensor, ir.Tensor):
        return None
    return sampled_digest(tensor.raw)


def _port_key(value: ir.Value) -> Any:
    shape = value.shape
    return (
        value.name,
        value.dtype,
        None if shape is None else tuple(d if isinstance(d, int) else str(d) for d in shape),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (int, float, str, bytes, bool)) or value is None:
        return value
    return repr(value)


def _graph(graph: ir.Graph | ir.Function, path: str, out: dict[str, str]) -> str:
    """Digest of one graph; nested graphs are digested (and recorded) under their own paths.

    Built from tuples hashed by Python's ``hash`` (a C-speed walk; the digests are only ever
    compared within one run). Intermediate values enter by name, graph inputs and outputs with
    their types and shapes.
    """
    items: list[Any] = [
        tuple(_port_key(v) for v in graph.inputs),
        tuple(_port_key(v) for v in graph.outputs),
    ]
    if isinstance(graph, ir.Graph):
        items.append(
            tuple(
                (name, _tensor_key(value.const_value)) for name, value in graph.initializers.items()
            )
        )
    append = items.append
    for index, node in enumerate(graph):
        attrs = node.attributes
        attr_key: Any = ()
        if attrs:
            parts: list[tuple[Any, ...]] = []
            for key, attr in getattr(attrs, "data", attrs).items():
                kind = attr.type
                if attr.is_ref():
                    parts.append((key, "@", attr.ref_attr_name))
                elif kind is _GRAPH:
                    parts.append(
                        (
                            key,
                            _graph(
                                attr.as_graph(),
                                f"{path}/{node.op_type} '{node.name or index}'.{key}",
                                out,
                            ),
                        )
                    )
                elif kind is _GRAPHS:
                    parts.append(
                        (
                            key,
                            tuple(
                                _graph(
                                    g,
                                    f"{path}/{node.op_type} '{node.name or index}'.{key}[{i}]",
                                    out,
                                )
                                for i, g in enumerate(attr.as_graphs())
                            ),
                        )
                    )
                elif kind is _TENSOR:
                    parts.append((key, _tensor_key(attr.value)))
                else:
                    parts.append((key, _plain(attr.value)))
            attr_key = tuple(parts)
        append(
            (
                node.op_type,
                node.domain,
                node.name,
                node.overload,
                tuple([v.name if v is not None else None for v in node.inputs]),
                tuple([v.name for v in node.outputs]),
                attr_key,
            )
        )
    digest = format(hash(tuple(items)) & 0xFFFFFFFFFFFFFFFF, "016x")
    out[path] = digest
    return digest


def fingerprint(model: ir.Model) -> dict[str, str]:
    """Per-graph digests of ``model`` (keys: ``graph``, subgraph paths, ``function DOMAIN:NAME``)."""
    out: dict[str, str] = {}
    out["model"] = f"{model.ir_version}:{sorted(model.opset_imports.items())}"
    _graph(model.graph, "graph", out)
    for key, function in model.functions.items():
        _graph(function, f"function {':'.join(str(k) for k in key if k)}", out)
    return out


def changed_graphs(before: dict[str, str] | None, after: dict[str, str] | None) -> list[str]:
    """Paths of graphs that differ (added, removed or changed) between two fingerprints."""
    if before is None or after is None:
        return []
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
