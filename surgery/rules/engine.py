"""The rule engine: apply rewrite rules in every graph, count matches, explain near misses.

A :class:`Rule` is a pattern (:mod:`surgery.rules.pattern`) plus a replacement builder::

    class HardSwishRule(Rule):
        name = "hardswish"
        pattern = Op("HardSwish", Var("x"))

        def build(self, b: Builder, m: Match) -> list[ir.Value]:
            ...
            return [y]          # one value per output of the root node

:func:`apply_rules` visits the main graph, every ``If``/``Loop``/``Scan`` body and every
model-local function. For each node whose op type a rule targets it matches the pattern, runs the
rule's :meth:`Rule.check`, builds the replacement, splices it in (the replacement's outputs take
over the replaced outputs' names, types and graph-output slots) and removes the matched nodes.
A rule that got as far as its root op but was rejected is a *near miss*; its reason is logged at
debug level and counted. The engine is transactional: every match is found, checked and built
before the first one is spliced in, so a rule that refuses leaves the model as it was.
:class:`RulePass` makes a registered pass out of a list of rules.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import onnx
import onnx_ir as ir

from surgery.errors import PassError
from surgery.graph import GraphLike, NameAllocator, is_onnx_domain, walk
from surgery.pass_base import SurgeryPass, SurgeryResult, declare_stats
from surgery.rules import schema
from surgery.rules.builder import Builder
from surgery.rules.pattern import Match, Miss, Op
from surgery.rules.pattern import match as match_pattern

__all__ = [
    "Replacement",
    "Rule",
    "RuleContext",
    "RuleLike",
    "RulePass",
    "RuleStats",
    "apply_rules",
    "remove_dead_constants",
    "splice",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RuleContext:
    """Where a rule is being applied: the model, the graph (or function) and its opsets."""

    model: ir.Model
    graph: GraphLike
    opsets: Mapping[str, int]
    names: NameAllocator
    pass_name: str = ""
    inferred: InferredTypes | None = None

    @property
    def opset(self) -> int:
        return schema.opset_of(self.opsets, "") or 1

    def builder(self, node: ir.Node) -> Builder:
        return Builder(self.names, node.name or node.op_type, self.opset, dtype_of=self.dtype)

    def dtype(self, value: ir.Value) -> ir.DataType | None:
        """The element type of ``value``: declared, else from onnx shape inference (not in functions)."""
        if value.dtype is not None:
            return value.dtype
        found = self.inferred.get(value) if self.inferred is not None else None
        return found[0].dtype if found is not None else None

    def shape(self, value: ir.Value | None) -> ir.Shape | None:
        """The shape of ``value``: declared, else from onnx shape inference (not in functions)."""
        if value is None:
            return None  # an absent optional input
        if value.shape is not None:
            return value.shape
        found = self.inferred.get(value) if self.inferred is not None else None
        return found[1] if found is not None else None


class InferredTypes:
    """Types and shapes from onnx shape inference for the main graph and its nested subgraphs.

    Run once, on first need, on a proto without the large weights
    (:class:`~surgery.model_io.LightProto`, so it works past 2 GB); a failure leaves types unknown
    (rules then see a near miss, analyses an unproven value). Subgraph tables are matched to
    the ``ir`` graphs by walking both in step (sibling branches may reuse value names). Function
    bodies are not inferred by onnx (their types come from their schemas and call sites).
    """

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self._tables: dict[int, dict[str, tuple[ir.TypeProtocol, ir.Shape | None]]] | None = None

    def get(
        self, value: ir.Value, graph: GraphLike | None = None
    ) -> tuple[ir.TypeProtocol, ir.Shape | None] | None:
        """The inferred (type, shape) of ``value`` in ``graph`` (default: the graph it belongs to)."""
        graph = graph if graph is not None else value.graph
        if not value.name or graph is None or isinstance(graph, ir.Function):
            return None
        if self._tables is None:
            self._tables = self._infer()
        return self._tables.get(id(graph), {}).get(value.name)

    def _infer(self) -> dict[int, dict[str, tuple[ir.TypeProtocol, ir.Shape | None]]]:
        from surgery.shapes.infer import inferred_tables

        tables = inferred_tables(self.model)
        if tables is None:  # best effort: unknown types leave values unproven, never fail
            return {}
        return {key: _read_table(table) for key, table in tables.items()}


def _read_table(
    table: Mapping[str, onnx.TypeProto],
) -> dict[str, tuple[ir.TypeProtocol, ir.Shape | None]]:
    out: dict[str, tuple[ir.TypeProtocol, ir.Shape | None]] = {}
    for name, type_proto in table.items():
        try:
            tp = ir.serde.deserialize_type_proto_for_type(type_proto)
            shape = ir.serde.deserialize_type_proto_for_shape(type_proto)
        except Exception:  # a type onnx-ir cannot read stays unknown
            continue
        if tp is not None:
            out[name] = (tp, shape)
    return out


@dataclasses.dataclass
class Replacement:
    """A successful match turned into a replacement, ready to splice: the matched nodes and the
    root's outputs, and the new nodes and the values that take those outputs' place.

    Named ``Rewrite`` before; ``Rewrite`` stays importable as a deprecated alias (the
    ``rewrite`` pass, ``surgery.passes.rewrite.Rewrite``, is a different thing)."""

    root: ir.Node
    old_nodes: Sequence[ir.Node]
    old_outputs: Sequence[ir.Value]
    new_nodes: Sequence[ir.Node]
    new_outputs: Sequence[ir.Value | None]


Rewrite = Replacement
"""Deprecated alias of :class:`Replacement` (its old name)."""


class RuleLike(Protocol):
    """What the engine needs of a rule (our :class:`Rule` or an adapted onnxscript rule)."""

    @property
    def name(self) -> str: ...  # read-only: a class attribute (Rule.name) satisfies it

    def targets(self, node: ir.Node) -> bool: ...

    def rewrite(self, ctx: RuleContext, node: ir.Node) -> Replacement | Miss: ...


class Rule:
    """A pattern plus a replacement builder (subclass and set ``name``, ``pattern``, ``build``)."""

    name: ClassVar[str] = ""
    pattern: ClassVar[Op]

    def targets(self, node: ir.Node) -> bool:
        return self.pattern.accepts(node)

    def check(self, ctx: RuleContext, m: Match) -> str | None:
        """Extra conditions: return a reason to skip the match (or raise PassError to refuse)."""
        del ctx, m
        return None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value | None]:
        """Return one value per output of the root node (``None`` for an unused output)."""
        raise NotImplementedError

    def refuse(self, ctx: RuleContext, message: str) -> PassError:
        return PassError(message, pass_name=ctx.pass_name or self.name)

    def rewrite(self, ctx: RuleContext, node: ir.Node) -> Replacement | Miss:
        m = match_pattern(self.pattern, node, ctx.opsets, ctx.dtype, ctx.shape)
        if not isinstance(m, Match):
            return m
        reason = self.check(ctx, m)
        if reason is not None:
            return Miss(reason)
        b = ctx.builder(node)
        outputs = list(self.build(b, m))
        if len(outputs) != len(node.outputs):
            raise TypeError(
                f"rule {self.name}: build returned {len(outputs)} values for {len(node.outputs)} outputs"
            )
        return Replacement(node, m.nodes, list(node.outputs), b.nodes, outputs)

    def __repr__(self) -> str:
        return f"<rule {self.name or type(self).__name__}>"


@dataclasses.dataclass
class RuleStats:
    """What :func:`apply_rules` did: matches per rule and near misses with reasons."""

    applied: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    near_misses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    miss_reasons: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.applied.values())

    def as_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rewritten": self.total}
        if len(self.applied) > 1 or any(k for k in self.applied):
            out["by_rule"] = dict(self.applied)
        if self.near_misses:
            out["near_misses"] = sum(self.near_misses.values())
        return out


def splice(ctx: RuleContext, rw: Replacement) -> None:
    """Put ``rw.new_nodes`` in place of ``rw.old_nodes`` and reroute the root's outputs."""
    graph = ctx.graph
    _check_dropped_outputs(ctx, rw)
    fresh = {out for node in rw.new_nodes for out in node.outputs}
    extra: list[ir.Node] = []
    for old, new in zip(rw.old_outputs, rw.new_outputs, strict=True):
        if new is None:
            continue
        if new.type is None:
            new.type = old.type
        if new.shape is None and old.shape is not None:
            new.shape = old.shape
        if new in fresh:
            name = old.name
            old.name = None
            new.name = name
            ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        elif old.is_graph_output():
            # An existing value cannot take the output's name: pass it through an Identity.
            b = ctx.builder(rw.root)
            out = b.op("Identity", new)
            extra.extend(b.nodes)
            name = old.name
            old.name = None
            out.name = name
            out.type, out.shape = old.type, old.shape
            ir.convenience.replace_all_uses_with(old, out, replace_graph_outputs=True)
        else:
            ir.convenience.replace_all_uses_with(old, new)
    new_nodes = list(rw.new_nodes) + extra
    if new_nodes:
        graph.insert_before(rw.root, new_nodes)
    inputs = [v for node in rw.old_nodes for v in node.inputs if v is not None]
    graph.remove(list(rw.old_nodes), safe=True)
    remove_dead_constants(graph, inputs)


