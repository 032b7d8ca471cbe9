"""drop-maxpool-indices: remove a MaxPool ``Indices`` output that nothing consumes.

``nn.MaxPool2d(return_indices=True)`` exports a two-output MaxPool even when the indices are
thrown away; ATC's MaxPool parser rejects the second output (MaxPoolWithArgmax fails to compile
on some CANN versions). The rebuilt MaxPool keeps its name and attributes; ``storage_order``,
which only affects the indices, is dropped. Outputs are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Builder, Match, Op, Rule, RulePass, Var

__all__ = ["DropMaxPoolIndices"]


class DropIndicesRule(Rule):
    """Two-output MaxPool whose Indices are unused → one-output MaxPool."""

    name = "drop-maxpool-indices"
    pattern = Op("MaxPool", Var("x"), unused_outputs=(1,))

    def check(self, ctx, m: Match) -> str | None:
        if len(m.root.outputs) < 2:
            return "has no Indices output"
        return None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value | None]:
        attrs = {
            k: a.value
            for k, a in m.root.attributes.items()
            if k != "storage_order" and not a.is_ref()
        }
        y = b.op("MaxPool", m["x"], name=m.root.name, **attrs)
        return [y, None]

    def targets(self, node: ir.Node) -> bool:
        return super().targets(node) and len(node.outputs) == 2


@register
class DropMaxPoolIndices(RulePass):
    """Remove unused Indices outputs of MaxPool (ATC rejects MaxPool with Indices)."""

    name = "drop-maxpool-indices"
    numerics = Numerics.EXACT

    def rules(self) -> list[Rule]:
        return [DropIndicesRule()]
