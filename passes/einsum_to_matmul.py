"""einsum-to-matmul: rewrite two-operand Einsum as Transpose/Reshape/MatMul.

ATC's Einsum kernel runs only on AICPU. Any two-operand equation without repeated letters inside
one operand (no diagonals) and without ellipsis is a batched matrix product once its letters are
sorted into four groups:

- batch letters (in both operands and the output), kept in front;
- contracted letters (in both operands, not in the output): the inner dimension;
- letters of only one operand that reach the output: that operand's free dimensions;
- letters of only one operand that do not reach the output: summed out first (ReduceSum).

Each operand is transposed to ``[batch, free, contracted]`` / ``[batch, contracted, free]``; groups
with several letters are merged by a Reshape (which needs static shapes), then one MatMul, a
Reshape back and a Transpose into the output order. Identity permutations and reshapes are
skipped, so ``bhid,bhjd->bhij`` becomes a Transpose and a MatMul. Outputs are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Builder, Match, Op, Rule, RuleContext, RulePass, Var
from surgery.shapes.dims import is_known_dim

__all__ = ["EinsumToMatMul", "plan_einsum"]


class EinsumPlan:
    """Letter groups of a two-operand einsum equation."""

    def __init__(self, a: str, b: str, out: str) -> None:
        self.a, self.b, self.out = a, b, out
        self.batch = [c for c in out if c in a and c in b]
        self.contracted = [c for c in a if c in b and c not in out]
        self.a_free = [c for c in out if c in a and c not in b]
        self.b_free = [c for c in out if c in b and c not in a]
        self.a_sum = [c for c in a if c not in b and c not in out]
        self.b_sum = [c for c in b if c not in a and c not in out]


def plan_einsum(equation: str) -> EinsumPlan | str:
    """Parse ``equation``; return a plan, or the reason it is not supported."""
    eq = equation.replace(" ", "")
    if "..." in eq:
        return "ellipsis is not supported"
    if "->" not in eq:
        lhs = eq
        letters = lhs.replace(",", "")
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    else:
        lhs, out = eq.split("->")
    operands = lhs.split(",")
    if len(operands) != 2:
        return f"{len(operands)} operands (only two are rewritten)"
    a, b = operands
    for term in (a, b, out):
        if len(set(term)) != len(term):
            return f"repeated letter in '{term}' (a diagonal or trace)"
        if not term.isalpha() and term:
            return f"unexpected characters in '{term}'"
    for c in out:
        if c not in a and c not in b:
            return f"output letter '{c}' appears in no operand"
    return EinsumPlan(a, b, out)


class EinsumRule(Rule):
    """Einsum with two operands → Transpose/Reshape/MatMul."""

    name = "einsum-to-matmul"
    pattern = Op("Einsum", Var("A"), Var("B"))

    def check(self, ctx: RuleContext, m: Match) -> str | None:
        plan = plan_einsum(str(m.attr("equation", "")))
        if isinstance(plan, str):
            return plan
        m.extra["plan"] = plan
        needs_static = any(len(group) > 1 for group in (plan.contracted, plan.a_free, plan.b_free))
        dims: dict[str, int | None] = {}
        broadcast: set[str] = set()
        for name, term in (("A", plan.a), ("B", plan.b)):
            shape = ctx.shape(m[name])
            if shape is None:
                if needs_static:
                    return f"the shape of '{m[name].name}' is unknown"
                continue
            if len(shape) != len(term):
                raise self.refuse(
                    ctx,
                    f"Einsum '{m.root.name}': '{term}' does not match the rank {len(shape)} of '{m[name].name}'",
                )
            for c, d in zip(term, shape, strict=True):
                if is_known_dim(d):
                    if dims.get(c) not in (None, d):
                        if 1 not in (dims.get(c), d):
                            raise self.refuse(
                                ctx,
                                f"Einsum '{m.root.name}': letter '{c}' has sizes {dims[c]} and {d}",
                            )
                        broadcast.add(c)
                    if dims.get(c) in (None, 1):
                        dims[c] = d
                else:
                    dims.setdefault(c, None)
        grouped = plan.contracted + plan.a_free + plan.b_free
        if needs_static and any(dims.get(c) is None for c in grouped):
            return "several letters share a group and some of their sizes are dynamic (a Reshape needs them)"
        if any(c in broadcast for c in plan.contracted):
            return f"contracted letters {sorted(set(plan.contracted) & broadcast)} broadcast"
        m.extra["dims"] = dims
        return None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value]:
        plan: EinsumPlan = m.extra["plan"]
        dims: dict[str, int | None] = m.extra["dims"]

        def prepare(x: ir.Value, term: str, summed: list[str], order: list[str]) -> ir.Value:
            if summed:
                x = b.reduce("ReduceSum", x, [term.index(c) for c in summed], keepdims=0)
                term = "".join(c for c in term if c not in summed)
            perm = [term.index(c) for c in order]
            if perm != list(range(len(perm))):
                x = b.op("Transpose", x, perm=perm)
            return x

        a = prepare(m["A"], plan.a, plan.a_sum, plan.batch + plan.a_free + plan.contracted)
        c = prepare(m["B"], plan.b, plan.b_sum, plan.batch + plan.contracted + plan.b_free)

        def size(group: list[str]) -> int:
            total = 1
            for ch in group:
                total *= int(dims[ch])  # type: ignore[arg-type]
            return total

        merge = any(len(g) > 1 for g in (plan.contracted, plan.a_free, plan.b_free))
        nb = len(plan.batch)
        if merge:
            # batch dims are copied (0) so they may stay dynamic and broadcast in MatMul
            a = b.op(
                "Reshape",
                a,
                b.ints([0] * nb + [size(plan.a_free), size(plan.contracted)], "a_shape"),
            )
            c = b.op(
                "Reshape",
                c,
                b.ints([0] * nb + [size(plan.contracted), size(plan.b_free)], "b_shape"),
            )
        else:
            # MatMul needs a row and a column dimension: add size-1 axes for empty groups
            if not plan.a_free:
                a = b.unsqueeze(a, [nb])
            if not plan.contracted:
                a = b.unsqueeze(a, [nb + 1])
                c = b.unsqueeze(c, [nb])
            if not plan.b_free:
                c = b.unsqueeze(c, [nb + 1])
        y = b.op("MatMul", a, c)
        produced = plan.batch + plan.a_free + plan.b_free
        if merge:
            free = [int(dims[ch]) for ch in plan.a_free + plan.b_free]  # type: ignore[arg-type]
            y = b.op("Reshape", y, b.ints([0] * nb + free, "out_shape"))
        else:
            squeeze = ([nb] if not plan.a_free else []) + ([nb + 1] if not plan.b_free else [])
            if squeeze:
                y = b.squeeze(y, squeeze)
        perm = [produced.index(ch) for ch in plan.out]
        if perm != list(range(len(perm))):
            y = b.op("Transpose", y, perm=perm)
        return [y]


@register
class EinsumToMatMul(RulePass):
    """Rewrite two-operand Einsum as Transpose/Reshape/MatMul (ATC's Einsum is AICPU-only)."""

    name = "einsum-to-matmul"
    numerics = Numerics.EXACT

    def rules(self) -> list[Rule]:
        return [EinsumRule()]
