"""Graph helpers shared by passes: walking every graph, constants, names.

Every pass must reach into ``If``/``Loop``/``Scan`` bodies and model-local functions. There is one
walker: :func:`walk` yields a :class:`Scope` for the main graph (or a given graph or function) and
every nested body, parents before children in node and attribute order (the order they
serialize in), then each model-local function and its bodies; each scope knows the node that holds
it, the opset imports that govern it and how deep it is. :func:`iter_graphs` is the same walk
yielding only the graphs. :func:`is_onnx_domain` and :func:`opset_of` are the one spelling of
"the default ONNX domain" and "the opset a graph imports".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import onnx_ir as ir

__all__ = [
    "ONNX_DOMAINS",
    "GraphLike",
    "NameAllocator",
    "Scope",
    "const_value",
    "count_nodes",
    "find_cycle",
    "forward_value",
    "is_graph_output",
    "is_onnx_domain",
    "iter_graphs",
    "iter_nodes",
    "named_subgraphs",
    "nested_nodes",
    "opset_of",
    "subgraphs",
    "transplant",
    "value_names",
    "walk",
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


#: The default ONNX operator domain, under both of its spellings (``ai.onnx.ml`` is another domain).
ONNX_DOMAINS: tuple[str, str] = ("", "ai.onnx")


def is_onnx_domain(domain: str | None) -> bool:
    """Whether ``domain`` is the default ONNX operator set (``""`` or ``"ai.onnx"``)."""
    return domain in ONNX_DOMAINS or domain is None


def opset_of(imports: Mapping[str, int], domain: str = "") -> int | None:
    """The version ``imports`` gives ``domain`` (the default domain under either spelling), or None."""
    if is_onnx_domain(domain):
        for name in ONNX_DOMAINS:
            if name in imports:
                return imports[name]
        return None
    return imports.get(domain)


@dataclasses.dataclass(frozen=True)
class Scope:
    """One graph of a model as :func:`walk` meets it."""

    graph: GraphLike
    owner: ir.Node | None
    """The ``If``/``Loop``/``Scan`` node whose attribute holds the graph (None for a main graph or a function)."""
    opsets: Mapping[str, int]
    """The opset imports that govern the graph: the model's, or those of the function it is in."""
    function: ir.Function | None
    """The model-local function the graph belongs to (None in the main graph)."""
    depth: int
    """0 for the main graph and function bodies, 1 for their direct subgraphs, and so on."""
    attribute: str = ""
    """The owner's attribute that holds the graph (``then_branch``, ``body``); "" at depth 0."""


def named_subgraphs(node: ir.Node) -> Iterator[tuple[str, ir.Graph]]:
    """``(attribute, graph)`` for each graph in ``node``'s attributes, as :func:`subgraphs` (a list
    attribute's graphs as ``name[i]``)."""
    attrs = node.attributes
    if not attrs:
        return
    for name, attr in getattr(attrs, "data", attrs).items():
        kind = attr.type
        if kind is _GRAPH and not attr.is_ref():
            yield name, attr.as_graph()
        elif kind is _GRAPHS and not attr.is_ref():
            for i, sub in enumerate(attr.as_graphs()):
                yield f"{name}[{i}]", sub


def _scopes(
    graph: GraphLike,
    owner: ir.Node | None,
    opsets: Mapping[str, int],
    function: ir.Function | None,
    depth: int,
    attribute: str = "",
) -> Iterator[Scope]:
    yield Scope(graph, owner, opsets, function, depth, attribute)
    for node in graph:
        for name, sub in named_subgraphs(node):
            yield from _scopes(sub, node, opsets, function, depth + 1, name)


def nested_nodes(node: ir.Node) -> Iterator[tuple[ir.Graph, ir.Node]]:
    """``(graph, inner)`` for every node inside ``node``'s subgraphs, at any depth."""
    for sub in subgraphs(node):
        for scope in _scopes(sub, node, {}, None, 1):
            for inner in scope.graph:
                yield scope.graph, inner  # type: ignore[misc]  # subgraphs are ir.Graph


def walk(root: ir.Model | GraphLike, *, functions: bool = True) -> Iterator[Scope]:
    """Every graph under ``root``, parents first, in node and attribute order.

    ``root`` is a model (its main graph, then, with ``functions``, each model-local function) or a
    single graph or function (it and its nested bodies). Opsets: a model's graphs take the model's
    imports, a function's take the function's.
    """
    if isinstance(root, ir.Model):
        yield from _scopes(root.graph, None, root.opset_imports, None, 0)
        if functions:
            for function in list(root.functions.values()):
                yield from _scopes(function, None, function.opset_imports, function, 0)
        return
    if isinstance(root, ir.Function):
        yield from _scopes(root, None, root.opset_imports, root, 0)
        return
    yield from _scopes(
        root, None, root.opset_imports if isinstance(root, ir.Graph) else {}, None, 0
    )


def iter_graphs(root: ir.Model | GraphLike, *, functions: bool = True) -> Iterator[GraphLike]:
    """Yield the main graph, every nested subgraph and (optionally) every model-local function
    (or, for a graph or function, it and its nested subgraphs): :func:`walk`'s graphs."""
    for scope in walk(root, functions=functions):
        yield scope.graph


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
    if producer is not None and producer.op_type == "Constant" and is_onnx_domain(producer.domain):
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
        if domain not in model.opset_imports and not (
            domain == "ai.onnx" and "" in model.opset_imports
        ):
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

    A node depends on the producers of its inputs and of the outer-scope values its subgraphs read
    (:func:`surgery.cycles.cycle_among`, linear in nodes + edges). ONNX graphs must be acyclic; a cyclic one makes every topological walk loop, so commands
    check this first and refuse the model.
    """
    from surgery.cycles import cycle_among

    nodes = list(graph)
    index = {id(n): i for i, n in enumerate(nodes)}
    deps: list[set[int]] = []
    for node in nodes:
        mine: set[int] = set()
        values = [v for v in node.inputs if v is not None]
        if node.attributes:
            values += list(_captured(node, graph))
        for value in values:
            producer = value.producer()
            j = index.get(id(producer)) if producer is not None else None
            if j is not None:
                mine.add(j)
        deps.append(mine)
    cycle = cycle_among(deps)
    return None if cycle is None else [nodes[k] for k in cycle]


def value_names(values: Iterable[ir.Value | None]) -> list[str]:
    """The names of ``values``, skipping absent (``None``) and unnamed ones.

    Graph inputs and outputs always carry a name in a valid model; the filter makes that explicit.
    """
    return [v.name for v in values if v is not None and v.name]