def remove_dead_constants(graph: GraphLike, values: Iterable[ir.Value]) -> int:
    """Remove the ``Constant`` nodes and initializers among ``values`` that nothing uses any more."""
    removed = 0
    seen: set[int] = set()
    for value in values:
        if id(value) in seen:
            continue
        seen.add(id(value))
        if value.uses() or value.is_graph_output() or value.is_graph_input():
            continue
        producer = value.producer()
        if producer is not None:
            if (
                producer.op_type == "Constant"
                and is_onnx_domain(producer.domain)
                and producer.graph is not None
                and not any(o.uses() or o.is_graph_output() for o in producer.outputs)
            ):
                producer.graph.remove(producer, safe=True)
                removed += 1
        elif (
            value.is_initializer()
            and isinstance(graph, ir.Graph)
            and graph.initializers.get(value.name or "") is value
        ):
            graph.initializers.pop(value.name)  # type: ignore[arg-type]
            removed += 1
    return removed


def apply_rules(
    model: ir.Model,
    rules: Iterable[RuleLike],
    *,
    pass_name: str = "",
    names: NameAllocator | None = None,
) -> RuleStats:
    """Apply ``rules`` once over every node of every graph; return counts and near misses.

    Transactional: every match is found, checked and built first, on the graph as it is, and only
    then spliced in; a rule that refuses (``PassError`` from its ``check`` or ``build``, or a
    dropped output that is still used) leaves the model exactly as it was. Rules are tried in
    order; the first one that rewrites a node wins. A match that takes in a node an earlier match
    already claimed is retried once those are spliced (a model snapshot, which shares the weights,
    is kept for that round, so a refusal there is undone too). Nodes a rewrite creates are not
    visited as roots (so a rule whose output it could match again cannot loop).
    """
    rules = list(rules)
    stats = RuleStats()
    names = names or NameAllocator(model)
    inferred = InferredTypes(model)
    roots: set[int] | None = None  # None: every node; later rounds: only the deferred ones
    snapshot: ir.Model | None = None
    try:
        while True:
            planned, deferred = _collect(model, rules, stats, names, inferred, pass_name, roots)
            if deferred and snapshot is None:
                snapshot = model.clone()  # structure only: tensors are shared
            for ctx, rule_name, rw in planned:
                splice(ctx, rw)
                stats.applied[rule_name] += 1
                logger.debug(
                    "%s: rewrote %s '%s' into %d nodes",
                    rule_name,
                    rw.root.op_type,
                    rw.root.name,
                    len(rw.new_nodes),
                )
            if not deferred or not planned:
                break
            roots = deferred
    except BaseException:
        if snapshot is not None:
            _restore(model, snapshot)
        raise
    return stats


