"""Fingerprints of a model's graphs, to catch an edit the pass did not report.

A pass that edits the model but returns ``modified=False`` would skip every gate and have its edit
saved. The runner fingerprints the model before and after each pass: per graph (main graph, each
``If``/``Loop``/``Scan`` body by path, each model-local function) a digest of the structure (ops,
names, wiring, attributes, graph inputs/outputs and their types) and of small constants by value.
Large weights enter only by identity (the tensor object, its dtype and shape): they are never
serialized or read, so a fingerprint costs one walk over the nodes. Per-graph digests also tell the
parity gate WHICH subgraph a pass changed (branch coverage).
"""

from __future__ import annotations

import hashlib
from typing import Any

import onnx_ir as ir

__all__ = ["fingerprint", "changed_graphs", "SMALL_CONSTANT"]

SMALL_CONSTANT = 4096
"""Constants up to this many bytes are fingerprinted by value; larger ones by identity."""

_GRAPH = ir.AttributeType.GRAPH
_GRAPHS = ir.AttributeType.GRAPHS
_TENSOR = ir.AttributeType.TENSOR


def _tensor_key(tensor: Any) -> str:
    if tensor is None:
        return "none"
    dtype, shape = getattr(tensor, "dtype", None), getattr(tensor, "shape", None)
    nbytes = getattr(tensor, "nbytes", SMALL_CONSTANT + 1)
    if nbytes <= SMALL_CONSTANT and not isinstance(tensor, ir.ExternalTensor):
        try:
            return f"{dtype}{shape}:{hashlib.blake2b(tensor.tobytes(), digest_size=8).hexdigest()}"
        except Exception:  # e.g. string tensors: fall back to identity
            pass
    return f"{dtype}{shape}@{id(tensor):x}"


def _value_key(value: ir.Value | None) -> str:
    if value is None:
        return "-"
    return f"{value.name}:{value.dtype}:{value.shape}"


def _graph(graph: ir.Graph | ir.Function, path: str, out: dict[str, str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    update = h.update
    update(repr([_value_key(v) for v in graph.inputs]).encode())
    update(repr([_value_key(v) for v in graph.outputs]).encode())
    if isinstance(graph, ir.Graph):
        for name, value in graph.initializers.items():
            update(f"{name}={_tensor_key(value.const_value)};".encode())
    for index, node in enumerate(graph):
        parts = [node.domain, node.op_type, node.name or "", str(node.overload or "")]
        parts.extend(v.name if v is not None else "" for v in node.inputs)
        parts.append("->")
        parts.extend(_value_key(v) for v in node.outputs)
        attrs = node.attributes
        for key, attr in getattr(attrs, "data", attrs).items():
            kind = attr.type
            if attr.is_ref():
                parts.append(f"{key}=@{attr.ref_attr_name}")
            elif kind is _GRAPH:
                parts.append(f"{key}=" + _graph(attr.as_graph(), f"{path}/{node.op_type} '{node.name or index}'.{key}", out))
            elif kind is _GRAPHS:
                subs = attr.as_graphs()
                parts.append(f"{key}=" + ",".join(
                    _graph(g, f"{path}/{node.op_type} '{node.name or index}'.{key}[{i}]", out) for i, g in enumerate(subs)
                ))
            elif kind is _TENSOR:
                parts.append(f"{key}={_tensor_key(attr.value)}")
            else:
                parts.append(f"{key}={attr.value!r}")
        update("|".join(parts).encode())
        update(b"\n")
    digest = h.hexdigest()
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
