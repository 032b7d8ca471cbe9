"""Run onnxscript rewrite rules (``onnxscript.rewriter.pattern``) under our engine.

onnxscript's pattern language matches multi-node, commutative and optional-input patterns and is
what many users already write rules in. We use its matcher and replacement builder
(``RewriteRule.try_rewrite``) but splice the result ourselves, so its rules get what ours get:
application inside ``If``/``Loop`` bodies and functions, replacement nodes named after the node
they replace, counts, and near-miss reasons at debug level. We do not run onnxscript's own driver,
which prints instead of logging, tags nodes with metadata and renames values model-wide.

onnxscript is imported only when such a rule is given; it is not a runtime dependency.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.rules.engine import Replacement, RuleContext
from surgery.rules.pattern import Miss

__all__ = ["OnnxscriptRule", "adapt", "is_onnxscript_rule"]

logger = logging.getLogger(__name__)


def is_onnxscript_rule(obj: Any) -> bool:
    """Whether ``obj`` is an onnxscript ``RewriteRule`` or ``RewriteRuleSet`` (without importing it)."""
    module = type(obj).__module__ or ""
    return module.startswith("onnxscript.rewriter") and type(obj).__name__ in (
        "RewriteRule",
        "RewriteRuleSet",
    )


def adapt(obj: Any) -> list[OnnxscriptRule]:
    """Wrap an onnxscript rule or rule set as engine rules."""
    if type(obj).__name__ == "RewriteRuleSet":
        return [OnnxscriptRule(r) for r in obj.rules]
    return [OnnxscriptRule(obj)]


class OnnxscriptRule:
    """An onnxscript ``RewriteRule`` seen through the engine's rule interface."""

    def __init__(self, rule: Any) -> None:
        from onnxscript.rewriter import pattern as osp  # noqa: F401  (fail early if missing)

        self.rule = rule
        self.name = str(rule.name or getattr(rule, "__name__", "") or "onnxscript-rule")
        self._tracer = _LastReason()

    def targets(self, node: ir.Node) -> bool:
        return True  # onnxscript's matcher does its own op-type filtering

    def rewrite(self, ctx: RuleContext, node: ir.Node) -> Replacement | Miss:
        self._tracer.reset()
        delta = self.rule.try_rewrite(ctx.model, ctx.graph, node, tracer=self._tracer)
        if delta is None:
            if self._tracer.near:
                return Miss(self._tracer.reason or "rejected")
            return _NOT_TARGETED
        b = ctx.builder(node)
        new_nodes = list(delta.new_nodes)
        for n in new_nodes:
            n.name = b.names.derive(b.base, n.op_type)
            for i, out in enumerate(n.outputs):
                out.name = b.names.derive(n.name, "out" if len(n.outputs) == 1 else f"out{i}")
        consts: list[ir.Node] = []
        for (
            init
        ) in delta.new_initializers:  # functions cannot hold initializers: use Constant nodes
            array = (
                init.const_value.numpy()
                if init.const_value is not None
                else np.zeros(0, np.float32)
            )
            value = b.const(array, suffix="init")
            consts.extend(b.nodes[-1:])
            b.nodes.clear()
            ir.convenience.replace_all_uses_with(init, value)
        old_outputs = list(delta.match.outputs)
        root = node
        matched = list(delta.match.nodes)
        if root not in matched:
            root = matched[-1]
        outputs: list[ir.Value | None] = list(delta.new_outputs)
        return Replacement(root, matched, old_outputs, consts + new_nodes, outputs)


_NOT_TARGETED = Miss("")  # the pattern did not get past the first node: not a near miss


class _LastReason:
    """A minimal stand-in for onnxscript's MatchingTracer: keeps the last failure reason."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.reason = ""
        self.near = False

    def log(self, rule: Any, container: Any, node: ir.Node, match_result: Any, status: Any) -> None:
        del rule, container
        matched = len(getattr(match_result, "nodes", ()) or ())
        if int(status) == 0 and matched == 0:
            return
        if int(status) == 3:
            return
        self.near = True
        self.reason = str(getattr(match_result, "reason", "") or status.name.lower())
        logger.debug("near miss at %s '%s': %s", node.op_type, node.name, self.reason)
