"""narrow-int64: int64 tensors whose values provably fit int32 become int32.

On Ascend, int64 index and shape arithmetic often lands on AICPU; int32 stays on AI Core. This
pass narrows groups of int64 tensors that must share one type (the values a node binds to the
same type variable, e.g. both inputs and the output of an ``Add``) when:

- every op in the group accepts int32 for that type variable (per its ONNX schema at the opset
  the graph imports), and none is an op the pass cannot see into (custom domains and function
  calls, nodes with subgraphs, nodes with attribute references);
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
int32 directly. Casts are never removed. Results never change: every narrowed value is proven to fit.

Every graph is rewritten, each at its own opset import: the main graph, ``If``/``Loop``/``Scan``
bodies at any depth (parents first) and model-local functions (callers first). Values that cross
a graph boundary keep their type: graph inputs and outputs, subgraph formal inputs and outputs
(``Loop``'s iteration number, condition and carried values, ``Scan``'s states and slices, ``If``
branch outputs), function formal inputs and outputs, the inputs and outputs of nodes holding
subgraphs or calling functions, and values a nested graph reads from an enclosing one. Inside a
graph, a boundary value whose range is proven is read like a fixed-int64 output: its readers in
that graph go through a ``Cast`` to int32 placed at the top of the graph, when that group also
narrows values the graph computes (a Cast feeding an index slot alone gains nothing). The main
graph's inputs have no proven range, so they never narrow. Ranges reach a body from outside: values read from an enclosing graph keep the range computed there, a ``Loop``'s iteration
number lies in ``[0, M)`` when the trip count ``M`` has a proven range, a ``Scan`` slice in its
scan input's range, and a function's formal input in the union of its call sites' arguments (with
their dtype and static shape when every call site agrees).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from surgery.graph import NameAllocator, const_value, is_onnx_domain, walk
from surgery.pass_base import (
    Numerics,
    SurgeryPass,
    SurgeryResult,
    declare_interface,
    declare_stats,
    interface,
)
from surgery.registry import register
from surgery.rules import schema
from surgery.rules.engine import InferredTypes
from surgery.shapes.dims import is_static_shape

__all__ = ["NarrowInt64"]


I64 = ir.DataType.INT64
I32 = ir.DataType.INT32
LO, HI = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)

Interval = tuple[int, int] | None
GraphLike = ir.Graph | ir.Function

#: ops whose listed inputs carry values through unchanged (the output's range is their union)
_MOVE = {
    "Identity": (0,),
    "Reshape": (0,),
    "Squeeze": (0,),
    "Unsqueeze": (0,),
    "Flatten": (0,),
    "Transpose": (0,),
    "Expand": (0,),
    "Tile": (0,),
    "Gather": (0,),
    "GatherElements": (0,),
    "GatherND": (0,),
    "Slice": (0,),
    "Split": (0,),
    "ReduceMax": (0,),
    "ReduceMin": (0,),
    "Where": (1, 2),
    "Concat": None,
    "Max": None,
    "Min": None,
    "DepthToSpace": (0,),
    "SpaceToDepth": (0,),
    "Compress": (0,),
    "Pad": (0, 2),
    "ScatterElements": (0, 2),
    "ScatterND": (0, 2),
    "TopK": (0,),
    "Trilu": (0,),
}
_INT_RANGES = {
    ir.DataType.INT8: (-(2**7), 2**7 - 1),
    ir.DataType.UINT8: (0, 2**8 - 1),
    ir.DataType.INT16: (-(2**15), 2**15 - 1),
    ir.DataType.UINT16: (0, 2**16 - 1),
    ir.DataType.INT32: (LO, HI),
    ir.DataType.BOOL: (0, 1),
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
    """A virtual int32 copy of an int64 value its graph cannot retype (a fixed-int64 output such as
    ``Shape``'s, or a value crossing the graph's boundary), made real by a Cast if its group narrows."""

    def __init__(self, value: ir.Value) -> None:
        self.value = value
        self.uses: list[tuple[ir.Node, int]] = []


class _State:
    """What the analysis knows of every value seen so far, across graphs (parents before children)."""

    def __init__(self, model: ir.Model) -> None:
        self.dtype: dict[ir.Value, ir.DataType | None] = {}
        self.shapes: dict[ir.Value, ir.Shape | None] = {}
        self.ranges: dict[ir.Value, Interval] = {}
        self.inferred = InferredTypes(model)
        self.names = NameAllocator(model)

    def learn(self, graph: GraphLike, v: ir.Value) -> None:
        dtype = v.dtype or self.dtype.get(v)
        shape = v.shape if v.shape is not None else self.shapes.get(v)
        if dtype is None or shape is None:
            found = self.inferred.get(v, graph)
            if found is not None:
                dtype = dtype or found[0].dtype
                shape = shape if shape is not None else found[1]
        self.dtype[v], self.shapes[v] = dtype, shape


@register
class NarrowInt64(SurgeryPass):
    """Narrow int64 index/shape tensors that provably fit to int32, with Casts where ONNX needs int64."""

    name = "narrow-int64"
    numerics = Numerics.EXACT
    statistics = declare_stats(
        values="int64 values retyped to int32",
        constants="int64 constants narrowed to int32",
        casts_to_int64="Casts back to int64 added where an op needs int64",
        casts_to_int32="Casts to int32 added where a value stays int64",
        bodies="subgraphs and function bodies rewritten",
    )

    def call(self, model: ir.Model) -> SurgeryResult:
        interface_before = interface(model)
        state = _State(model)
        calls = _call_sites(model)
        totals: dict[str, int] = {}
        bodies = 0
        for graph, opsets, owner in _graphs_in_order(model):
            opset = schema.opset_of(opsets, "") or 1
            if isinstance(graph, ir.Function):
                _seed_function(graph, calls.get(graph.identifier(), []), state)
            elif owner is not None:
                _seed_body(graph, owner, opset, state)
            stats = self._narrow(graph, opset, state)
            if stats:
                bodies += graph is not model.graph
                for key, n in stats.items():
                    totals[key] = totals.get(key, 0) + n
        if not totals:
            return SurgeryResult(model, False)
        if bodies:
            totals["bodies"] = bodies  # subgraphs and function bodies rewritten
        return declare_interface(
            SurgeryResult(model, True, stats=totals),
            interface_before,
            model,
            "narrow-int64 retypes int64 tensors",
        )

    # ---- analysis ---------------------------------------------------------------------------
    def _narrow(self, graph: GraphLike, opset: int, state: _State) -> dict[str, int]:
        """Analyse and rewrite one graph (not its subgraphs); the stats of what changed."""
        body = graph.graph if isinstance(graph, ir.Function) else graph
        local = _values(graph)
        local_set = set(local)
        v: ir.Value | _Split | None  # the loops below visit values, optional inputs and splits
        for v in local:
            state.learn(graph, v)
        dtype = state.dtype
        for node in graph:
            for i, out in enumerate(node.outputs):
                if dtype.get(out) is None:
                    dtype[out] = _infer_dtype(node, i, opset, dtype)
        self._ranges(graph, state)

        uf = _UnionFind()
        pinned: set[Any] = set()
        fixed_uses: dict[ir.Value, list[tuple[ir.Node, int]]] = {}
        generic_use: set[Any] = set()
        splits: dict[ir.Value, _Split] = {}

        def is_i64(v: ir.Value | None) -> bool:
            return v is not None and dtype.get(v) == I64

        # the graph's boundary keeps its type; inside, its readers may take an int32 copy
        boundary: set[ir.Value] = set()  # graph inputs and values read from an enclosing graph
        for v in graph.inputs:
            if is_i64(v):
                pinned.add(v)
                splits[v] = _Split(v)
                boundary.add(v)
        for v in graph.outputs:
            if is_i64(v):
                pinned.add(v)
        for node in graph:
            for v in node.inputs:  # values read from an enclosing graph
                if v is not None and v not in local_set and v not in splits and is_i64(v):
                    pinned.add(v)
                    splits[v] = _Split(v)
                    boundary.add(v)
            standard = is_onnx_domain(node.domain)
            opaque = not standard or any(
                a.is_ref() or a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
                for a in node.attributes.values()
            )
            binding = schema.type_bindings(node, opset) if not opaque else None
            if binding is None:
                for v in list(node.inputs) + list(node.outputs):
                    if is_i64(v):
                        pinned.add(v)
                continue
            groups: dict[str, list[Any]] = {}
            for kind, values, slots in (
                ("in", node.inputs, binding.inputs),
                ("out", node.outputs, binding.outputs),
            ):
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
        # values used by nodes inside nested subgraphs (outer-scope reads) stay as they are
        for v in local:
            if is_i64(v) and any(u.node.graph is not body for u in v.uses()):
                pinned.add(v)

        components: dict[Any, list[Any]] = {}
        for v in [v for v in local if is_i64(v)] + [s for s in splits.values() if s.uses]:
            if isinstance(v, ir.Value) and v in splits:
                continue  # the fixed or boundary value itself stays int64; its _Split stands for the readers
            components.setdefault(uf.find(v), []).append(v)
        narrowed: list[Any] = []
        for members in components.values():
            if any(m in pinned or uf.find(m) in pinned for m in members):
                continue
            if not any(m in generic_use for m in members):
                continue  # only fixed-int64 readers: nothing to gain
            if all(isinstance(m, _Split) and m.value in boundary for m in members):
                continue  # a Cast of a boundary value straight into an index slot: no arithmetic moves
            if not all(
                _fits(state.ranges.get(m.value if isinstance(m, _Split) else m)) for m in members
            ):
                continue
            narrowed.extend(members)
        if not narrowed:
            return {}
        return self._apply(graph, narrowed, fixed_uses, state)

    def _ranges(self, graph: GraphLike, state: _State) -> None:
        """Proven value ranges of ``graph``'s values, into ``state.ranges`` (enclosing graphs' are there)."""
        ranges, dtype, shapes = state.ranges, state.dtype, state.shapes
        if isinstance(graph, ir.Graph):
            for v in graph.initializers.values():
                if v.const_value is not None and not v.is_graph_input():
                    ranges[v] = _array_range(v.const_value.numpy())
        for v in graph.inputs:
            if v not in ranges and dtype.get(v) in _INT_RANGES:
                ranges[v] = _INT_RANGES[dtype[v]]  # type: ignore[index]

        def r(v: ir.Value | None) -> Interval:
            if v is None:
                return None
            if v in ranges:
                return ranges[v]
            if dtype.get(v) in _INT_RANGES:
                return _INT_RANGES[dtype[v]]  # type: ignore[index]
            return None

        for node in graph:
            op = node.op_type if is_onnx_domain(node.domain) else ""
            if any(a.is_ref() for a in node.attributes.values()):
                op = ""  # an attribute bound at the call site: nothing known
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
                if is_static_shape(shape):
                    dims = [int(d) for d in shape]
                    result = (
                        (0, max(dims, default=0))
                        if op == "Shape"
                        else (0, int(np.prod(dims, dtype=object)))
                    )
            elif op in _MOVE:
                idx = _MOVE[op]
                picked = [
                    ins[i]
                    for i in (idx if idx is not None else range(len(ins)))
                    if i < len(ins) and ins[i] is not None
                ]
                result = _union(r(v) for v in picked)
            elif op in ("Add", "Sub", "Mul") and len(ins) == 2:
                a, b = r(ins[0]), r(ins[1])
                if a is not None and b is not None:
                    result = {
                        "Add": (a[0] + b[0], a[1] + b[1]),
                        "Sub": (a[0] - b[1], a[1] - b[0]),
                        "Mul": _mul(a, b),
                    }[op]
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

    # ---- rewriting --------------------------------------------------------------------------
    def _apply(
        self,
        graph: GraphLike,
        members: list[Any],
        fixed_uses: dict[ir.Value, list[tuple[ir.Node, int]]],
        state: _State,
    ) -> dict[str, int]:
        body = graph.graph if isinstance(graph, ir.Function) else graph
        names = state.names
        stats = {"values": 0, "constants": 0, "casts_to_int64": 0, "casts_to_int32": 0}
        values = [m for m in members if isinstance(m, ir.Value)]
        for v in values:
            producer = v.producer()
            if v.is_initializer() and v.const_value is not None:
                v.const_value = ir.Tensor(v.const_value.numpy().astype(np.int32), name=v.name)
                stats["constants"] += 1
            elif producer is not None and producer.op_type == "Constant":
                key = next(iter(producer.attributes))
                array = const_value(v)
                assert array is not None
                producer.attributes.pop(key)
                producer.attributes["value"] = ir.AttrTensor(
                    "value", ir.tensor(array.astype(np.int32), name=v.name)
                )
                v.const_value = None
                stats["constants"] += 1
            elif producer is not None and producer.op_type == "Cast":
                producer.attributes["to"] = ir.AttrInt64("to", int(I32))
            elif producer is not None and producer.op_type == "ConstantOfShape":
                fill = producer.attributes.get("value")
                array = fill.as_tensor().numpy() if fill is not None else np.zeros(1, np.float32)
                producer.attributes["value"] = ir.AttrTensor(
                    "value", ir.tensor(array.astype(np.int32))
                )
            v.type = ir.TensorType(I32)
            state.dtype[v] = I32
            stats["values"] += 1
            uses = fixed_uses.get(v)
            if uses:
                _cast_for(body, v, uses, I64, "int64", names, state)
                stats["casts_to_int64"] += 1
        for split in [m for m in members if isinstance(m, _Split)]:
            v = split.value
            if v.type is None:
                v.type = ir.TensorType(I64)
            _cast_for(body, v, split.uses, I32, "int32", names, state)
            stats["casts_to_int32"] += 1
        return {k: n for k, n in stats.items() if n}


# ---- graphs, call sites and what a body knows of its boundary ---------------------------------
def _graphs_in_order(
    model: ir.Model,
) -> Iterator[tuple[GraphLike, Mapping[str, int], ir.Node | None]]:
    """Every graph with its opset imports and the node holding it: the main graph and its bodies
    (parents first), then model-local functions with theirs, each function after its callers."""
    for scope in walk(model.graph):
        yield scope.graph, model.opset_imports, scope.owner
    functions = model.functions
    callees: dict[Any, list[Any]] = {}
    for key, function in functions.items():
        callees[key] = [
            k
            for n in function.all_nodes()
            if (k := (n.domain, n.op_type, n.overload)) in functions and k != key
        ]
    # reverse post-order of a depth-first walk along calls: callers before callees (no recursion in ONNX)
    done: set[Any] = set()
    post: list[Any] = []
    for root in functions:
        if root in done:
            continue
        done.add(root)
        stack = [(root, iter(callees[root]))]
        while stack:
            key, it = stack[-1]
            nxt = next((k for k in it if k not in done), None)
            if nxt is None:
                post.append(key)
                stack.pop()
            else:
                done.add(nxt)
                stack.append((nxt, iter(callees[nxt])))
    for key in reversed(post):
        function = functions[key]
        for scope in walk(function):
            yield scope.graph, function.opset_imports, scope.owner


def _call_sites(model: ir.Model) -> dict[Any, list[ir.Node]]:
    """The nodes calling each model-local function, anywhere in the model."""
    calls: dict[Any, list[ir.Node]] = {}
    functions = model.functions
    graphs: list[GraphLike] = [model.graph, *functions.values()]
    for graph in graphs:
        for node in graph.all_nodes():
            key = (node.domain, node.op_type, node.overload)
            if key in functions:
                calls.setdefault(key, []).append(node)
    return calls


def _seed_function(function: ir.Function, calls: list[ir.Node], state: _State) -> None:
    """A formal input's dtype, static shape and range: those of its arguments, when every call agrees."""
    if not calls:
        return
    for k, formal in enumerate(function.inputs):
        given = [c.inputs[k] if k < len(c.inputs) else None for c in calls]
        args = [a for a in given if a is not None]
        if len(args) < len(given):
            continue  # omitted at some call: the formal is undefined there
        dtypes = {state.dtype.get(a) or a.dtype for a in args}
        if formal.dtype is None and len(dtypes) == 1 and None not in dtypes:
            state.dtype[formal] = dtypes.pop()
        shapes = [state.shapes.get(a) if state.shapes.get(a) is not None else a.shape for a in args]
        same = all(is_static_shape(s) for s in shapes) and all(
            tuple(s or ()) == tuple(shapes[0] or ()) for s in shapes
        )
        if formal.shape is None and same:
            state.shapes[formal] = shapes[0]
        rng = _union(state.ranges.get(a) for a in args)
        if rng is not None:
            state.ranges[formal] = rng


