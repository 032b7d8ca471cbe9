"""What keeps a model from being static: tensors with unknown or symbolic dims, data-dependent ops.

Used by ``assert-static`` (which fails on any offender) and by ``make-static``'s report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import onnx_ir as ir

from surgery.graph import GraphLike, const_value, is_onnx_domain, iter_graphs
from surgery.shapes.dims import is_known_dim, shape_text

__all__ = ["DATA_DEPENDENT_OPS", "Offender", "find_offenders", "format_shape", "function_label"]

#: Ops whose output shape depends on input values (always dynamic for a static compiler).
DATA_DEPENDENT_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})


@dataclasses.dataclass(frozen=True)
class Offender:
    """One reason the model is not static."""

    graph: str
    what: str  # "tensor" or "op"
    name: str
    detail: str
    producer: str

    def __str__(self) -> str:
        where = "" if self.graph == "main" else f" [in {self.graph}]"
        return f"{self.what} '{self.name}'{where}: {self.detail} ({self.producer})"


def format_shape(shape: ir.Shape | None) -> str:
    return shape_text(shape)


def _producer_text(value: ir.Value) -> str:
    node = value.producer()
    if node is not None:
        return f"produced by {node.op_type} node '{node.name}'"
    if value.is_graph_input():
        return "graph input"
    return "no producer"


def _graph_labels(model: ir.Model) -> dict[int, str]:
    labels = {id(model.graph): "main"}

    def visit(graph: GraphLike, label: str) -> None:
        for node in graph:
            for attr in node.attributes.values():
                if attr.is_ref():
                    continue
                subs = []
                if attr.type == ir.AttributeType.GRAPH:
                    subs = [attr.as_graph()]
                elif attr.type == ir.AttributeType.GRAPHS:
                    subs = list(attr.as_graphs())
                for i, sub in enumerate(subs):
                    sub_label = f"{node.op_type} '{node.name}'.{attr.name}" + (
                        f"[{i}]" if len(subs) > 1 else ""
                    )
                    if label != "main":
                        sub_label = f"{label} > {sub_label}"
                    labels[id(sub)] = sub_label
                    visit(sub, sub_label)

    visit(model.graph, "main")
    return labels


def _static_tensor(value: ir.Value, shape: ir.Shape | None) -> str | None:
    """None if static, else why not."""
    if value.type is not None and not isinstance(value.type, ir.TensorType):
        return f"non-tensor type {value.type}"
    if shape is None:
        return "unknown rank"
    bad = [i for i, d in enumerate(shape) if not is_known_dim(d)]
    if bad:
        return f"shape {format_shape(shape)} has dynamic dim{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))}"
    return None


def find_offenders(
    model: ir.Model,
    *,
    allow_ops: frozenset[str] = frozenset(),
    shapes: Mapping[ir.Value, ir.Shape | None] | None = None,
) -> list[Offender]:
    """Every tensor of every graph with a non-static shape, every data-dependent op, every Loop/Scan.

    ``shapes`` are the shapes to judge (``assert-static`` passes the ones inference proves,
    :func:`~surgery.shapes.infer.proven_shapes`); by default the annotations.

    Values downstream of an allowed op (``allow_ops``) are exempt: their dynamism is accepted.

    Model-local functions are templates whose tensors take their shapes at each call site, so a
    static compiler only sees them once inlined (ATC refuses them: E16005). A call to one is an
    offender (run ``inline-functions`` first), and so is a data-dependent op inside a function body.
    """
    labels = _graph_labels(model)
    offenders: list[Offender] = []
    exempt: set[ir.Value] = set()
    seen: set[ir.Value] = set()
    for graph in iter_graphs(model.graph):
        label = labels.get(id(graph), "subgraph")
        values: list[ir.Value] = list(graph.inputs)
        for node in graph:
            allowed = node.op_type in allow_ops
            tainted = allowed or any(v in exempt for v in node.inputs if v is not None)
            if tainted:
                exempt.update(node.outputs)
            if not allowed:
                reason = _data_dependent(node)
                if reason:
                    offenders.append(
                        Offender(
                            label, "op", node.name or node.op_type, reason, f"{node.op_type} node"
                        )
                    )
                elif (node.domain, node.op_type, node.overload) in model.functions:
                    offenders.append(
                        Offender(
                            label,
                            "op",
                            node.name or node.op_type,
                            f"calls model-local function '{function_label(node.domain, node.op_type, node.overload)}', "
                            "whose tensors are only shaped per call (run inline-functions first)",
                            f"{node.op_type} node",
                        )
                    )
            values.extend(node.outputs)
        values.extend(graph.outputs)
        for value in values:
            if value in seen or value in exempt:
                continue
            seen.add(value)
            reason = _static_tensor(
                value, shapes[value] if shapes is not None and value in shapes else value.shape
            )
            if reason:
                offenders.append(
                    Offender(
                        label, "tensor", value.name or "<unnamed>", reason, _producer_text(value)
                    )
                )
    for (domain, name, overload), function in model.functions.items():
        label = f"function {function_label(domain, name, overload)}"
        for graph in iter_graphs(function):
            for node in graph:
                reason = None if node.op_type in allow_ops else _data_dependent(node)
                if reason:
                    offenders.append(
                        Offender(
                            label, "op", node.name or node.op_type, reason, f"{node.op_type} node"
                        )
                    )
    return offenders


def function_label(domain: str, name: str, overload: str) -> str:
    """How reports name a model-local function: ``domain::name`` (``:overload`` when it has one)."""
    return f"{domain}::{name}" + (f":{overload}" if overload else "")


def _data_dependent(node: ir.Node) -> str | None:
    if not is_onnx_domain(node.domain):
        return None
    op = node.op_type
    if op in DATA_DEPENDENT_OPS:
        return f"{op} has a data-dependent output shape"
    if op == "TopK":
        k = node.inputs[1] if len(node.inputs) > 1 else None
        if k is not None and const_value(k) is None:
            return "TopK with a non-constant k"
    if op == "Loop":
        trip = node.inputs[0] if node.inputs else None
        if trip is None or const_value(trip) is None:
            return "Loop without a constant trip count"
        return "Loop left in the model (a static compiler needs straight-line code: make-static with unroll_loops = true)"
    if op == "Scan":
        return "Scan left in the model (a static compiler needs straight-line code: make-static with unroll_loops = true)"
    return None
