"""Graph helpers shared by passes: walking every graph, constants, names.

Every pass must reach into ``If``/``Loop``/``Scan`` bodies and model-local functions;
:func:`iter_graphs` yields all of them once, parents before children.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import onnx_ir as ir

__all__ = [
    "GraphLike",
    "NameAllocator",
    "const_value",
    "count_nodes",
    "find_cycle",
    "forward_value",
    "is_graph_output",
    "iter_graphs",
    "iter_nodes",
    "subgraphs",
    "transplant",
    "value_names",
]

GraphLike = ir.Graph | ir.Function

_GRAPH = ir.AttributeType.GRAPH
_GRAPHS = ir.AttributeType.GRAPHS


def subgraphs(node: ir.Node) -> Iterator[ir.Graph]:
    """The graphs held in ``node``'s attributes (``If`` branches, ``Loop``/``Scan`` bodies).

    Reference attributes (inside a function body) hold no graph and are skipped.
    """
    attrs = node.attributes
    if not attrs:
        return
    # ``Attributes`` is a UserDict: iterate its dict directly (the Mapping views go through
    # __getitem__ per key, which shows on graphs of 100k nodes)
    for attr in getattr(attrs, "data", attrs).values():
        kind = attr.type
        if kind is _GRAPH:
            if not attr.is_ref():
                yield attr.as_graph()
        elif kind is _GRAPHS and not attr.is_ref():
            yield from attr.as_graphs()


def _walk(graph: GraphLike) -> Iterator[GraphLike]:
    yield graph
    for node in graph:
        for sub in subgraphs(node):
            yield from _walk(sub)


def iter_graphs(model: ir.Model, *, functions: bool = True) -> Iterator[GraphLike]:
    """Yield the main graph, every nested subgraph and (optionally) every model-local function."""
    yield from _walk(model.graph)
    if functions:
        for function in list(model.functions.values()):
            yield from _walk(function)


def iter_nodes(model: ir.Model, *, functions: bool = True) -> Iterator[tuple[GraphLike, ir.Node]]:
    """Yield ``(graph, node)`` for every node of every graph (a snapshot per graph)."""
    for graph in iter_graphs(model, functions=functions):
        for node in list(graph):
            yield graph, node


def count_nodes(model: ir.Model) -> int:
    return sum(len(g) for g in iter_graphs(model))


def const_value(value: ir.Value | None) -> np.ndarray | None:
    """The constant array behind ``value`` (an initializer or a ``Constant`` node), else None.

    Graph inputs are not constants even when they have an initializer (it is only a default).
    """
    if value is None:
        return None
    if value.const_value is not None and not value.is_graph_input():
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx"):
        attr = next(iter(producer.attributes.values()), None)
        if attr is None:
            return None
        if attr.name == "value":
            return attr.as_tensor().numpy()
        if attr.name == "value_float":
            return np.array(attr.as_float(), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.as_int(), dtype=np.int64)
        if attr.name == "value_floats":
            return np.array(list(attr.as_floats()), dtype=np.float32)
        if attr.name == "value_ints":
            return np.array(list(attr.as_ints()), dtype=np.int64)
    return None


def is_graph_output(value: ir.Value) -> bool:
    return value.is_graph_output()


class NameAllocator:
    """Hands out node and value names derived from existing ones, unique within a model.

    New nodes take names derived from the nodes they replace (``Conv_3`` → ``Conv_3/avgpool``) so
    that compiler dumps (ATC copies node names) still point at the user's layers.
    """

    def __init__(self, model: ir.Model) -> None:
        self._taken: set[str] = set()
        for graph in iter_graphs(model):
            for node in graph:
                if node.name:
                    self._taken.add(node.name)
                for out in node.outputs:
                    if out.name:
                        self._taken.add(out.name)
            for v in list(graph.inputs) + list(graph.outputs):
                if v.name:
                    self._taken.add(v.name)
            if isinstance(graph, ir.Graph):
                self._taken.update(graph.initializers)

    def fork(self) -> NameAllocator:
        """An allocator that starts from the same taken names and hands out names independently."""
        other = object.__new__(NameAllocator)
        other._taken = set(self._taken)
        return other

    def derive(self, base: str | None, suffix: str) -> str:
        """A fresh name ``base/suffix`` (``base/suffix_1`` … if taken; ``suffix`` alone for no base)."""
        stem = f"{base}/{suffix}" if base else suffix
        name, i = stem, 0
        while name in self._taken:
            i += 1
            name = f"{stem}_{i}"
        self._taken.add(name)
        return name

    def reserve(self, name: str) -> None:
        self._taken.add(name)


def transplant(new: ir.Model, model: ir.Model) -> None:
    """Move ``new``'s graph contents and functions into ``model`` (same objects: an in-place pass).

    ``model`` keeps its ``ir_version``, metadata and opset imports (an import is only added for a
    domain ``new`` introduces). Used by passes that delegate to a tool working on protos.
    """
    old_graph, new_graph = model.graph, new.graph
    old_graph.remove(list(old_graph))
    old_graph.inputs.clear()
    old_graph.outputs.clear()
    old_graph.initializers.clear()

    nodes = list(new_graph)
    inputs, outputs = list(new_graph.inputs), list(new_graph.outputs)
    initializers = list(new_graph.initializers.values())
    new_graph.remove(nodes)
    new_graph.inputs.clear()
    new_graph.outputs.clear()
    new_graph.initializers.clear()

    old_graph.inputs.extend(inputs)
    for value in initializers:
        old_graph.initializers.add(value)
    old_graph.extend(nodes)
    old_graph.outputs.extend(outputs)

    for domain, version in new.opset_imports.items():
        if domain not in model.opset_imports and not (domain == "ai.onnx" and "" in model.opset_imports):
            model.opset_imports[domain] = version
    model.functions.clear()
    model.functions.update(new.functions)


def _can_take_name(value: ir.Value, graph: ir.Graph) -> bool:
    """Whether ``value`` may be renamed to a graph output name of ``graph`` without side effects."""
    producer = value.producer()
    return (
        producer is not None
        and producer.graph is graph
        and not value.is_graph_output()
        and not value.is_graph_input()
        and not value.is_initializer()
    )


def _adopt_signature(value: ir.Value, declared: ir.Value) -> None:
    """Give ``value`` the type and shape a graph output was declared with (they are the signature)."""
    if declared.type is not None:
        value.type = declared.type
    if declared.shape is not None:
        value.shape = declared.shape


def forward_value(old: ir.Value, new: ir.Value) -> bool:
    """Make every reader of ``old`` (nodes in any scope, graph outputs) read ``new`` instead.

    When ``old`` is a graph output its name is the model's contract: ``new`` then takes that name,
    which is only allowed when :func:`_can_take_name` holds. Returns False (and changes nothing)
    when ``old`` is a graph output that ``new`` cannot stand in for; the caller must then keep a
    node (e.g. an ``Identity``) that produces ``old``'s name.
    """
    if not old.is_graph_output():
        old.replace_all_uses_with(new)
        return True
    graph = old.graph
    if graph is None or not _can_take_name(new, graph):
        return False
    name = old.name
    _adopt_signature(new, old)
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    old.name = None
    new.name = name
    return True


def _captured(node: ir.Node, graph: GraphLike) -> Iterator[ir.Value]:
    """Values of ``graph`` that ``node``'s subgraphs read (outer-scope references)."""
    for sub in subgraphs(node):
        for inner in sub:
            for value in inner.inputs:
                if value is not None and value.graph is graph:
                    yield value
            yield from _captured(inner, graph)


