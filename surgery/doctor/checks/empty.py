"""Check: zero-size tensors (a dim of 0) in weights, graph I/O or annotated tensors."""

from __future__ import annotations

from surgery.doctor.checks._util import severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "empty-tensors"

# Inputs where ONNX itself uses an empty tensor to mean "not given" (Resize roi/scales).
_PLACEHOLDER_INPUTS = {("Resize", 1), ("Resize", 2)}


def check_empty(ctx: Context) -> list[Finding]:
    """Tensors with a zero dim, leaving out the empty placeholders ONNX defines (Resize roi/scales)."""
    rule = ctx.facts.rule("empty")
    placeholders: set[int] = set()
    for entry in ctx.nodes("Resize"):
        for op_index in _PLACEHOLDER_INPUTS:
            value = ctx.input(entry.node, op_index[1])
            if value is not None:
                placeholders.add(id(value))
    names: list[str] = []
    unused_only = True
    seen: set[int] = set()
    values = [v for g in [ctx.model.graph] for v in list(g.inputs) + list(g.outputs) + list(g.initializers.values())]
    values += [o for e in ctx.entries for o in e.node.outputs if o is not None]
    for value in values:
        if id(value) in seen or id(value) in placeholders:
            continue
        seen.add(id(value))
        dims = ctx.shape(value)
        if dims is None or 0 not in dims:
            continue
        names.append(value.name or "?")
        if value.uses() or value.is_graph_output():
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
            fix_note="cleanup removes them (nothing uses them)" if unused_only
            else "remove the empty computation in the model (e.g. a Concat with an empty input)",
            source=rule["source"],
        )
    ]
