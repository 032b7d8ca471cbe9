"""Check: zero-size tensors (a dim of 0) in weights, graph I/O or annotated tensors.

Empty tensors that ONNX uses as "nothing given" parameters are left out: an empty integer list in
a parameter input (Reduce* axes, Slice/Pad/Split lists, Reshape's scalar target) and the empty
float ``roi``/``scales`` of Resize and the ``target_type`` tensor of CastLike.
"""

from __future__ import annotations

import onnx_ir as ir

from surgery.doctor.checks._util import severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "empty-tensors"

_PLACEHOLDER_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("CastLike", 1)})


def _is_empty(ctx: Context, value: ir.Value) -> bool:
    dims = ctx.shape(value)
    return dims is not None and 0 in dims


def _parameter_use(ctx: Context, node: ir.Node, index: int, value: ir.Value) -> bool:
    if index == 0:
        return False
    dtype = ctx.dtype(value)
    return (node.op_type, index) in _PLACEHOLDER_INPUTS or (
        dtype is not None and dtype.is_integer()
    )


def check_empty(ctx: Context) -> list[Finding]:
    """Tensors with a zero dim, except empty parameters (graph inputs included) that only parameter slots read."""
    rule = ctx.facts.rule("empty")
    graph = ctx.model.graph
    values = list(graph.inputs) + list(graph.outputs) + list(graph.initializers.values())
    values += [o for e in ctx.entries for o in e.node.outputs if o is not None]
    names: list[str] = []
    unused_only = True
    seen: set[int] = set()
    for value in values:
        if id(value) in seen:
            continue
        seen.add(id(value))
        if not _is_empty(ctx, value):
            continue
        uses = value.uses()
        if (
            uses
            and not value.is_graph_output()
            and all(_parameter_use(ctx, use.node, use.idx, value) for use in uses)
        ):
            continue
        names.append(value.name or "?")
        if uses or value.is_graph_output():
            unused_only = False
    if not names:
        return []
    return [
        Finding(
            check=NAME,
            severity=severity(rule),
            title=f"{len(names)} zero-size tensor(s)",
            nodes=names,
            why="Tensors with a 0 dim carry no data; ATC support for them varies by op and CANN version (not in "
            "the shipped data). They usually come from export artefacts (an empty branch or constant).",
            fix=["cleanup"] if unused_only else [],
            fix_note="cleanup removes them (nothing uses them)"
            if unused_only
            else "remove the empty computation in the model (e.g. a Concat with an empty input)",
            source=rule["source"],
        )
    ]
