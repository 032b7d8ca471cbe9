"""narrow-int64: int64 tensors whose values provably fit int32 become int32.

On Ascend, int64 index and shape arithmetic often lands on AICPU; int32 stays on AI Core. This
pass narrows, in the main graph, groups of int64 tensors that must share one type (the values a
node binds to the same type variable, e.g. both inputs and the output of an ``Add``) when:

- every op in the group accepts int32 for that type variable (per its ONNX schema at the model's
  opset), and none is an op the pass cannot see into (custom domains, nodes with subgraphs);
- every value's range is *proven* to lie in int32: constants by their values, ``Shape``/``Size``
  of statically shaped tensors by the dims, and data movement (Gather, Slice, Concat, Reshape,
  Squeeze, Unsqueeze, Transpose, Expand, Where …) and interval arithmetic (Add, Sub, Mul, Div,
  Neg, Abs, Min, Max, Clip, Range …) from their inputs; anything else is unproven and stays int64;
- the group has at least one use where int32 matters (a use at a fixed-int64 slot alone gains
  nothing).

Where the schema fixes int64 (``Reshape``'s and ``Expand``'s shape, ``Tile``'s repeats,
``ConstantOfShape``'s input; ``Shape``'s, ``Size``'s and ``ArgMax``'s outputs …) a ``Cast`` is
inserted: back to int64 before a fixed-int64 input, and to int32 after a fixed-int64 output whose
readers were narrowed. Inputs that accept both (``Slice``'s starts/ends, ``Gather``'s indices) take
int32 directly. Graph inputs and outputs keep int64. Casts are never removed. Results never
change: every narrowed value is proven to fit.

Not covered: ``If``/``Loop``/``Scan`` bodies and model-local functions (their values stay int64;
run inline-functions first).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.graph import NameAllocator, const_value
from surgery.pass_base import Numerics, SurgeryPass, SurgeryResult
from surgery.registry import register
from surgery.rules import schema

__all__ = ["NarrowInt64"]

logger = logging.getLogger(__name__)

I64 = ir.DataType.INT64
I32 = ir.DataType.INT32
LO, HI = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)

Interval = tuple[int, int] | None

#: ops whose listed inputs carry values through unchanged (the output's range is their union)
_MOVE = {
    "Identity": (0,), "Reshape": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Flatten": (0,), "Transpose": (0,),
    "Expand": (0,), "Tile": (0,), "Gather": (0,), "GatherElements": (0,), "GatherND": (0,), "Slice": (0,),
    "Split": (0,), "ReduceMax": (0,), "ReduceMin": (0,), "Where": (1, 2), "Concat": None, "Max": None, "Min": None,
    "DepthToSpace": (0,), "SpaceToDepth": (0,), "Compress": (0,), "Pad": (0, 2), "ScatterElements": (0, 2),
    "ScatterND": (0, 2), "TopK": (0,), "Trilu": (0,),
}
_INT_RANGES = {
    ir.DataType.INT8: (-(2**7), 2**7 - 1), ir.DataType.UINT8: (0, 2**8 - 1), ir.DataType.INT16: (-(2**15), 2**15 - 1),
    ir.DataType.UINT16: (0, 2**16 - 1), ir.DataType.INT32: (LO, HI), ir.DataType.BOOL: (0, 1),
}


def _union(parts: Iterable[Interval]) -> Interval:
    parts = list(parts)
    if not parts or any(p is None for p in parts):
        return None
    return (min(p[0] for p in parts), max(p[1] for p in parts))  # type: ignore[index]


def _mul(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    products = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
    return (min(products), max(products))


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, x: Any) -> Any:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] is not root:
            root = self.parent[root]
        while self.parent[x] is not root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra is not rb:
            self.parent[ra] = rb


class _Split:
    """A virtual int32 copy of a fixed-int64 output (e.g. Shape's), made real if its group narrows."""

    def __init__(self, value: ir.Value) -> None:
        self.value = value
        self.uses: list[tuple[ir.Node, int]] = []


@register
class NarrowInt64(SurgeryPass):
    """Narrow int64 index/shape tensors that provably fit to int32, with Casts where ONNX needs int64."""

    name = "narrow-int64"
    numerics = Numerics.EXACT

    def call(self, model: ir.Model) -> SurgeryResult:
        from surgery.rules.engine import _Inferred

        graph = model.graph
        opset = schema.opset_of(model.opset_imports, "") or 1
        inferred = _Inferred(model)
        dtype: dict[ir.Value, ir.DataType | None] = {}
        shapes: dict[ir.Value, ir.Shape | None] = {}
        for v in self._values(graph):
            dtype[v], shapes[v] = v.dtype, v.shape
            if v.dtype is None or v.shape is None:
                found = inferred.get(v)
                if found is not None:
                    dtype[v] = dtype[v] or found[0].dtype
                    shapes[v] = shapes[v] if shapes[v] is not None else found[1]
        ranges = self._ranges(graph, dtype, shapes)
        uf = _UnionFind()
        pinned: set[Any] = set()
        fixed_uses: dict[ir.Value, list[tuple[ir.Node, int]]] = {}
        generic_use: set[Any] = set()
        splits: dict[ir.Value, _Split] = {}

        def is_i64(v: ir.Value | None) -> bool:
            return v is not None and dtype.get(v) == I64

        for v in list(graph.inputs) + list(graph.outputs):
            if is_i64(v):
                pinned.add(v)
        for node in graph:
            standard = node.domain in ("", "ai.onnx")
            opaque = not standard or any(
                a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()
            )
            binding = schema.type_bindings(node, opset) if not opaque else None
            if binding is None:
                for v in list(node.inputs) + list(node.outputs):
                    if is_i64(v):
                        pinned.add(v)
                continue
            groups: dict[str, list[Any]] = {}
            for kind, values, slots in (("in", node.inputs, binding.inputs), ("out", node.outputs, binding.outputs)):
                for i, v in enumerate(values):
                    if v is None:
                        continue
                    if i >= len(slots):
                        if is_i64(v):
                            pinned.add(v)
                        continue
                    type_str, allowed = slots[i]
                    # a slot that cannot hold int32 (tensor(int64), or a type variable like Shape's T1
                    # that only allows int64) keeps int64: Casts bridge to the narrowed values
                    generic = not type_str.startswith("tensor(") and I32 in allowed
                    if not generic:
                        if is_i64(v):
                            if kind == "in":
                                fixed_uses.setdefault(v, []).append((node, i))
                            else:
                                splits[v] = _Split(v)  # Shape/Size/ArgMax … output: int64 by schema
                        continue
                    if dtype.get(v) is None:
                        groups.setdefault(type_str, []).append(("unknown", id(v)))
                        continue
                    if dtype[v] != I64:
                        groups.setdefault(type_str, []).append(("other", id(v)))
                        continue
                    key: Any = v
                    if kind == "in" and v in splits and node.op_type != "Cast":
                        key = splits[v]
                        splits[v].uses.append((node, i))
                    if kind == "in":
                        generic_use.add(key)
                    if kind == "out" and _sets_type(node):
                        pinned.add(key)
                    groups.setdefault(type_str, []).append(key)
            for members in groups.values():
                keys = [m for m in members if not isinstance(m, tuple)]
                if any(isinstance(m, tuple) for m in members):
                    pinned.update(keys)  # bound together with a value of unknown or other type
                for other in keys[1:]:
                    uf.union(keys[0], other)
        # values used by nodes inside subgraphs (outer-scope reads) stay as they are
        for v in dtype:
            if is_i64(v) and any(u.node.graph is not graph for u in v.uses()):
                pinned.add(v)

        components: dict[Any, list[Any]] = {}
        for v in [v for v in dtype if is_i64(v)] + [s for s in splits.values() if s.uses]:
            if isinstance(v, ir.Value) and v in splits:
                continue  # the fixed output itself stays int64; its _Split stands for the readers
            components.setdefault(uf.find(v), []).append(v)
        narrowed: list[Any] = []
        for members in components.values():
            if any(m in pinned or uf.find(m) in pinned for m in members):
                continue
            if not any(m in generic_use for m in members):
                continue  # only fixed-int64 readers: nothing to gain
            if not all(_fits(ranges.get(m.value if isinstance(m, _Split) else m)) for m in members):
                continue
            narrowed.extend(members)
        if not narrowed:
            return SurgeryResult(model, False)
        stats = self._apply(model, narrowed, fixed_uses)
        return SurgeryResult(model, True, stats=stats)

    # ---- analysis ---------------------------------------------------------------------------
    @staticmethod
    def _values(graph: ir.Graph) -> list[ir.Value]:
        seen: dict[ir.Value, None] = {}
        for v in graph.inputs:
            seen[v] = None
        for v in graph.initializers.values():
            seen[v] = None
        for node in graph:
            for v in node.outputs:
                seen[v] = None
        return list(seen)

    def _ranges(
        self, graph: ir.Graph, dtype: dict[ir.Value, ir.DataType | None], shapes: dict[ir.Value, ir.Shape | None]
    ) -> dict[ir.Value, Interval]:
        ranges: dict[ir.Value, Interval] = {}
        for v in graph.initializers.values():
            if v.const_value is not None and not v.is_graph_input():
                ranges[v] = _array_range(v.const_value.numpy())
        for v in graph.inputs:
            if v not in ranges and v.dtype in _INT_RANGES:
                ranges[v] = _INT_RANGES[v.dtype]

        def r(v: ir.Value | None) -> Interval:
            if v is None:
                return None
            if v in ranges:
                return ranges[v]
            if dtype.get(v) in _INT_RANGES:
                return _INT_RANGES[dtype[v]]  # type: ignore[index]
            return None

        for node in graph:
            op = node.op_type if node.domain in ("", "ai.onnx") else ""
            outs = node.outputs
            result: Interval = None
            ins = node.inputs
            if op == "Constant":
                array = const_value(outs[0])
                result = _array_range(array) if array is not None else None
            elif op == "ConstantOfShape":
                attr = node.attributes.get("value")
                result = _array_range(attr.as_tensor().numpy()) if attr is not None else (0, 0)
            elif op in ("Shape", "Size"):
                shape = shapes.get(ins[0]) if ins and ins[0] is not None else None
                if shape is not None and all(isinstance(d, int) for d in shape):
                    dims = [int(d) for d in shape]
                    result = (0, max(dims, default=0)) if op == "Shape" else (0, int(np.prod(dims, dtype=object)))
            elif op in _MOVE:
                idx = _MOVE[op]
                picked = [ins[i] for i in (idx if idx is not None else range(len(ins))) if i < len(ins) and ins[i] is not None]
                result = _union(r(v) for v in picked)
            elif op in ("Add", "Sub", "Mul") and len(ins) == 2:
                a, b = r(ins[0]), r(ins[1])
                if a is not None and b is not None:
                    result = {"Add": (a[0] + b[0], a[1] + b[1]), "Sub": (a[0] - b[1], a[1] - b[0]), "Mul": _mul(a, b)}[op]
            elif op == "Div" and len(ins) == 2:
                a = r(ins[0])
                if a is not None:
                    m = max(abs(a[0]), abs(a[1]))
                    result = (-m, m)
            elif op == "Mod" and len(ins) == 2:
                b = r(ins[1])
                if b is not None:
                    m = max(abs(b[0]), abs(b[1]))
                    result = (-m, m)
            elif op == "Neg":
                a = r(ins[0])
                result = (-a[1], -a[0]) if a is not None else None
            elif op == "Abs":
                a = r(ins[0])
                result = (0, max(abs(a[0]), abs(a[1]))) if a is not None else None
            elif op == "Clip":
                a = r(ins[0])
                lo = r(ins[1]) if len(ins) > 1 and ins[1] is not None else None
                hi = r(ins[2]) if len(ins) > 2 and ins[2] is not None else None
                if a is not None:
                    result = (max(a[0], lo[0]) if lo else a[0], min(a[1], hi[1]) if hi else a[1])
                    result = (min(result[0], result[1]), max(result[0], result[1]))
                elif lo is not None and hi is not None:
                    result = (lo[0], hi[1])
            elif op == "Range" and len(ins) == 3:
                s, lim = r(ins[0]), r(ins[1])
                if s is not None and lim is not None:
                    result = (min(s[0], lim[0]), max(s[1], lim[1]))
            elif op == "Cast":
                src = dtype.get(ins[0]) if ins and ins[0] is not None else None
                if src == I64:
                    result = r(ins[0])
                elif src in _INT_RANGES:
                    result = _INT_RANGES[src]
            if op == "TopK":
                outs = outs[:1]  # the indices output has its own (fixed int64) type
            for out in outs:
                if result is not None:
                    ranges[out] = result
        return ranges

    # ---- rewriting --------------------------------------------------------------------------
    def _apply(self, model: ir.Model, members: list[Any], fixed_uses: dict[ir.Value, list[tuple[ir.Node, int]]]) -> dict[str, int]:
        graph = model.graph
        names = NameAllocator(model)
        stats = {"values": 0, "constants": 0, "casts_to_int64": 0, "casts_to_int32": 0}
        values = [m for m in members if isinstance(m, ir.Value)]
        for v in values:
            producer = v.producer()
            if v.is_initializer() and v.const_value is not None:
                v.const_value = ir.Tensor(v.const_value.numpy().astype(np.int32), name=v.name)
                stats["constants"] += 1
            elif producer is not None and producer.op_type == "Constant":
                key, attr = next(iter(producer.attributes.items()))
                array = const_value(v)
                assert array is not None
                producer.attributes.pop(key)
                producer.attributes["value"] = ir.AttrTensor("value", ir.tensor(array.astype(np.int32), name=v.name))
                v.const_value = None
                stats["constants"] += 1
            elif producer is not None and producer.op_type == "Cast":
                producer.attributes["to"] = ir.AttrInt64("to", int(I32))
            elif producer is not None and producer.op_type == "ConstantOfShape":
                attr = producer.attributes.get("value")
                array = attr.as_tensor().numpy() if attr is not None else np.zeros(1, np.float32)
                producer.attributes["value"] = ir.AttrTensor("value", ir.tensor(array.astype(np.int32)))
            v.type = ir.TensorType(I32)
            stats["values"] += 1
            uses = fixed_uses.get(v)
            if uses:
                base = v.name or "value"
                cast = ir.Node("", "Cast", [v], [ir.AttrInt64("to", int(I64))], name=names.derive(base, "to_int64"))
                out = cast.outputs[0]
                out.name = names.derive(base, "int64")
                out.type, out.shape = ir.TensorType(I64), (ir.Shape(v.shape) if v.shape is not None else None)
                _insert_after(graph, v, cast)
                for node, index in uses:
                    node.replace_input_with(index, out)
                stats["casts_to_int64"] += 1
        for split in [m for m in members if isinstance(m, _Split)]:
            v = split.value
            if v.type is None:
                v.type = ir.TensorType(I64)
            base = v.name or "value"
            cast = ir.Node("", "Cast", [v], [ir.AttrInt64("to", int(I32))], name=names.derive(base, "to_int32"))
            out = cast.outputs[0]
            out.name = names.derive(base, "int32")
            out.type, out.shape = ir.TensorType(I32), (ir.Shape(v.shape) if v.shape is not None else None)
            _insert_after(graph, v, cast)
            for node, index in split.uses:
                node.replace_input_with(index, out)
            stats["casts_to_int32"] += 1
        return {k: n for k, n in stats.items() if n}


def _sets_type(node: ir.Node) -> bool:
    """Ops whose output type comes from an attribute we do not rewrite (RandomX, EyeLike …)."""
    return node.op_type not in ("Cast", "ConstantOfShape") and any(
        k in node.attributes for k in ("to", "dtype", "output_dtype")
    )


def _fits(interval: Interval) -> bool:
    return interval is not None and LO <= interval[0] and interval[1] <= HI


def _array_range(array: np.ndarray | None) -> Interval:
    if array is None:
        return None
    if array.size == 0:
        return (0, 0)
    if array.dtype.kind not in "iub":
        return None
    return (int(array.min()), int(array.max()))


def _insert_after(graph: ir.Graph, value: ir.Value, node: ir.Node) -> None:
    producer = value.producer()
    if producer is not None and producer.graph is graph:
        graph.insert_after(producer, node)
    else:
        first = next(iter(graph), None)
        if first is not None:
            graph.insert_before(first, node)
        else:
            graph.append(node)
