"""The building blocks of convert-opset: one node's conversion (``Step``) and the op tables.

``convert_opset`` (the driver and the down-adapters of ops that exist at both opsets) and
``opset_decompositions`` (ops that do not exist at the target) both register into the tables here:

- ``ADAPTERS``: op type -> a function that rewrites a node in place for an older version of the
  same op (``@adapter(...)``);
- ``DECOMPOSITIONS``: op type -> a function that replaces a node by older ops
  (``@decomposition(...)``).

An adapter or decomposition raises ``_Refuse`` when the node has no form at the target opset; the
driver turns it into a ``PassError`` naming the node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.graph import const_value
from surgery.rules import Builder, schema
from surgery.rules.engine import Rewrite, RuleContext, splice

__all__ = ["ADAPTERS", "DECOMPOSITIONS", "Adapter", "Step", "adapter", "decomposition"]


class _Refuse(Exception):
    """Raised by an adapter: the node cannot be expressed at the target opset."""


@dataclasses.dataclass
class Step:
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
        return Builder(self.ctx.names, self.node.name or self.node.op_type, self.target, dtype_of=self.ctx.dtype)

    def const_input(self, index: int, what: str) -> np.ndarray | None:
        """The constant array of input ``index`` (None if absent); refuse if it is not constant."""
        if index >= len(self.node.inputs) or self.node.inputs[index] is None:
            return None
        value = self.node.inputs[index]
        array = const_value(value)
        if array is None:
            raise _Refuse(f"its {what} input '{value.name}' is computed at run time; opset {self.target} needs a constant attribute")
        return array

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
        splice(self.ctx, Rewrite(self.node, [self.node], list(self.node.outputs), new_nodes, outputs))


Adapter = Callable[[Step], None]
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