def _seed_body(graph: ir.Graph, owner: ir.Node, opset: int, state: _State) -> None:
    """What a Loop or Scan body knows of its formal inputs from the node holding it."""
    inputs = list(graph.inputs)
    if owner.op_type == "Loop" and is_onnx_domain(owner.domain) and len(inputs) >= 2:
        if inputs[0].dtype is None:
            state.dtype[inputs[0]] = I64
        if inputs[1].dtype is None:
            state.dtype[inputs[1]] = ir.DataType.BOOL
        for formal, actual in zip(inputs[2:], owner.inputs[2:], strict=True):
            if formal.dtype is None and actual is not None:
                state.dtype[formal] = state.dtype.get(actual) or actual.dtype
        trip = owner.inputs[0] if owner.inputs else None
        bound = state.ranges.get(trip) if trip is not None else None
        if bound is not None:
            state.ranges[inputs[0]] = (0, max(bound[1] - 1, 0))  # the iteration number is below M
    elif owner.op_type == "Scan" and is_onnx_domain(owner.domain) and opset >= 9:
        scan_inputs = schema.attr_value(owner, "num_scan_inputs", opset, 0)
        states = len(owner.inputs) - scan_inputs
        for j, (formal, actual) in enumerate(zip(inputs, owner.inputs, strict=True)):
            if actual is None:
                continue
            if formal.dtype is None:
                state.dtype[formal] = state.dtype.get(actual) or actual.dtype
            if j >= states and state.ranges.get(actual) is not None:
                state.ranges[formal] = state.ranges[actual]  # a slice holds the scan input's values


