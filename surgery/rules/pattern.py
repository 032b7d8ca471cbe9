"""Declarative patterns: a tree of ops rooted at the node being rewritten.

A pattern names the op types, attribute values, constant inputs, single-consumer and shape
conditions a rewrite needs::

    Op("Mul", Var("x"), Op("Sigmoid", Var("x")))             # x * sigmoid(x)
    Op("Gather", Var("data"), Const("indices", where=lambda a: (a < 0).any()))
    Op("Gelu", Var("x", rank=(1, None)), attrs={"approximate": "none"})

Matching starts at a node (the *root*) and walks producer edges. Every non-root op of the
pattern must be *exclusive*: its outputs feed only the matched nodes and are not graph outputs,
so removing the matched nodes is safe. A failed match returns a :class:`Miss` whose ``reason``
says what did not fit (logged at debug level by the engine for near misses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import onnx_ir as ir

from surgery.graph import const_value
from surgery.rules import schema
from surgery.shapes.dims import is_static_shape

__all__ = ["ANY", "Const", "Match", "Miss", "Op", "PatternLike", "Var"]


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()
"""An attribute condition that accepts any value (including absent)."""


@dataclasses.dataclass(frozen=True)
class Var:
    """Any value, bound under ``name``; optional dtype, rank and static-shape conditions.

    Args:
        name: the binding name (``m[name]`` is the ``ir.Value``).
        optional: the input may be absent (``None``).
        dtypes: allowed element types (unknown types pass unless ``known_type`` is set).
        rank: an exact rank, or ``(min, max)`` with ``None`` for open ends.
        static: every dim must be a known integer.
        known_type: the element type must be known.
        where: a predicate on the ``ir.Value`` (return False to reject).
    """

    name: str
    optional: bool = False
    dtypes: tuple[ir.DataType, ...] | None = None
    rank: int | tuple[int | None, int | None] | None = None
    static: bool = False
    known_type: bool = False
    where: Callable[[ir.Value], bool] | None = None

    def _check(self, value: ir.Value | None, m: Match) -> str | None:
        if value is None:
            return None if self.optional else f"'{self.name}' is missing"
        label = f"'{self.name}' ({value.name})"
        dtype = m.dtype_of(value)
        if self.known_type and dtype is None:
            return f"{label} has no known element type"
        if self.dtypes is not None and dtype is not None and dtype not in self.dtypes:
            return f"{label} has element type {dtype.name}, wanted one of {[d.name for d in self.dtypes]}"
        if self.rank is not None or self.static:
            shape = m.shape_of(value)
            if shape is None:
                return f"{label} has no known shape"
            rank = len(shape)
            if isinstance(self.rank, int) and rank != self.rank:
                return f"{label} has rank {rank}, wanted {self.rank}"
            if isinstance(self.rank, tuple):
                lo, hi = self.rank
                if (lo is not None and rank < lo) or (hi is not None and rank > hi):
                    return f"{label} has rank {rank}, wanted {lo}..{hi}"
            if self.static and not is_static_shape(shape):
                return f"{label} has a dynamic shape {shape}"
        return None

    def match(self, value: ir.Value | None, m: Match) -> str | None:
        reason = self._check(value, m)
        if reason is not None:
            return reason
        if value is not None and self.where is not None and not self.where(value):
            return f"'{self.name}' ({value.name}) fails its condition"
        return m._bind(self.name, value)


@dataclasses.dataclass(frozen=True)
class Const(Var):
    """A constant value (initializer or ``Constant`` output); ``m.const(name)`` is its array.

    ``where`` here is a predicate on the numpy array.
    """

    where: Callable[[np.ndarray], bool] | None = None  # type: ignore[assignment]

    def match(self, value: ir.Value | None, m: Match) -> str | None:
        if value is None:
            if self.optional:
                return m._bind(self.name, None)
            return f"'{self.name}' is missing"
        array = const_value(value)
        if array is None:
            return f"'{self.name}' ({value.name}) is not a constant"
        reason = self._check(value, m)
        if reason is not None:
            return reason
        if self.where is not None and not self.where(array):
            return f"constant '{self.name}' ({value.name}) fails its condition"
        m.consts[self.name] = array
        return m._bind(self.name, value)


PatternLike = Union["Op", Var, None]


class Op:
    """A node of the pattern: op type(s), inputs (patterns), attribute conditions.

    Args:
        op_type: one op type or a tuple of alternatives.
        *inputs: one pattern per node input (``None`` = input must be absent); a node with more
            non-empty inputs than patterns does not match.
        domain: the op's domain (``""`` is ``ai.onnx``).
        attrs: attribute conditions: a value (compared after filling the schema default), a
            predicate ``f(value) -> bool`` or :data:`ANY`.
        name: bind the matched node under this name (``m.nodes_by_name``).
        unused_outputs: output indices that must have no consumers and not be graph outputs.
        exclusive: (non-root ops) outputs used only inside the match; default True.
    """

    def __init__(
        self,
        op_type: str | tuple[str, ...],
        *inputs: PatternLike,
        domain: str = "",
        attrs: Mapping[str, Any] | None = None,
        name: str | None = None,
        unused_outputs: Sequence[int] = (),
        exclusive: bool = True,
    ) -> None:
        self.op_types = (op_type,) if isinstance(op_type, str) else tuple(op_type)
        self.inputs = inputs
        self.domain = "" if domain == "ai.onnx" else domain
        self.attrs = dict(attrs or {})
        self.name = name
        self.unused_outputs = tuple(unused_outputs)
        self.exclusive = exclusive

    def __repr__(self) -> str:
        return f"Op({'|'.join(self.op_types)})"

    def accepts(self, node: ir.Node) -> bool:
        """The cheap pre-filter: op type and domain only."""
        domain = "" if node.domain == "ai.onnx" else node.domain
        return node.op_type in self.op_types and domain == self.domain

    def match_node(self, node: ir.Node, m: Match) -> str | None:
        label = f"{node.op_type} '{node.name}'"
        if not self.accepts(node):
            return f"{label} is not {'|'.join(self.op_types)}"
        if node in m.nodes:
            if m.nodes_by_name.get(self.name or "") is node:
                return None
            return f"{label} is matched twice"
        for key, want in self.attrs.items():
            if want is ANY:
                continue
            got = schema.attr_value(node, key, m.opset(node.domain))
            if callable(want):
                if not want(got):
                    return f"{label}: attribute {key}={got!r} is not accepted"
            elif _norm(got) != _norm(want):
                return f"{label}: attribute {key}={got!r}, wanted {want!r}"
        for index in self.unused_outputs:
            if index < len(node.outputs):
                out = node.outputs[index]
                if out.uses() or out.is_graph_output():
                    user = next(iter(out.uses()), None)
                    who = (
                        f"node '{user.node.name}' ({user.node.op_type})"
                        if user
                        else "a graph output"
                    )
                    return f"{label}: output {index} ({out.name}) is consumed by {who}"
        present = [i for i, v in enumerate(node.inputs) if v is not None]
        if present and present[-1] >= len(self.inputs):
            return f"{label} has {present[-1] + 1} inputs, the pattern expects at most {len(self.inputs)}"
        m.nodes.append(node)
        if self.name:
            m.nodes_by_name[self.name] = node
        for index, sub in enumerate(self.inputs):
            value = node.inputs[index] if index < len(node.inputs) else None
            if sub is None:
                if value is not None:
                    return f"{label}: input {index} ({value.name}) should be absent"
                continue
            if isinstance(sub, Op):
                if value is None:
                    return f"{label}: input {index} is missing"
                producer = value.producer()
                if producer is None:
                    return f"{label}: input {index} ({value.name}) has no producer ({sub!r} wanted)"
                reason = sub.match_node(producer, m)
                if reason is not None:
                    return reason
                if sub.exclusive:
                    m.interior_values.add(value)
            else:
                reason = sub.match(value, m)
                if reason is not None:
                    return f"{label}: {reason}"
        return None


def _norm(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return tuple(value)
    return value


class Match:
    """The result of matching a pattern at a root node.

    ``m["x"]`` is the value bound to ``x``; ``m.const("c")`` the array of a :class:`Const`;
    ``m.root`` the root node; ``m.nodes`` all matched nodes (root first);
    ``m.attr(name)`` an attribute of the root (schema default filled in).
    """

    def __init__(
        self,
        root: ir.Node,
        opsets: Mapping[str, int],
        dtype_of: Callable[[ir.Value], ir.DataType | None] | None = None,
        shape_of: Callable[[ir.Value], ir.Shape | None] | None = None,
    ) -> None:
        self.root = root
        self.opsets = opsets
        self.dtype_of = dtype_of or (lambda v: v.dtype)
        self.shape_of = shape_of or (lambda v: v.shape)
        self.extra: dict[str, Any] = {}
        """Free space for a rule's check() to hand values to its build()."""
        self.values: dict[str, ir.Value | None] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.nodes: list[ir.Node] = []
        self.nodes_by_name: dict[str, ir.Node] = {}
        self.interior_values: set[ir.Value] = set()

    def opset(self, domain: str = "") -> int | None:
        return schema.opset_of(self.opsets, domain)

    def _bind(self, name: str, value: ir.Value | None) -> str | None:
        if name in self.values and self.values[name] is not value:
            return f"'{name}' is bound to two different values"
        self.values[name] = value
        return None

    def __getitem__(self, name: str) -> ir.Value:
        value = self.values[name]
        if value is None:
            raise KeyError(f"'{name}' is absent in this match")
        return value

    def get(self, name: str) -> ir.Value | None:
        return self.values.get(name)

    def const(self, name: str) -> np.ndarray:
        return self.consts[name]

    def attr(self, name: str, default: Any = None, node: ir.Node | None = None) -> Any:
        node = node or self.root
        return schema.attr_value(node, name, self.opset(node.domain), default)

    def check_exclusive(self) -> str | None:
        """Every interior value is consumed only by matched nodes and is no graph output."""
        matched = set(self.nodes)
        for value in self.interior_values:
            if value.is_graph_output():
                return f"'{value.name}' is a graph output"
            for use in value.uses():
                if use.node not in matched:
                    return f"'{value.name}' is also used by '{use.node.name}' ({use.node.op_type})"
        return None


class Miss:
    """A failed match with the reason (falsy, so ``if match:`` works for both)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Miss({self.reason!r})"


def match(
    pattern: Op,
    node: ir.Node,
    opsets: Mapping[str, int],
    dtype_of: Callable[[ir.Value], ir.DataType | None] | None = None,
    shape_of: Callable[[ir.Value], ir.Shape | None] | None = None,
) -> Match | Miss:
    """Match ``pattern`` rooted at ``node`` (types and shapes read through the given resolvers)."""
    m = Match(node, opsets, dtype_of, shape_of)
    reason = pattern.match_node(node, m)
    if reason is None:
        reason = m.check_exclusive()
    return Miss(reason) if reason is not None else m
