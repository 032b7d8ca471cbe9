"""Ready-made exact rules for the ``rewrite`` pass (``rules = "surgery.rules.library:EXACT"``).

They double as examples of the rule language: a two-node pattern with an attribute read
(:class:`FuseTransposes`) and a pattern on a constant input (:class:`MulByOne`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from surgery.rules.builder import Builder
from surgery.rules.engine import Rule, RuleContext
from surgery.rules.pattern import Const, Match, Op, Var

__all__ = ["EXACT", "FuseTransposes", "MulByOne"]


class FuseTransposes(Rule):
    """Transpose(Transpose(x, p), q) → one Transpose (or nothing when they cancel)."""

    name = "fuse-transposes"
    pattern = Op("Transpose", Op("Transpose", Var("x"), name="first"))

    def check(self, ctx: RuleContext, m: Match) -> str | None:
        first = m.nodes_by_name["first"]
        p, q = m.attr("perm", node=first), m.attr("perm")
        if p is None or q is None:
            return "a Transpose without perm (reverses a rank that may be unknown)"
        m.extra["perm"] = [int(p[i]) for i in q]
        return None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value]:
        perm = m.extra["perm"]
        if perm == list(range(len(perm))):
            return [m["x"]]
        return [b.op("Transpose", m["x"], perm=perm)]


class MulByOne(Rule):
    """x * 1 → x when the constant does not broadcast x to a larger shape."""

    name = "mul-by-one"
    pattern = Op("Mul", Var("x"), Const("one", where=lambda a: a.size > 0 and bool(np.all(a == 1))))

    def check(self, ctx: RuleContext, m: Match) -> str | None:
        shape = ctx.shape(m["x"])
        one = m.const("one")
        if shape is None or len(shape) < one.ndim:
            return "the constant may broadcast x to a higher rank"
        dtype = ctx.dtype(m["x"])
        if dtype is None or dtype.numpy() != one.dtype:
            return "the element types are not known to match"
        if any(
            d != 1 and (i >= len(shape) or shape[len(shape) - one.ndim + i] != d)
            for i, d in enumerate(one.shape)
        ):
            return "the constant may broadcast x to a larger shape"
        return None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value]:
        return [m["x"]]


EXACT = [FuseTransposes(), MulByOne()]
