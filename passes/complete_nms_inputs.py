"""complete-nms-inputs: give every NonMaxSuppression all five inputs, keeping ONNX semantics.

ATC 9.0.1 crashes on a NonMaxSuppression with three or four inputs (its NonMaxSuppressionV6
mapping wants all five). The missing inputs get the values ONNX gives them when absent:

- ``max_output_boxes_per_class`` absent means 0 (select nothing): it becomes ``[0]`` (int64);
- ``iou_threshold`` absent means 0.0: it becomes ``[0.0]``;
- ``score_threshold`` absent means *no score filtering*; the constant that filters nothing is
  ``-inf`` (the op keeps boxes whose score is ``> score_threshold``), so it becomes ``[-inf]``.
  The only scores that behave differently are ``-inf`` and NaN, which an absent threshold keeps.
  Set ``score_threshold`` to another value (e.g. the lowest float32) if a compiler mishandles inf.

Constants are one-element tensors, as torch and ONNX's reference implementation write them.
The node keeps its name and attributes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from surgery.options import option
from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Builder, Match, Op, Rule, RulePass, Var

__all__ = ["CompleteNmsInputs"]


class CompleteNmsRule(Rule):
    """NonMaxSuppression with fewer than five inputs → all five."""

    name = "complete-nms-inputs"
    pattern = Op(
        "NonMaxSuppression",
        Var("boxes"),
        Var("scores"),
        Var("max_boxes", optional=True),
        Var("iou", optional=True),
        Var("score_threshold", optional=True),
    )

    def __init__(self, score_threshold: float) -> None:
        self.score_threshold = score_threshold

    def targets(self, node: ir.Node) -> bool:
        return super().targets(node) and (
            len(node.inputs) < 5 or any(v is None for v in node.inputs)
        )

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value]:
        max_boxes = m.get("max_boxes") or b.const(
            np.zeros(1, np.int64), "max_output_boxes_per_class"
        )
        iou = m.get("iou") or b.const(np.zeros(1, np.float32), "iou_threshold")
        score = m.get("score_threshold") or b.const(
            np.asarray([self.score_threshold], np.float32), "score_threshold"
        )
        attrs = {k: a.value for k, a in m.root.attributes.items() if not a.is_ref()}
        out = b.op(
            "NonMaxSuppression",
            m["boxes"],
            m["scores"],
            max_boxes,
            iou,
            score,
            name=m.root.name,
            **attrs,
        )
        return [out]


@register
class CompleteNmsInputs(RulePass):
    """Give NonMaxSuppression all five inputs (ATC crashes on three or four), keeping semantics."""

    name = "complete-nms-inputs"
    numerics = Numerics.EXACT

    @dataclasses.dataclass(frozen=True)
    class Options:
        score_threshold: float = option(
            float("-inf"),
            help="value for a missing score_threshold (-inf filters nothing, as an absent one)",
        )

    def rules(self) -> list[Rule]:
        return [CompleteNmsRule(self.options.score_threshold)]
