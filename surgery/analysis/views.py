"""networkx views of a graph, for analysis and debugging (``nx.has_path``, dominators, drawing).

:func:`node_graph` has one vertex per node (keyed by node name, or ``#<index>`` when unnamed) and an
edge per producer → consumer pair, labelled with the tensors passed; :func:`tensor_graph` has one
vertex per tensor name and an edge from every input of a node to each of its outputs. Subgraph
captures count as inputs of the node that owns the subgraph. Both are built in linear time.
"""

from __future__ import annotations

import networkx as nx
import onnx_ir as ir

from surgery.analysis.dataflow import Dataflow
from surgery.graph import GraphLike

__all__ = ["node_graph", "node_key", "tensor_graph"]


def node_key(node: ir.Node, index: int) -> str:
    return node.name or f"#{index}"


def node_graph(graph: GraphLike, flow: Dataflow | None = None) -> nx.DiGraph:
    """A DiGraph of nodes; vertex attributes ``op_type`` and ``node``; edge attribute ``tensors``."""
    flow = flow or Dataflow(graph)
    g = nx.DiGraph()
    keys: dict[ir.Node, str] = {}
    for i, node in enumerate(flow.nodes):
        key = node_key(node, i)
        keys[node] = key
        g.add_node(key, op_type=node.op_type, node=node)
    for node in flow.nodes:
        for value in flow.inputs_of(node):
            producer = flow.producer(value)
            if producer is None:
                continue
            a, b = keys[producer], keys[node]
            if g.has_edge(a, b):
                g.edges[a, b]["tensors"].append(value.name)
            else:
                g.add_edge(a, b, tensors=[value.name])
    return g


def tensor_graph(graph: GraphLike, flow: Dataflow | None = None) -> nx.DiGraph:
    """A DiGraph of tensor names; edges from each node input to each node output (attribute ``node``)."""
    flow = flow or Dataflow(graph)
    g = nx.DiGraph()
    for name in flow.values:
        g.add_node(name)
    for i, node in enumerate(flow.nodes):
        key = node_key(node, i)
        for out in node.outputs:
            if not out.name:
                continue
            for value in flow.inputs_of(node):
                if value.name:
                    g.add_edge(value.name, out.name, node=key)
    return g
