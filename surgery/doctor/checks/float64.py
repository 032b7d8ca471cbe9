"""Check: float64 anywhere (inputs, outputs, weights, Cast targets, intermediate tensors)."""

from __future__ import annotations

import onnx_ir as ir

from surgery.doctor.checks._util import attr, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding
from surgery.graph import value_names

NAME = "float64"

_DOUBLE = ir.DataType.DOUBLE
_DTYPE_ATTRS = ("to", "dtype")  # Cast/CastLike targets, Random*/EyeLike output types


def check_float64(ctx: Context) -> list[Finding]:
    """Every node that reads or writes float64, and float64 graph inputs and outputs."""
    rule = ctx.facts.rule("float64")
    nodes: list[str] = []
    tensors: set[str] = set()
    for entry in ctx.entries:
        node = entry.node
        hit = False
        for value in list(node.inputs) + list(node.outputs):
            if value is not None and ctx.dtype(value) == _DOUBLE:
                hit = True
                tensors.add(value.name or "?")
        for name in _DTYPE_ATTRS:
            if attr(node, name) == _DOUBLE.value:
                hit = True
        if node.op_type == "Constant":
            array = ctx.const(node.outputs[0]) if node.outputs else None
            if array is not None and array.dtype.name == "float64":
                hit = True
        if hit:
            nodes.append(entry.label)
    graph = ctx.model.graph
    io = value_names(v for v in [*graph.inputs, *graph.outputs] if ctx.dtype(v) == _DOUBLE)
    if not nodes and not io:
        return []
    why = (
        "No AI Core kernel takes float64 (the CANN Cast page lists no double). GE moves an op to AICPU where an "
        "AICPU float64 kernel exists and otherwise stops with EZ3002; the shipped data cannot tell which, so "
        "float64 is treated as failing."
    )
    return [
        Finding(
            check=NAME,
            severity=severity(rule),
            title=f"float64 in {len(nodes)} node(s)"
            + (f" and graph I/O {', '.join(io)}" if io else ""),
            nodes=nodes or io,
            why=why,
            fix=["narrow-float64"],
            fix_note="narrow-float64 turns every float64 into float32 (weights, Casts, attributes, graph I/O)",
            source=rule["source"],
            details={"tensors": sorted(tensors), "graph_io": io},
        )
    ]
