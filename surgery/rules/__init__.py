"""The rule engine: declarative patterns, replacement builders, application in every graph.

- :mod:`surgery.rules.pattern`: :class:`Op`, :class:`Var`, :class:`Const` patterns and matching;
- :mod:`surgery.rules.builder`: :class:`Builder`, which names new nodes after the replaced one and
  emits opset-correct forms;
- :mod:`surgery.rules.engine`: :class:`Rule`, :func:`apply_rules` and :class:`RulePass`;
- :mod:`surgery.rules.onnxscript_rules`: onnxscript ``RewriteRule`` objects run by our engine;
- :mod:`surgery.rules.schema`: ONNX schema look-ups (attribute defaults, type bindings).
"""

from __future__ import annotations

from surgery.rules.builder import Builder
from surgery.rules.engine import Replacement, Rule, RuleContext, RulePass, RuleStats, apply_rules
from surgery.rules.engine import Rewrite as Rewrite  # deprecated alias of Replacement
from surgery.rules.pattern import ANY, Const, Match, Miss, Op, Var

__all__ = [
    "ANY",
    "Builder",
    "Const",
    "Match",
    "Miss",
    "Op",
    "Replacement",
    "Rule",
    "RuleContext",
    "RulePass",
    "RuleStats",
    "Var",
    "apply_rules",
]