def find_cycle(graph: GraphLike) -> list[ir.Node] | None:
    """A dependency cycle among ``graph``'s nodes (in order, the first repeated at the end), or None.

    Kahn's algorithm, linear in nodes + edges: a node depends on the producers of its inputs and
    of the outer-scope values its subgraphs read. Nodes left over once nothing more can be
    scheduled lie on or behind a cycle; walking back through left-over producers finds one.
    ONNX graphs must be acyclic; a cyclic one makes every topological walk loop, so commands
    check this first and refuse the model.
    """
    nodes = list(graph)
    index = {id(n): i for i, n in enumerate(nodes)}
    deps: list[set[int]] = []
    users: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        mine: set[int] = set()
        values = [v for v in node.inputs if v is not None]
        if node.attributes:
            values += list(_captured(node, graph))
        for value in values:
            producer = value.producer()
            j = index.get(id(producer)) if producer is not None else None
            if j is not None and j not in mine:
                mine.add(j)
                users[j].append(i)
        deps.append(mine)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if done == len(nodes):
        return None
    # every left-over node has a left-over dependency: walk back until a node repeats
    start = next(i for i, w in enumerate(waiting) if w > 0)
    seen: dict[int, int] = {}
    path: list[int] = []
    i = start
    while i not in seen:
        seen[i] = len(path)
        path.append(i)
        i = next(j for j in deps[i] if waiting[j] > 0)
    cycle = path[seen[i]:]
    cycle.reverse()  # producers first
    first = cycle.index(min(cycle))  # start at the node that comes first in the graph: a stable message
    cycle = cycle[first:] + cycle[:first]
    return [nodes[k] for k in cycle] + [nodes[cycle[0]]]


def value_names(values: Iterable[ir.Value | None]) -> list[str]:
    """The names of ``values``, skipping absent (``None``) and unnamed ones.

    Graph inputs and outputs always carry a name in a valid model; the filter makes that explicit.
    """
    return [v.name for v in values if v is not None and v.name]
