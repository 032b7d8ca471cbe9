"""Check: Gather with negative (constant) indices, which ATC's Gather does not support."""

from __future__ import annotations

from surgery.doctor.checks._util import severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "gather-negative-indices"


def check_gather_negative(ctx: Context) -> list[Finding]:
    """Gather nodes whose indices are constants holding a negative value."""
    rule = ctx.facts.rule("gather")
    labels = []
    for entry in ctx.nodes("Gather"):
        node = entry.node
        if ctx.folds(node):
            continue
        indices = ctx.const(ctx.input(node, 1))
        if indices is not None and indices.size and (indices < 0).any():
            labels.append(entry.label)
    if not labels:
        return []
    return [
        Finding(
            check=NAME,
            severity=severity(rule, "negative_indices_severity"),
            title=f"{len(labels)} Gather(s) with negative constant indices",
            nodes=labels,
            why="The CANN Gather page says negative indices are unsupported (ONNX counts them from the end).",
            fix=["normalize-gather-indices"],
            fix_note="normalize-gather-indices adds the axis length to negative constant indices (exact)",
            source="atc_onnx_ops.csv constraints (CANN Gather page)",
        )
    ]
