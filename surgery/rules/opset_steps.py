"""The opset-conversion engine: one node's conversion (``OpsetStep``), the op tables and the driver.

The ``convert-opset`` pass (the down-adapters of ops that exist at both opsets, and the generic
check) and ``opset_decompositions`` (ops that do not exist at the target) register into the tables
here when ``surgery.passes`` is imported, as passes register into :mod:`surgery.registry`; the
driver :func:`downgrade_graph` is shared by ``convert-opset`` and ``inline-functions`` (passes
never import each other):

- ``ADAPTERS``: op type -> a function that rewrites a node in place for an older version of the
  same op (``@adapter(...)``);
- ``DECOMPOSITIONS``: op type -> a function that replaces a node by older ops
  (``@decomposition(...)``).

An adapter or decomposition raises ``Refuse`` when the node has no form at the target opset; the
driver turns it into a ``PassError`` naming the node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.errors import PassError
from surgery.graph import GraphLike, NameAllocator, const_value, is_onnx_domain
from surgery.rules import schema
from surgery.rules.builder import Builder
from surgery.rules.engine import Replacement, RuleContext, remove_dead_constants, splice

__all__ = [
    "ADAPTERS",
    "DECOMPOSITIONS",
    "HINTS",
    "Adapter",
    "OpsetStep",
    "Refuse",
    "adapter",
    "decomposition",
    "downgrade_graph",
    "generic_adapter",
]


class Refuse(Exception):
    """Raised by an adapter: the node cannot be expressed at the target opset."""


@dataclasses.dataclass
class OpsetStep:
    """One node to convert: where it lives and the versions involved."""

    ctx: RuleContext
    node: ir.Node
    current: int  # the model/function opset the node lives in now
    target: int
    orphans: list[ir.Value]

    @property
    def cur_since(self) -> int:
        return schema.since_version(self.node.op_type, self.current) or 0

    @property
    def tgt_since(self) -> int | None:
        return schema.since_version(self.node.op_type, self.target)

    def attr(self, name: str, default: Any = None) -> Any:
        return schema.attr_value(self.node, name, self.current, default)

    def builder(self) -> Builder:
        return Builder(
            self.ctx.names,
            self.node.name or self.node.op_type,
            self.target,
            dtype_of=self.ctx.dtype,
        )

    def const_input(self, index: int, what: str) -> np.ndarray | None:
        """The constant array of input ``index`` (None if absent); refuse if it is not constant."""
        if index >= len(self.node.inputs) or self.node.inputs[index] is None:
            return None
        value = self.node.inputs[index]
        assert value is not None  # checked above
        array = const_value(value)
        if array is None:
            raise Refuse(
                f"its {what} input '{value.name}' is computed at run time; opset {self.target} needs a constant attribute"
            )
        return array

    def input_to_ints_attr(self, index: int, name: str) -> None:
        """Move the constant integer list of input ``index`` (and every input after it) into the
        attribute ``name``, the form older opsets take (Squeeze axes, Split sizes); refuse if it
        is computed at run time. An absent input leaves no attribute (the op's default)."""
        array = self.const_input(index, name)
        self.drop_inputs_from(index)
        if array is not None:
            self.set_attr(name, [int(a) for a in array.reshape(-1)])

    def drop_inputs_from(self, index: int) -> None:
        node = self.node
        for i in range(index, len(node.inputs)):
            value = node.inputs[i]
            if value is not None:
                self.orphans.append(value)
        if len(node.inputs) > index:
            node.resize_inputs(index)

    def set_attr(self, name: str, value: Any) -> None:
        self.node.attributes[name] = ir.convenience.convert_attribute(name, value)

    def drop_attr(self, name: str) -> None:
        self.node.attributes.pop(name, None)

    def replace(self, new_nodes: Sequence[ir.Node], outputs: Sequence[ir.Value | None]) -> None:
        for value in self.node.inputs:
            if value is not None:
                self.orphans.append(value)
        splice(
            self.ctx,
            Replacement(self.node, [self.node], list(self.node.outputs), new_nodes, outputs),
        )


Step = OpsetStep
"""Deprecated alias of :class:`OpsetStep` (its old name; ``surgery.pipeline.Step`` is a configured
pass, a different thing). Kept importable; new code uses ``OpsetStep``."""

Adapter = Callable[[OpsetStep], None]
ADAPTERS: dict[str, Adapter] = {}
DECOMPOSITIONS: dict[str, Adapter] = {}


def adapter(*ops: str) -> Callable[[Adapter], Adapter]:
    def wrap(fn: Adapter) -> Adapter:
        for op in ops:
            ADAPTERS[op] = fn
        return fn

    return wrap


def decomposition(*ops: str) -> Callable[[Adapter], Adapter]:
    def wrap(fn: Adapter) -> Adapter:
        for op in ops:
            DECOMPOSITIONS[op] = fn
        return fn

    return wrap


_GENERIC: list[Adapter] = []  # the check for ops without an adapter of their own (convert-opset's)


def generic_adapter(fn: Adapter) -> Adapter:
    """Register the check that runs for every op that has no adapter of its own."""
    _GENERIC[:] = [fn]
    return fn


HINTS = {
    "GridSample": " (run decompose-gridsample first)",
    "Einsum": " (run einsum-to-matmul first)",
}


def downgrade_graph(
    model: ir.Model,
    graph: GraphLike,
    opsets: Any,
    current: int,
    target: int,
    names: NameAllocator,
    pass_name: str,
    stats: dict[str, int],
    inferred: Any = None,
) -> None:
    """Convert every ``ai.onnx`` node of ``graph`` (not its subgraphs) from ``current`` to ``target``."""
    ctx = RuleContext(model, graph, opsets, names, pass_name, inferred)
    orphans: list[ir.Value] = []
    for node in list(graph):
        if not is_onnx_domain(node.domain) or node.graph is None:
            continue
        step = OpsetStep(ctx, node, current, target, orphans)
        where = (
            f"{node.op_type} '{node.name}'"
            if node.name
            else f"{node.op_type} producing '{node.outputs[0].name}'"
        )
        if schema.get_schema(node.op_type, current) is None:
            raise PassError(f"{where}: not an ai.onnx op at opset {current}", pass_name=pass_name)
        try:
            decompose = DECOMPOSITIONS.get(node.op_type)
            if step.tgt_since is None or (
                node.op_type == "GroupNormalization" and step.cur_since >= 21 > target
            ):
                if decompose is None:
                    hint = HINTS.get(node.op_type, "")
                    raise Refuse(
                        f"it does not exist at opset {target} and there is no decomposition for it{hint}"
                    )
                decompose(step)
                stats["decomposed"] = stats.get("decomposed", 0) + 1
                continue
            if step.tgt_since == step.cur_since:
                continue
            if not _GENERIC:
                raise RuntimeError("no generic opset check registered: import surgery.passes first")
            fix = ADAPTERS.get(node.op_type, _GENERIC[0])
            before = _fingerprint(node)
            fix(step)
            if node.graph is None or _fingerprint(node) != before:
                stats["adapted"] = stats.get("adapted", 0) + 1
        except Refuse as exc:
            raise PassError(
                f"{where} (opset {current}) cannot be converted to opset {target}: {exc}",
                pass_name=pass_name,
            ) from None
    _remove_orphans(graph, orphans)


def _fingerprint(node: ir.Node) -> tuple:
    return (
        tuple(id(v) for v in node.inputs),
        tuple(sorted((k, repr(a.value)) for k, a in node.attributes.items())),
    )


def _remove_orphans(graph: GraphLike, orphans: list[ir.Value]) -> None:
    """Drop Constant nodes and initializers that only fed inputs an adapter turned into attributes."""
    remove_dead_constants(graph, orphans)
