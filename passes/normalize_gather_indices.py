"""normalize-gather-indices: make constant negative Gather/GatherElements indices positive.

ONNX allows negative indices (counted from the end); ATC's Gather (GatherV2) does not. A constant
index ``i < 0`` becomes ``i + size`` where ``size`` is the data's extent along the gather axis,
which must be known. The new indices are a new constant (a shared initializer is left alone for
its other users); the data type of the indices is kept. Outputs are unchanged. Indices out of
range (``i < -size`` or ``i >= size``) are refused: ONNX leaves them undefined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Builder, Const, Match, Op, Rule, RuleContext, RulePass, Var

__all__ = ["NormalizeGatherIndices"]


def _has_negative(a: np.ndarray) -> bool:
    return a.dtype.kind in "iu" and a.size > 0 and bool((a < 0).any())


class GatherIndicesRule(Rule):
    """Gather/GatherElements with constant negative indices → non-negative constant."""

    name = "normalize-gather-indices"
    pattern = Op(("Gather", "GatherElements"), Var("data"), Const("indices", where=_has_negative))

    def check(self, ctx: RuleContext, m: Match) -> str | None:
        shape = ctx.shape(m["data"])
        if shape is None:
            return f"the shape of '{m['data'].name}' is unknown"
        axis = int(m.attr("axis", 0))
        rank = len(shape)
        if not -rank <= axis < rank:
            raise self.refuse(
                ctx,
                f"{m.root.op_type} '{m.root.name}': axis {axis} is out of range for rank {rank}",
            )
        size = shape[axis % rank]
        if not isinstance(size, int):
            return f"dimension {axis} of '{m['data'].name}' is dynamic ({size})"
        indices = m.const("indices")
        if (indices < -size).any() or (indices >= size).any():
            raise self.refuse(
                ctx,
                f"{m.root.op_type} '{m.root.name}': indices '{m['indices'].name}' fall outside [-{size}, {size})",
            )
        m.extra["size"] = size
        return None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value]:
        indices = m.const("indices")
        fixed = np.where(indices < 0, indices + m.extra["size"], indices).astype(indices.dtype)
        new = b.const(fixed, "indices")
        attrs = {k: a.value for k, a in m.root.attributes.items() if not a.is_ref()}
        return [b.op(m.root.op_type, m["data"], new, name=m.root.name, **attrs)]


@register
class NormalizeGatherIndices(RulePass):
    """Turn constant negative Gather/GatherElements indices into positive ones (ATC rejects negatives)."""

    name = "normalize-gather-indices"
    numerics = Numerics.EXACT

    def rules(self) -> list[Rule]:
        return [GatherIndicesRule()]