def _collect(
    model: ir.Model,
    rules: Sequence[RuleLike],
    stats: RuleStats,
    names: NameAllocator,
    inferred: InferredTypes,
    pass_name: str,
    roots: set[int] | None,
) -> tuple[list[tuple[RuleContext, str, Replacement]], set[int]]:
    """Phase one: every rewrite over the graph as it is, checked, nothing spliced; and the roots
    whose match overlaps an earlier one (retried after the splice). On any error the built
    replacements are discarded, so the model is as it was."""
    planned: list[tuple[RuleContext, str, Replacement]] = []
    claimed: set[int] = set()
    deferred: set[int] = set()
    try:
        for scope in list(walk(model)):
            graph = scope.graph
            ctx = RuleContext(model, graph, scope.opsets, names, pass_name, inferred)
            for node in list(graph):
                if (
                    (roots is not None and id(node) not in roots)
                    or id(node) in claimed
                    or node.graph is None
                ):
                    continue
                for rule in rules:
                    if not rule.targets(node):
                        continue
                    result = rule.rewrite(ctx, node)
                    if isinstance(result, Miss):
                        if not result.reason:  # not even the root op fitted
                            continue
                        stats.near_misses[rule.name] += 1
                        stats.miss_reasons.setdefault(rule.name, []).append(
                            f"{node.name}: {result.reason}"
                        )
                        logger.debug(
                            "%s: near miss at %s '%s': %s",
                            rule.name,
                            node.op_type,
                            node.name,
                            result.reason,
                        )
                        continue
                    if any(id(n) in claimed for n in result.old_nodes):
                        _discard(
                            result
                        )  # sequentially this match would be made on the rewritten graph
                        deferred.add(id(node))
                        break
                    try:
                        _check_dropped_outputs(ctx, result)
                    except PassError:
                        _discard(result)
                        raise
                    planned.append((ctx, rule.name, result))
                    claimed.update(id(n) for n in result.old_nodes)
                    break
    except BaseException:
        for _, _, rw in planned:
            _discard(rw)
        raise
    return planned, deferred