def _values(graph: GraphLike) -> list[ir.Value]:
    """The values ``graph`` defines: its inputs, initializers and node outputs."""
    seen: dict[ir.Value, None] = {}
    for v in graph.inputs:
        seen[v] = None
    if isinstance(graph, ir.Graph):
        for v in graph.initializers.values():
            seen[v] = None
    for node in graph:
        for v in node.outputs:
            seen[v] = None
    return list(seen)


def _infer_dtype(
    node: ir.Node, index: int, opset: int, dtype: Mapping[ir.Value, ir.DataType | None]
) -> ir.DataType | None:
    """The element type of output ``index`` of ``node`` from its schema and its inputs' types, else None."""
    if not is_onnx_domain(node.domain) or any(a.is_ref() for a in node.attributes.values()):
        return None
    op = node.op_type
    if op == "Cast":
        to = node.attributes.get("to")
        return ir.DataType(to.as_int()) if to is not None else None
    if op == "Constant":
        attr = next(iter(node.attributes.values()), None)
        if attr is None:
            return None
        if attr.type == ir.AttributeType.TENSOR:
            return attr.as_tensor().dtype
        return {
            "value_int": I64,
            "value_ints": I64,
            "value_float": ir.DataType.FLOAT,
            "value_floats": ir.DataType.FLOAT,
        }.get(attr.name)
    if op == "ConstantOfShape":
        attr = node.attributes.get("value")
        return attr.as_tensor().dtype if attr is not None else ir.DataType.FLOAT
    if op == "CastLike":
        return (
            dtype.get(node.inputs[1])
            if len(node.inputs) > 1 and node.inputs[1] is not None
            else None
        )
    op_schema = schema.get_schema(op, opset, node.domain)
    if op_schema is None or any(
        p.option == onnx.defs.OpSchema.FormalParameterOption.Variadic and not p.is_homogeneous
        for p in list(op_schema.inputs) + list(op_schema.outputs)
    ):
        return None  # If/Loop/Scan: each output has its own type
    binding = schema.type_bindings(node, opset)
    if binding is None or index >= len(binding.outputs):
        return None
    type_str, allowed = binding.outputs[index]
    if len(allowed) == 1:
        return next(iter(allowed))
    for i, (in_type, _) in enumerate(binding.inputs):
        given = node.inputs[i] if i < len(node.inputs) else None
        if in_type == type_str and given is not None:
            found = dtype.get(given) or given.dtype
            if found is not None:
                return found
    return None


