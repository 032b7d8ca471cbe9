"""What every check needs about a model, computed once: nodes with readable locations, opsets,
constants, which tensors are shape arithmetic, and dtypes/shapes (from the model's annotations,
completed by ONNX shape inference on a light copy without the large weights)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir

from surgery.doctor.facts import AtcFacts, normalize_domain
from surgery.graph import const_value, walk
from surgery.shapes.dims import count_dynamic_dims, is_static_shape, plain_dims

__all__ = ["Context", "NodeEntry"]

logger = logging.getLogger(__name__)

GraphLike = ir.Graph | ir.Function

# Ops whose output is fixed once the input shapes are (they read shapes, not values).
_SHAPE_READERS = frozenset({"Shape", "Size"})
# Ops that never fold: random, or with subgraphs, or data-dependent shapes.
_NEVER_FOLD = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "If",
        "Loop",
        "Scan",
        "NonZero",
        "Unique",
        "NonMaxSuppression",
        "Dropout",
    }
)


@dataclasses.dataclass(frozen=True)
class NodeEntry:
    """A node and where it lives (``""`` for the main graph)."""

    node: ir.Node
    graph: GraphLike
    where: str
    in_function: bool

    @property
    def label(self) -> str:
        node = self.node
        if node.name:
            base = node.name
        else:
            out = next((o.name for o in node.outputs if o.name), "")
            base = f"<unnamed {node.op_type}{' -> ' + out if out else ''}>"
        return f"{self.where}{base}"


class Context:
    """A model under examination, with the facts and the SoC it is examined for."""

    def __init__(self, model: ir.Model, facts: AtcFacts, soc: str | None = None) -> None:
        self.model = model
        self.facts = facts
        self.soc = soc
        self.soc_family = facts.resolve_soc(soc)
        self.opsets: dict[str, int] = {
            normalize_domain(d): v for d, v in model.opset_imports.items()
        }
        self.function_ids = {(f.domain, f.name, f.overload) for f in model.functions.values()}
        self.entries: list[NodeEntry] = list(self._walk())
        self._by_op: dict[tuple[str, str], list[int]] = {}
        for i, e in enumerate(self.entries):
            self._by_op.setdefault((normalize_domain(e.node.domain), e.node.op_type), []).append(i)
        self._dtypes: dict[int, ir.DataType | None] = {}
        # Values inside functions: their names are local, so the main graph's inferred types do not apply.
        self._function_values = {
            id(v)
            for e in self.entries
            if e.in_function
            for v in (*e.node.inputs, *e.node.outputs)
            if v is not None
        }
        self._foldable: dict[int, bool] = {}
        self._inferred: dict[str, onnx.TypeProto] | None = None

    # -- nodes -----------------------------------------------------------------------------
    def _walk(self) -> Iterator[NodeEntry]:
        # the one walker, in document order: a graph, then the subgraphs it holds; functions last
        where: dict[int, str] = {}
        for scope in walk(self.model):
            if scope.owner is not None:
                label = scope.owner.name or scope.owner.op_type
                prefix = f"{where[id(scope.owner.graph)]}{label}.{scope.attribute}/"
            elif scope.function is not None:
                prefix = f"function {scope.function.domain}::{scope.function.name}/"
            else:
                prefix = ""
            where[id(scope.graph)] = prefix
            for node in scope.graph:
                yield NodeEntry(node, scope.graph, prefix, scope.function is not None)

    def nodes(self, *op_types: str, domain: str = "ai.onnx") -> list[NodeEntry]:
        """Entries of the given op types in ``domain`` (all nodes when no op type is given)."""
        if not op_types:
            return [e for e in self.entries if normalize_domain(e.node.domain) == domain]
        indices = sorted(i for op in set(op_types) for i in self._by_op.get((domain, op), ()))
        return [self.entries[i] for i in indices]

    def calls_function(self, node: ir.Node) -> bool:
        return (node.domain, node.op_type, node.overload) in self.function_ids

    def opset(self, domain: str | None) -> int | None:
        return self.opsets.get(normalize_domain(domain))

    # -- values ----------------------------------------------------------------------------
    @staticmethod
    def const(value: ir.Value | None) -> np.ndarray | None:
        return const_value(value)

    @staticmethod
    def input(node: ir.Node, index: int) -> ir.Value | None:
        """The node's ``index``-th input, None when absent or given as the empty name."""
        if index >= len(node.inputs):
            return None
        return node.inputs[index]

    def is_shape_arithmetic(self, value: ir.Value | None) -> bool:
        """True when ``value`` is a constant or is computed only from constants and Shape/Size.

        Such tensors become constants once the input shapes are fixed (GE and ``make-static`` fold
        them), so they never reach a device kernel.
        """
        if value is None:
            return True
        key = id(value)
        if key in self._foldable:
            return self._foldable[key]
        # Iterative post-order walk (graphs can be deep).
        stack: list[tuple[ir.Value, bool]] = [(value, False)]
        while stack:
            v, expanded = stack.pop()
            k = id(v)
            if k in self._foldable:
                continue
            if v.const_value is not None and not v.is_graph_input():
                self._foldable[k] = True
                continue
            producer = v.producer()
            if producer is None:
                self._foldable[k] = False  # a graph input, or an outer-scope/function input
                continue
            if (
                producer.op_type in _SHAPE_READERS
                and normalize_domain(producer.domain) == "ai.onnx"
            ):
                self._foldable[k] = True
                continue
            if producer.op_type == "Constant" and normalize_domain(producer.domain) == "ai.onnx":
                self._foldable[k] = True
                continue
            if producer.op_type in _NEVER_FOLD or normalize_domain(producer.domain) != "ai.onnx":
                self._foldable[k] = False
                continue
            inputs = [i for i in producer.inputs if i is not None]
            if not expanded:
                stack.append((v, True))
                stack.extend((i, False) for i in inputs if id(i) not in self._foldable)
            else:
                self._foldable[k] = all(self._foldable.get(id(i), False) for i in inputs)
        return self._foldable[id(value)]

    def folds(self, node: ir.Node) -> bool:
        """True when every output of ``node`` is shape arithmetic (it disappears once shapes are fixed)."""
        outputs = [o for o in node.outputs if o is not None]
        return bool(outputs) and all(self.is_shape_arithmetic(o) for o in outputs)

    def _inferred_types(self) -> dict[str, onnx.TypeProto]:
        if self._inferred is not None:
            return self._inferred
        self._inferred = {}
        from surgery.shapes.infer import inferred_tables

        tables = inferred_tables(self.model)
        if tables is None:  # inference is a convenience: annotations still work without it
            logger.info("shape inference failed, using the model's own annotations")
            return self._inferred
        for table in tables.values():  # the main graph first, then subgraphs in order
            for name, type_proto in table.items():
                if type_proto.HasField("tensor_type"):
                    self._inferred.setdefault(name, type_proto)
        return self._inferred

    def dtype(self, value: ir.Value | None) -> ir.DataType | None:
        if value is None:
            return None
        key = id(value)
        if key not in self._dtypes:
            self._dtypes[key] = self._dtype(value)
        return self._dtypes[key]

    def _dtype(self, value: ir.Value) -> ir.DataType | None:
        if value.dtype is not None:
            return value.dtype
        if value.const_value is not None:
            return value.const_value.dtype
        if id(value) in self._function_values:
            return None
        tp = self._inferred_types().get(value.name or "")
        if tp is not None and tp.tensor_type.elem_type:
            return ir.DataType(tp.tensor_type.elem_type)
        return None

    def shape(self, value: ir.Value | None) -> tuple[int | str | None, ...] | None:
        """The value's dims (ints, symbolic names, or None for unknown), None for unknown rank."""
        if value is None:
            return None
        if value.const_value is not None:
            return tuple(value.const_value.shape.numpy())
        dims = plain_dims(value.shape)
        if is_static_shape(dims) or id(value) in self._function_values:
            return dims
        tp = self._inferred_types().get(value.name or "")
        if tp is not None and tp.tensor_type.HasField("shape"):
            inferred = plain_dims(
                [
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in tp.tensor_type.shape.dim
                ]
            )
            assert inferred is not None
            # Prefer whichever knows more dims.
            if dims is None or (
                len(inferred) == len(dims)
                and len(inferred) - count_dynamic_dims(inferred)
                >= len(dims) - count_dynamic_dims(dims)
            ):
                return inferred
        return dims

    def rank(self, value: ir.Value | None) -> int | None:
        dims = self.shape(value)
        return None if dims is None else len(dims)
