"""Dataflow of one graph: values by name, producers and consumers including subgraph captures.

An ``If``/``Loop``/``Scan`` node reads values of the enclosing graph from inside its bodies
("captures"); for reachability such a node consumes them just as it consumes its explicit inputs.
:class:`Dataflow` indexes a graph once, in time linear in the size of the graph and its subgraphs,
and answers ancestor and descendant queries in time linear in what they visit.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx_ir as ir

from surgery.errors import InputError
from surgery.graph import GraphLike, iter_graphs, nested_nodes, subgraphs
from surgery.options import did_you_mean

__all__ = ["Dataflow", "captured_values"]


def captured_values(node: ir.Node) -> list[ir.Value]:
    """Values defined outside ``node``'s subgraphs that the subgraphs read (outer-scope captures)."""
    inner_graphs = {id(g) for sub in subgraphs(node) for g in iter_graphs(sub)}
    seen: dict[int, ir.Value] = {}
    for _, inner in nested_nodes(node):
        for value in inner.inputs:
            if value is None or id(value) in seen:
                continue
            owner = value.graph
            if owner is None or id(owner) not in inner_graphs:
                seen[id(value)] = value
    return list(seen.values())


class Dataflow:
    """An index of a graph's values and node dependencies (explicit inputs and captures).

    Node identity uses the node objects; positions follow the graph's (topological) order.
    """

    def __init__(self, graph: GraphLike) -> None:
        self.graph = graph
        self.nodes: list[ir.Node] = list(graph)
        self.position: dict[ir.Node, int] = {node: i for i, node in enumerate(self.nodes)}
        self.values: dict[str, ir.Value] = {}
        self._inputs: dict[ir.Node, list[ir.Value]] = {}
        self._consumers: dict[ir.Value, list[ir.Node]] | None = None
        values = self.values
        for value in graph.inputs:
            if value.name:
                values.setdefault(value.name, value)
        if isinstance(graph, ir.Graph):
            for name, value in graph.initializers.items():
                values.setdefault(name, value)
        for node in self.nodes:
            for out in node.outputs:
                if out.name and out.name not in values:
                    values[out.name] = out
        for value in graph.outputs:
            if value.name:
                values.setdefault(value.name, value)
        self._subgraph_names: set[str] | None = None

    # -- lookups -----------------------------------------------------------------------------
    def inputs_of(self, node: ir.Node) -> list[ir.Value]:
        """Explicit inputs and captured outer values of ``node`` (no duplicates, no None)."""
        listed = self._inputs.get(node)
        if listed is None:
            inputs: dict[int, ir.Value] = {}
            for value in node.inputs:
                if value is not None:
                    inputs.setdefault(id(value), value)
            if node.attributes and any(True for _ in subgraphs(node)):
                for value in captured_values(node):
                    inputs.setdefault(id(value), value)
            listed = list(inputs.values())
            self._inputs[node] = listed
        return listed

    def consumers(self, value: ir.Value) -> list[ir.Node]:
        """Nodes of this graph that read ``value`` (directly or inside their subgraphs)."""
        if self._consumers is None:
            consumers: dict[ir.Value, list[ir.Node]] = {}
            for node in self.nodes:
                for inp in self.inputs_of(node):
                    consumers.setdefault(inp, []).append(node)
            self._consumers = consumers
        return self._consumers.get(value, [])

    def producer(self, value: ir.Value) -> ir.Node | None:
        node = value.producer()
        return node if node is not None and node in self.position else None

    def is_constant_source(self, value: ir.Value) -> bool:
        """An initializer that is not also a graph input (so it cannot be overridden)."""
        return value.producer() is None and value.is_initializer() and not value.is_graph_input()

    def _names_in_subgraphs(self) -> set[str]:
        if self._subgraph_names is None:
            names: set[str] = set()
            for node in self.nodes:
                for graph, inner in nested_nodes(node):
                    names.update(v.name for v in inner.outputs if v.name)
                    names.update(v.name for v in graph.inputs if v.name)
            self._subgraph_names = names
        return self._subgraph_names

    def value(self, name: str, *, role: str = "tensor") -> ir.Value:
        """The value called ``name`` in this graph.

        Raises:
            InputError: for an unknown name, with a did-you-mean, or for a name that exists only
                inside an ``If``/``Loop``/``Scan`` body.
        """
        try:
            return self.values[name]
        except KeyError:
            pass
        if name in self._names_in_subgraphs():
            raise InputError(
                f"{role} '{name}' exists only inside a subgraph (If/Loop/Scan body); "
                "only tensors of the main graph can be cut at or exposed"
            )
        raise InputError(
            f"{role} '{name}': no such tensor in the model{did_you_mean(name, self.values)}"
        )

    def resolve(self, names: Iterable[str], *, role: str = "tensor") -> list[ir.Value]:
        return [self.value(n, role=role) for n in names]

    # -- reachability -----------------------------------------------------------------------
    def descendants(self, seeds: Iterable[ir.Node | ir.Value]) -> set[ir.Node]:
        """Nodes reachable downstream from the given nodes (included) or values (their consumers)."""
        seen: set[ir.Node] = set()
        stack: list[ir.Node] = []
        for seed in seeds:
            if isinstance(seed, ir.Node):
                stack.append(seed)
            else:
                stack.extend(self.consumers(seed))
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            for out in node.outputs:
                stack.extend(c for c in self.consumers(out) if c not in seen)
        return seen

    def ancestors(
        self, values: Iterable[ir.Value], *, stop: Iterable[ir.Value] = ()
    ) -> set[ir.Node]:
        """Nodes needed to compute ``values``, not looking past the values in ``stop``."""
        stopped = set(stop)
        seen: set[ir.Node] = set()
        visited: set[ir.Value] = set()
        stack = [v for v in values if v not in stopped]
        while stack:
            value = stack.pop()
            if value in visited:
                continue
            visited.add(value)
            node = self.producer(value)
            if node is None or node in seen:
                continue
            seen.add(node)
            for inp in self.inputs_of(node):
                if inp not in stopped and inp not in visited:
                    stack.append(inp)
        return seen

    def in_order(self, nodes: Iterable[ir.Node]) -> list[ir.Node]:
        """``nodes`` sorted in graph order (linear in the graph size)."""
        chosen = set(nodes)
        return [n for n in self.nodes if n in chosen]