def _sets_type(node: ir.Node) -> bool:
    """Ops whose output type comes from an attribute we do not rewrite (RandomX, EyeLike …)."""
    return node.op_type not in ("Cast", "ConstantOfShape") and any(
        k in node.attributes for k in ("to", "dtype", "output_dtype")
    )


def _fits(interval: Interval) -> bool:
    return interval is not None and interval[0] >= LO and interval[1] <= HI


def _array_range(array: np.ndarray | None) -> Interval:
    if array is None:
        return None
    if array.size == 0:
        return (0, 0)
    if array.dtype.kind not in "iub":
        return None
    return (int(array.min()), int(array.max()))


def _cast_for(
    body: ir.Graph,
    value: ir.Value,
    uses: list[tuple[ir.Node, int]],
    to: ir.DataType,
    suffix: str,
    names: NameAllocator,
    state: _State,
) -> None:
    """A Cast of ``value`` to ``to`` right after its producer, read by ``uses`` instead of it
    (named ``<value>/to_<suffix>``, typed and shaped as ``value``)."""
    base = value.name or "value"
    cast = ir.Node(
        "", "Cast", [value], [ir.AttrInt64("to", int(to))], name=names.derive(base, f"to_{suffix}")
    )
    out = cast.outputs[0]
    out.name = names.derive(base, suffix)
    shape = state.shapes.get(value)
    out.type, out.shape = ir.TensorType(to), (ir.Shape(shape) if shape is not None else None)
    _insert_after(body, value, cast)
    for node, index in uses:
        node.replace_input_with(index, out)
    state.dtype[out], state.shapes[out] = to, out.shape


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