def _check_dropped_outputs(ctx: RuleContext, rw: Replacement) -> None:
    """A rule may drop (``None``) only root outputs nothing outside the match reads (the engine
    checks it before any splice; :func:`splice` again for its other callers)."""
    inside = {id(n) for n in rw.old_nodes}
    for old, new in zip(rw.old_outputs, rw.new_outputs, strict=True):
        if new is not None:
            continue
        if old.is_graph_output() or any(id(user) not in inside for user, _ in old.uses()):
            raise PassError(
                f"output '{old.name}' of '{rw.root.name}' is still used but the rule dropped it",
                pass_name=ctx.pass_name,
            )


def _discard(rw: Replacement) -> None:
    """Unhook a built, never spliced replacement from the values it reads (onnx-ir records every
    node that takes a value as its input as one of the value's uses, attached or not)."""
    for node in rw.new_nodes:
        for index in range(len(node.inputs)):
            if node.inputs[index] is not None:
                node.replace_input_with(index, None)


def _restore(model: ir.Model, snapshot: ir.Model) -> None:
    """Put the snapshot's graph and functions back into ``model`` (the caller's object)."""
    model.graph = snapshot.graph
    model.functions.clear()
    model.functions.update(snapshot.functions)


class RulePass(SurgeryPass):
    """Base class of passes that apply a list of rules (subclasses set ``name`` and ``rules``)."""

    statistics = declare_stats(
        rewritten="matches rewritten, all rules together",
        by_rule="matches rewritten, by rule name",
        near_misses="nodes whose op a rule fits but that it left as they were (the notes say why)",
    )

    def rules(self) -> Sequence[RuleLike]:
        raise NotImplementedError

    def call(self, model: ir.Model) -> SurgeryResult:
        stats = apply_rules(model, self.rules(), pass_name=self.name)
        return SurgeryResult(
            model, stats.total > 0, stats=stats.as_stats(), notes=self.notes(stats)
        )

    def notes(self, stats: RuleStats) -> list[str]:
        notes = []
        for rule, reasons in stats.miss_reasons.items():
            shown = "; ".join(reasons[:3]) + (
                f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else ""
            )
            notes.append(f"{rule}: left {len(reasons)} node(s) as they were: {shown}")
        return notes
