"""maxpool-to-avgpool: replace MaxPool by AveragePool (semantics change, deviation reported).

For a compiler that cannot run a given MaxPool (MaxPoolWithArgmax on some CANN versions, a
kernel outside ATC's MaxPool limits), an AveragePool over the same windows is a common stand-in
when the model tolerates it (e.g. after retraining). The pass is ``numerics = "changes"``: the
report shows how far the outputs moved.

Attribute mapping:

- ``kernel_shape``, ``strides``, ``pads``, ``auto_pad`` and ``ceil_mode`` are copied.
- ``count_include_pad`` is 0 by default, on purpose: MaxPool ignores padding (pads act as -inf),
  so the average should be taken over the real elements only; with ``count_include_pad = true``
  padded zeros pull border windows towards 0.
- ``dilations`` other than 1 exist on AveragePool only from opset 19; below that the node is
  refused with a reason (ATC parses opsets ≤ 18, where there is no dilated AveragePool).
- A MaxPool whose ``Indices`` output is consumed is refused, naming the consumer (averages have
  no argmax). An unused ``Indices`` output is dropped. Integer MaxPools (int8/uint8) are refused:
  AveragePool is float only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import onnx_ir as ir

from surgery.options import option
from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Builder, Match, Op, Rule, RuleContext, RulePass, Var

__all__ = ["MaxPoolToAvgPool"]

_FLOATS = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16)


class MaxToAvgRule(Rule):
    """MaxPool → AveragePool with the same windows."""

    name = "maxpool-to-avgpool"
    pattern = Op("MaxPool", Var("x"))

    def __init__(self, count_include_pad: bool, only: frozenset[str]) -> None:
        self.count_include_pad = count_include_pad
        self.only = only

    def targets(self, node: ir.Node) -> bool:
        return super().targets(node) and (not self.only or node.name in self.only)

    def check(self, ctx: RuleContext, m: Match) -> str | None:
        node = m.root
        if len(node.outputs) > 1:
            indices = node.outputs[1]
            user = next(iter(indices.uses()), None)
            if user is not None:
                raise self.refuse(
                    ctx,
                    f"MaxPool '{node.name}': its Indices output '{indices.name}' is consumed by "
                    f"{user.node.op_type} '{user.node.name}'; an AveragePool has no indices",
                )
            if indices.is_graph_output():
                raise self.refuse(
                    ctx,
                    f"MaxPool '{node.name}': its Indices output '{indices.name}' is a graph output",
                )
        dtype = m["x"].dtype
        if dtype is not None and dtype not in _FLOATS:
            raise self.refuse(
                ctx, f"MaxPool '{node.name}' pools {dtype.name} data; AveragePool is float only"
            )
        dilations = m.attr("dilations")
        if dilations and any(d != 1 for d in dilations) and ctx.opset < 19:
            raise self.refuse(
                ctx,
                f"MaxPool '{node.name}' has dilations {list(dilations)}; AveragePool supports dilations "
                f"only from opset 19 (the model is at {ctx.opset})",
            )
        return None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value | None]:
        node = m.root
        attrs: dict = {"kernel_shape": list(m.attr("kernel_shape"))}
        for key in ("strides", "pads"):
            if key in node.attributes:
                attrs[key] = list(m.attr(key))
        auto_pad = m.attr("auto_pad", "NOTSET")
        if auto_pad != "NOTSET":
            attrs["auto_pad"] = auto_pad
        if m.attr("ceil_mode", 0):
            attrs["ceil_mode"] = 1
        dilations = m.attr("dilations")
        if dilations and any(d != 1 for d in dilations):
            attrs["dilations"] = list(dilations)
        attrs["count_include_pad"] = 1 if self.count_include_pad else 0
        y = b.op("AveragePool", m["x"], suffix="AveragePool", **attrs)
        return [y] + [None] * (len(node.outputs) - 1)


@register
class MaxPoolToAvgPool(RulePass):
    """Replace MaxPool by AveragePool over the same windows (changes results; deviation reported)."""

    name = "maxpool-to-avgpool"
    numerics = Numerics.CHANGES

    @dataclasses.dataclass(frozen=True)
    class Options:
        count_include_pad: bool = option(
            False,
            help="average padded zeros too (default: average real elements only, as MaxPool ignores pads)",
        )
        nodes: tuple[str, ...] = option(
            (), help="names of the MaxPool nodes to replace (default: all)"
        )

    def rules(self) -> list[Rule]:
        return [MaxToAvgRule(self.options.count_include_pad, frozenset(self.options.nodes))]
