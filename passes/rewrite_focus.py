"""``rewrite-focus``: YOLOv5-style Focus (space-to-depth) slicing as Reshape + Transpose, bit-exact.

YOLOv5's Focus layer (and many detectors and super-resolution models after it) writes::

    torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)

which exports as four Slices with step 2 on the last axis and a Concat. ATC's Slice requires step 1
on the last axis, so the doctor flags these will-fail. The same values are a pure re-indexing::

    y[n, k*C + c, i, j] = x[n, c, 2i + r_k, 2j + s_k]

so ``x`` reshaped to ``[N, C, H/2, 2, W/2, 2]`` (axes n, c, i, r, j, s), transposed to put the two
offset axes in front of ``c`` in the order the Concat lists them, and reshaped to
``[N, 4C, H/2, W/2]`` gives ``y`` exactly (no arithmetic: bit-identical). Two Concat orders are
re-indexings of that kind: offsets varying columns fastest (``(0,0), (0,1), (1,0), (1,1)``, the
``SpaceToDepth`` order) and rows fastest (YOLOv5's ``(0,0), (1,0), (0,1), (1,1)``). The other 22
orders are left alone with a note.

``form = "space-to-depth"`` writes one ``SpaceToDepth(blocksize=2)`` (ATC maps it to its own
kernel) where the order is SpaceToDepth's, and the Reshape/Transpose form elsewhere.

The rewrite needs the input's static shape (the Reshape sizes are constants): run it after
``make-static`` on a dynamic model. Slices written as one Slice per axis, and full-range step-1
slices of the other axes, are matched (see :func:`surgery.idioms.match_focus`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import onnx_ir as ir

from surgery.graph import is_onnx_domain
from surgery.idioms import match_focus
from surgery.options import option
from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Miss, Replacement, RuleContext, RulePass
from surgery.rules.engine import RuleLike

__all__ = ["RewriteFocus"]

#: Concat order → the permutation of [n, c, i, r, j, s] that puts the offsets first in that order.
_PERMS = {
    ((0, 0), (0, 1), (1, 0), (1, 1)): (0, 3, 5, 1, 2, 4),  # k = 2r + s (SpaceToDepth's order)
    ((0, 0), (1, 0), (0, 1), (1, 1)): (0, 5, 3, 1, 2, 4),  # k = r + 2s (YOLOv5's order)
}
_SPACE_TO_DEPTH_ORDER = ((0, 0), (0, 1), (1, 0), (1, 1))


class FocusRule:
    """Four stride-2 Slices + Concat → Reshape, Transpose, Reshape (or SpaceToDepth)."""

    name = "rewrite-focus"

    def __init__(self, form: str) -> None:
        self.form = form

    def targets(self, node: ir.Node) -> bool:
        return node.op_type == "Concat" and is_onnx_domain(node.domain) and len(node.inputs) == 4

    def rewrite(self, ctx: RuleContext, node: ir.Node) -> Replacement | Miss:
        idiom = match_focus(node, ctx.shape)
        if idiom is None:
            loose = match_focus(node, ctx.shape, require_static=False)
            if loose is None:
                return Miss("")  # not a Focus idiom at all
            return Miss(
                "Focus slicing of an input without a static shape with even H and W (run make-static first)"
            )
        order = tuple(idiom.order)
        if order not in _PERMS:
            return Miss(
                f"Focus slicing with the Concat order {list(order)}, which no Transpose reproduces"
            )
        shape = ctx.shape(idiom.data)
        assert shape is not None  # match_focus checked it is static
        n, c, h, w = (int(d) for d in shape)  # type: ignore[arg-type]
        b = ctx.builder(node)
        if self.form == "space-to-depth" and order == _SPACE_TO_DEPTH_ORDER:
            y = b.op("SpaceToDepth", idiom.data, blocksize=2)
        else:
            blocks = b.op(
                "Reshape", idiom.data, b.ints([n, c, h // 2, 2, w // 2, 2], "blocks_shape")
            )
            blocks.shape = ir.Shape([n, c, h // 2, 2, w // 2, 2])
            moved = b.op("Transpose", blocks, perm=list(_PERMS[order]))
            perm = _PERMS[order]
            moved.shape = ir.Shape([blocks.shape[i] for i in perm])
            y = b.op("Reshape", moved, b.ints([n, 4 * c, h // 2, w // 2], "out_shape"))
        dtype = ctx.dtype(idiom.data)
        for new in b.nodes:
            for out in new.outputs:
                if out.type is None and dtype is not None and new.op_type != "Constant":
                    out.type = ir.TensorType(dtype)
        y.shape = ir.Shape([n, 4 * c, h // 2, w // 2])
        return Replacement(node, [*idiom.slices, node], list(node.outputs), b.nodes, [y])


@register
class RewriteFocus(RulePass):
    """Rewrite Focus / space-to-depth slicing (4 strided Slices + Concat) as Reshape + Transpose, exactly.

    Needs static input shapes (run after make-static).
    """

    name = "rewrite-focus"
    numerics = Numerics.EXACT

    @dataclasses.dataclass(frozen=True)
    class Options:
        form: Literal["transpose", "space-to-depth"] = option(
            "transpose",
            help="transpose: Reshape/Transpose/Reshape; space-to-depth: one SpaceToDepth where the channel "
            "order allows it",
        )

    def rules(self) -> Sequence[RuleLike]:
        return [FocusRule(self.options.form)]
