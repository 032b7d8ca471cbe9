"""slice-step-to-gather: a Slice with a step other than 1 on the last axis as Gather, bit-exact.

ATC maps Slice to StridedSliceV2, which requires step 1 on the last axis and an input of rank 2 or
more (``atc_onnx_ops.csv``): a reversal written as ``x[..., ::-1]`` or ``x[:, 119::-1]`` (a
reflection pad, as onnx-asr's kaldi front end writes it) is refused, and so is any Slice of a
rank-1 tensor computed at run time. Along an axis of static size ``d``, a Slice with constant
``start``, ``end`` and ``step`` selects the positions ``range(*slice(start, end, step).indices(d))``
— ONNX's clamping for negative steps (start to ``[0, d-1]``, end to ``[-1, d-1]``) is Python's —
so it is exactly a ``Gather`` along that axis with those positions as a constant index vector
(non-negative, as ATC's Gather requires). Gather only copies elements: the rewrite is bit-exact
for every element type.

Only the last axis is rewritten (when its step is not 1, or the input has rank 1); the other
sliced axes — negative steps included, which ATC accepts there — stay in a Slice with only those
axes, followed by the Gather (selections on different axes commute). Only Slices whose starts, ends, axes and steps are constants and whose rewritten axes
have a static size are rewritten; a Slice that is shape arithmetic (its input a constant) is left
for ``make-static`` to fold. Runs in every graph: the main graph, If/Loop/Scan bodies and
model-local functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Builder, Const, Match, Op, Rule, RuleContext, RulePass, Var

__all__ = ["SliceStepToGather", "gather_plan"]


def _ints(array: np.ndarray | None) -> list[int] | None:
    return None if array is None else [int(v) for v in np.asarray(array).reshape(-1)]


def gather_plan(
    shape: ir.Shape | None,
    starts: Sequence[int],
    ends: Sequence[int],
    axes: Sequence[int] | None,
    steps: Sequence[int] | None,
) -> tuple[dict[int, list[int]], list[tuple[int, int, int, int]]] | str:
    """How to rewrite a Slice: ``({axis: positions} to gather, [(axis, start, end, step)] kept in a
    Slice)``, or the reason it is left alone."""
    if shape is None:
        return "input rank unknown"
    rank = len(shape)
    if rank == 0:
        return "scalar input"
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    if not (len(axes) == len(starts) == len(ends) == len(steps)):
        return "starts, ends, axes and steps differ in length"
    gathered: dict[int, list[int]] = {}
    kept: list[tuple[int, int, int, int]] = []
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        if not -rank <= axis < rank:
            return f"axis {axis} out of range"
        axis %= rank
        if step == 0:
            return "step 0"
        if axis != rank - 1 or (step == 1 and rank > 1):
            kept.append((axis, start, end, step))
            continue
        dim = shape[axis]
        if not isinstance(dim, int):
            return f"axis {axis} (sliced with step {step}) has no static size"
        gathered[axis] = list(range(*slice(start, end, step).indices(dim)))
    if not gathered:
        return "step 1 on the last axis of a tensor of rank 2 or more"
    return gathered, kept


class SliceStepRule(Rule):
    """Slice(step != 1 on the last axis, or rank 1) → [Slice of the other axes] → Gather."""

    name = "slice-step-to-gather"
    pattern = Op(
        "Slice",
        Var("x"),
        Const("starts"),
        Const("ends"),
        Const("axes", optional=True),
        Const("steps", optional=True),
    )

    def check(self, ctx: RuleContext, m: Match) -> str | None:
        if ctx.opset < 10:
            return "Slice-1 has no steps"
        if m["x"].const_value is not None or (
            m["x"].producer() is None and m["x"].is_initializer()
        ):
            return "a constant input: make-static folds it"
        plan = gather_plan(
            ctx.shape(m["x"]),
            _ints(m.const("starts")) or [],
            _ints(m.const("ends")) or [],
            _ints(m.const("axes")) if m.get("axes") is not None else None,
            _ints(m.const("steps")) if m.get("steps") is not None else None,
        )
        if isinstance(plan, str):
            return plan
        self._plan = plan
        return None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value | None]:
        gathered, kept = self._plan
        x = m["x"]
        if kept:
            x = b.slice(
                x,
                [k[1] for k in kept],
                [k[2] for k in kept],
                [k[0] for k in kept],
                [k[3] for k in kept],
            )
        for axis, positions in sorted(gathered.items()):
            x = b.op("Gather", x, b.ints(positions, f"indices_axis{axis}"), axis=axis)
        return [x]


@register
class SliceStepToGather(RulePass):
    """Rewrite a Slice with a step other than 1 on the last axis (a reversal …) as Gather, bit-exact.

    ATC's Slice (StridedSliceV2) needs step 1 on the last axis and rank >= 2. Along an axis of
    static size the positions such a Slice selects are constants, so a Gather with that constant,
    non-negative index vector computes the same tensor; the other sliced axes stay in a Slice.
    Needs constant starts/ends/axes/steps and a static last dim; rank-1 Slices are rewritten too.
    """

    name = "slice-step-to-gather"
    numerics = Numerics.EXACT

    def rules(self) -> list[Rule]:
        return [SliceStepRule()]
