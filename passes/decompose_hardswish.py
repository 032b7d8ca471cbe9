"""decompose-hardswish: replace HardSwish by HardSigmoid × x, or by the ReLU6 form.

HardSwish exists only from opset 14, and some compilers (or ATC releases before its HardSwish
plugin) lack it. Both forms equal ONNX's definition ``x * max(0, min(1, x / 6 + 0.5))``:

- ``form = "hardsigmoid"`` (default): ``x * HardSigmoid(x, alpha = 1/6, beta = 0.5)``;
- ``form = "relu6"``: ``x * Clip(x + 3, 0, 6) / 6``, the form MobileNetV3 papers write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import onnx_ir as ir

from surgery.options import option
from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Builder, Match, Op, Rule, RulePass, Var

__all__ = ["DecomposeHardSwish"]


class HardSwishRule(Rule):
    """HardSwish → x * HardSigmoid(x) or x * Clip(x + 3, 0, 6) / 6."""

    name = "decompose-hardswish"
    pattern = Op("HardSwish", Var("x"))

    def __init__(self, form: str) -> None:
        self.form = form

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value]:
        x = m["x"]
        if self.form == "hardsigmoid":
            return [b.op("Mul", x, b.op("HardSigmoid", x, alpha=1.0 / 6.0, beta=0.5))]
        shifted = b.op("Add", x, b.scalar(3.0, x, "three"))
        if b.opset >= 11:
            clipped = b.op("Clip", shifted, b.scalar(0.0, x, "zero"), b.scalar(6.0, x, "six"))
        else:
            clipped = b.op("Clip", shifted, min=0.0, max=6.0)
        return [b.op("Div", b.op("Mul", x, clipped), b.scalar(6.0, x, "six"))]


@register
class DecomposeHardSwish(RulePass):
    """Replace HardSwish by x * HardSigmoid(x) (or the ReLU6 form), exactly."""

    name = "decompose-hardswish"
    numerics = Numerics.EXACT

    @dataclasses.dataclass(frozen=True)
    class Options:
        form: Literal["hardsigmoid", "relu6"] = option(
            "hardsigmoid", help="hardsigmoid: x*HardSigmoid(x); relu6: x*Clip(x+3,0,6)/6"
        )

    def rules(self) -> list[Rule]:
        return [HardSwishRule(self.options.form)]
