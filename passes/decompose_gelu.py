"""decompose-gelu: replace the opset-20 ``Gelu`` op by elementary ops (exact or tanh form).

ATC registers no ``Gelu`` parser at any opset, and opset-20 exports (torch's dynamo exporter at
``opset_version=20``, the legacy exporter at 20) write ``Gelu``. The replacement keeps the chosen
``approximate`` mode, so the outputs are unchanged up to float rounding:

- ``approximate="none"``: ``x * (erf(x / sqrt(2)) + 1) * 0.5`` (the form torch writes below 20);
- ``approximate="tanh"``: ``x * (tanh(sqrt(2/pi) * (x + 0.044715 * x^3)) + 1) * 0.5``.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Builder, Match, Op, Rule, RuleContext, RulePass, Var
from surgery.rules.formulas import gelu_exact, gelu_tanh

__all__ = ["DecomposeGelu", "GeluRule", "gelu_exact", "gelu_tanh"]


class GeluRule(Rule):
    """Gelu → Erf/Tanh arithmetic, keeping the approximation."""

    name = "decompose-gelu"
    pattern = Op("Gelu", Var("x"))

    def check(self, ctx: RuleContext, m: Match) -> str | None:
        mode = m.attr("approximate", "none")
        if mode not in ("none", "tanh"):
            raise self.refuse(
                ctx, f"Gelu '{m.root.name}' has approximate={mode!r}; only 'none' and 'tanh' exist"
            )
        return None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value]:
        if m.attr("approximate", "none") == "tanh":
            return [gelu_tanh(b, m["x"])]
        return [gelu_exact(b, m["x"])]


@register
class DecomposeGelu(RulePass):
    """Replace Gelu ops (opset 20) by Erf or Tanh arithmetic, keeping exact/tanh."""

    name = "decompose-gelu"
    numerics = Numerics.EXACT

    def rules(self) -> list[Rule]:
        return [GeluRule()]
