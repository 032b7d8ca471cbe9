"""gelu-approx: switch GELU between the exact (erf) and the tanh approximation.

Changes results by design (``numerics = "changes"``; the two differ by up to ~5e-4 in absolute
terms around |x| ≈ 2): some compilers fuse only one of the two forms into a fast kernel, and a
model trained with one usually tolerates the other. Handled forms:

- the opset-20 ``Gelu`` op: its ``approximate`` attribute is switched;
- the decomposed forms torch writes below opset 20 (legacy and dynamo exporters) and
  decompose-gelu emits: ``0.5 · x · (1 + erf(x / √2))`` and
  ``0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))``, with the multiplications in any order
  and association, ``x / √2`` or ``x · (1/√2)``, and ``x³`` as ``Pow(x, 3)`` or two Muls.
  They are replaced by the other decomposed form.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import onnx_ir as ir

from surgery.graph import const_value, is_onnx_domain
from surgery.options import option
from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Miss, Rule, RuleContext, RulePass
from surgery.rules.engine import Replacement
from surgery.rules.formulas import gelu_exact, gelu_tanh

__all__ = ["GeluApprox", "match_decomposed_gelu"]


def _const_near(value: ir.Value | None, target: float, rtol: float = 1e-4) -> bool:
    array = const_value(value)
    return (
        array is not None
        and array.size == 1
        and abs(float(array.reshape(-1)[0]) - target) <= rtol * abs(target)
    )


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    if node is not None and node.op_type == op_type and is_onnx_domain(node.domain):
        return node
    return None


def _pair(node: ir.Node) -> list[tuple[ir.Value, ir.Value]]:
    a, b = node.inputs[0], node.inputs[1]
    assert a is not None and b is not None
    return [(a, b), (b, a)]


def _is_cube_of(value: ir.Value, x: ir.Value, nodes: list[ir.Node]) -> bool:
    pw = _producer(value, "Pow")
    if pw is not None and pw.inputs[0] is x and _const_near(pw.inputs[1], 3.0):
        nodes.append(pw)
        return True
    mul = _producer(value, "Mul")
    if mul is None:
        return False
    for p, q in _pair(mul):
        sq = _producer(q, "Mul")
        if p is x and sq is not None and sq.inputs[0] is x and sq.inputs[1] is x:
            nodes.extend([mul, sq])
            return True
    return False


def _inner(value: ir.Value, nodes: list[ir.Node]) -> tuple[str, ir.Value] | None:
    """Recognise erf(x/√2) or tanh(√(2/π)(x + 0.044715 x³)); return (mode, x)."""
    erf = _producer(value, "Erf")
    if erf is not None:
        arg = erf.inputs[0]
        div = _producer(arg, "Div")
        if div is not None and _const_near(div.inputs[1], math.sqrt(2.0)):
            nodes.extend([erf, div])
            return "none", div.inputs[0]  # type: ignore[return-value]
        mul = _producer(arg, "Mul")
        if mul is not None:
            for p, q in _pair(mul):
                if _const_near(q, 1.0 / math.sqrt(2.0)):
                    nodes.extend([erf, mul])
                    return "none", p
        return None
    tanh = _producer(value, "Tanh")
    if tanh is None:
        return None
    scale = _producer(tanh.inputs[0], "Mul")
    if scale is None:
        return None
    for s, inner in _pair(scale):
        if not _const_near(s, math.sqrt(2.0 / math.pi)):
            continue
        add = _producer(inner, "Add")
        if add is None:
            continue
        for x, term in _pair(add):
            coef = _producer(term, "Mul")
            if coef is None:
                continue
            for c, cube in _pair(coef):
                found: list[ir.Node] = []
                if _const_near(c, 0.044715, 1e-3) and _is_cube_of(cube, x, found):
                    nodes.extend([tanh, scale, add, coef, *found])
                    return "tanh", x
    return None


def _plus_one(value: ir.Value, nodes: list[ir.Node]) -> tuple[str, ir.Value] | None:
    add = _producer(value, "Add")
    if add is None:
        return None
    for p, q in _pair(add):
        if _const_near(q, 1.0):
            found = _inner(p, nodes)
            if found:
                nodes.append(add)
                return found
    return None


def match_decomposed_gelu(root: ir.Node) -> tuple[str, ir.Value, list[ir.Node]] | None:
    """Match ``0.5 · x · (1 + inner)`` ending at ``root`` (a Mul); return (mode, x, nodes)."""
    if root.op_type != "Mul" or not is_onnx_domain(root.domain) or len(root.inputs) != 2:
        return None
    for p, q in _pair(root):
        inner_mul = _producer(q, "Mul")
        candidates: list[
            tuple[ir.Value, ir.Value]
        ] = []  # (value that should be x, value that should be 1+inner)
        if _const_near(p, 0.5) and inner_mul is not None:
            candidates = [(a, b) for a, b in _pair(inner_mul)]  # 0.5 * (x * plus)
        elif inner_mul is not None:
            for a, b in _pair(inner_mul):
                if _const_near(a, 0.5):
                    candidates.append((p, b))  # x * (0.5 * plus)
                    candidates.append((b, p))  # plus * (0.5 * x)
        for x, plus in candidates:
            used: list[ir.Node] = []
            found = _plus_one(plus, used)
            if found and found[1] is x:
                return found[0], x, [root, inner_mul, *used]  # type: ignore[list-item]
    return None


class GeluApproxRule(Rule):
    """Gelu op or decomposed GELU → the other approximation."""

    name = "gelu-approx"

    def __init__(self, to: str) -> None:
        self.to = to  # "tanh" or "none"

    def targets(self, node: ir.Node) -> bool:
        return is_onnx_domain(node.domain) and node.op_type in ("Gelu", "Mul")

    def rewrite(self, ctx: RuleContext, node: ir.Node) -> Replacement | Miss:
        b = ctx.builder(node)
        if node.op_type == "Gelu":
            approximate = node.attributes.get("approximate")
            current = approximate.as_string() if approximate is not None else "none"
            if current == self.to:
                return Miss("")
            attrs: dict[str, Any] = {} if self.to == "none" else {"approximate": "tanh"}
            out = b.op("Gelu", node.inputs[0], name=node.name, **attrs)
            return Replacement(node, [node], list(node.outputs), b.nodes, [out])
        found = match_decomposed_gelu(node)
        if found is None:
            return Miss("")
        mode, x, nodes = found
        if mode == self.to:
            return Miss("")
        matched = set(nodes)
        for n in nodes:
            if n is node:
                continue
            for out in n.outputs:
                if out.is_graph_output() or any(u.node not in matched for u in out.uses()):
                    return Miss(f"intermediate '{out.name}' of the GELU is used elsewhere")
        y = gelu_tanh(b, x) if self.to == "tanh" else gelu_exact(b, x)
        return Replacement(node, nodes, list(node.outputs), b.nodes, [y])


@register
class GeluApprox(RulePass):
    """Switch GELU between exact (erf) and tanh forms, op or decomposed (changes results)."""

    name = "gelu-approx"
    numerics = Numerics.CHANGES

    @dataclasses.dataclass(frozen=True)
    class Options:
        to: Literal["tanh", "exact"] = option("tanh", help="the form to switch every GELU to")

    def rules(self) -> Sequence[Rule]:
        return [GeluApproxRule("tanh" if self.options.to == "tanh" else "none")]
