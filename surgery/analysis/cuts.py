"""Cuts through a graph: the nodes between tensor names, and the boundary before post-processing.

Both are reachability questions answered in time linear in the graph:

- :func:`slice_between` walks back from the wanted outputs and stops at the given inputs. It fails
  with an :class:`~surgery.errors.InputError` naming a path when an output can be reached from a
  graph input that is not among the given inputs: the cut does not separate them.
- :func:`postprocess_boundary` marks the *tail*: every node downstream of a hostile node (see
  :mod:`surgery.analysis.dependence`). The boundary is every tensor produced outside the tail and
  read inside it (pitfall: a legacy torch export of a YOLO head with NMS has nine, shape scalars
  included, not just the two NMS inputs). Constant-only computations (values that depend on no
  graph input) never cross: each side recomputes them.
- :func:`min_bytes_tail` then moves the cut upstream where fewer bytes cross: a minimum s-t cut
  (networkx max-flow) on the tensor graph, each tensor split into an in and an out vertex joined by
  an edge whose capacity is its size in bytes (from its static shape), the producer and consumer
  edges infinite, with infinite edges back from each consumer to the tensor's in vertex and from
  there to its producer (so the head stays closed under producers and the tail under consumers). The
  data-dependent tail is tied to the sink; the graph inputs, the nodes reading them and every
  weight-carrying compute op (Conv, MatMul, Gemm, recurrent ops …: the NPU's work) to the source. Of the minimum cuts it takes
  the one nearest the tail (the most nodes stay on the NPU).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.analysis.dataflow import Dataflow
from surgery.analysis.dependence import Dependence, FunctionMap, Hostile, analyse
from surgery.errors import InputError
from surgery.graph import GraphLike

__all__ = [
    "HEAD_OPS",
    "Boundary",
    "NothingToSplit",
    "Slice",
    "boundary_from_names",
    "constant_nodes",
    "min_bytes_tail",
    "postprocess_boundary",
    "slice_between",
    "tensor_bytes",
]

logger = logging.getLogger(__name__)


class NothingToSplit(InputError):
    """The graph has no hostile node computing an output: no post-processing to split off."""


@dataclasses.dataclass
class Slice:
    """The nodes computing ``outputs`` from ``inputs`` and the constants they read."""

    inputs: list[ir.Value]
    outputs: list[ir.Value]
    nodes: list[ir.Node]
    """In graph order."""
    initializers: list[ir.Value]
    unused_inputs: list[ir.Value]
    """Given inputs that no output needs (kept as inputs; reported)."""


def _path(flow: Dataflow, parent: dict[ir.Value, ir.Value], start: ir.Value) -> str:
    chain = [start]
    while chain[-1] in parent and len(chain) < 64:
        chain.append(parent[chain[-1]])
    names = [v.name or "?" for v in chain]
    if len(names) > 6:
        names = [*names[:3], "…", *names[-2:]]
    return " → ".join(names)


def slice_between(flow: Dataflow, inputs: Sequence[ir.Value], outputs: Sequence[ir.Value]) -> Slice:
    """The part of ``flow.graph`` that computes ``outputs`` from ``inputs``.

    Raises:
        InputError: when an output depends on a graph input (without an initializer) that is not
            among ``inputs``: the cut does not separate the inputs from the outputs. The message
            names the input and a path to the output.
    """
    if not outputs:
        raise InputError("give at least one output tensor to extract")
    stop = set(inputs)
    nodes: set[ir.Node] = set()
    initializers: dict[str, ir.Value] = {}
    visited: set[ir.Value] = set()
    parent: dict[ir.Value, ir.Value] = {}  # value → the value that needed it (towards an output)
    reached_inputs: set[ir.Value] = set()
    stack = list(outputs)
    while stack:
        value = stack.pop()
        if value in visited:
            continue
        visited.add(value)
        if value in stop:
            reached_inputs.add(value)
            continue
        node = flow.producer(value)
        if node is None:
            if value.is_initializer():
                if value.name:
                    initializers[value.name] = value
                continue
            if value.is_graph_input():
                raise InputError(
                    f"the cut does not separate the inputs from the outputs: graph input '{value.name}' reaches "
                    f"an output without passing a given input ({_path(flow, parent, value)}); "
                    f"add '{value.name}' or a tensor on that path to the inputs"
                )
            # a value captured from an enclosing scope (extracting inside a subgraph) or dangling
            raise InputError(
                f"tensor '{value.name}' is needed ({_path(flow, parent, value)}) but is produced outside "
                "the graph being cut; add it to the inputs"
            )
        if node in nodes:
            continue
        nodes.add(node)
        for inp in flow.inputs_of(node):
            if inp not in visited:
                parent.setdefault(inp, value)
                stack.append(inp)
    ordered = flow.in_order(nodes)
    unused = [v for v in inputs if v not in reached_inputs]
    source_order = getattr(flow.graph, "initializers", {})
    inits = [v for name, v in source_order.items() if name in initializers]
    inits += [v for name, v in initializers.items() if name not in source_order]
    return Slice(list(inputs), list(outputs), ordered, inits, unused)


def constant_nodes(flow: Dataflow) -> set[ir.Node]:
    """Nodes whose outputs depend on no graph input (only on initializers and attributes)."""
    variable: set[ir.Value] = set(flow.graph.inputs)
    const: set[ir.Node] = set()
    for node in flow.nodes:
        if any(
            v in variable or (v.producer() is None and not v.is_initializer())
            for v in flow.inputs_of(node)
        ):
            variable.update(node.outputs)
        elif node.op_type in (
            "RandomNormal",
            "RandomUniform",
            "RandomNormalLike",
            "RandomUniformLike",
            "Multinomial",
            "Bernoulli",
        ):
            variable.update(node.outputs)  # not reproducible: never duplicated on both sides
        else:
            const.add(node)
    return const


@dataclasses.dataclass
class Boundary:
    """Where a model splits into an NPU head and a CPU tail."""

    tensors: list[ir.Value]
    """Produced by the head, read by the tail, in graph order of their producers."""
    tail_nodes: set[ir.Node]
    """Nodes of the tail that are not constant-only (those are duplicated where needed)."""
    tail_inputs: list[ir.Value]
    """Original graph inputs the tail reads directly."""
    hostile: list[Hostile]
    """The hostile nodes found (empty for a user-given boundary)."""
    dependence: Dependence | None = None
    naive: list[ir.Value] = dataclasses.field(default_factory=list)
    """For an automatic boundary: the tensors crossing into the data-dependent region itself
    (before the minimum cut moved the boundary upstream)."""
    sizes: dict[ir.Value, int | None] = dataclasses.field(default_factory=dict)
    """Bytes of each boundary tensor (None: unknown), from annotations or shape inference."""

    @property
    def names(self) -> list[str]:
        return [v.name or "" for v in self.tensors]

    @property
    def bytes(self) -> int | None:
        """Bytes crossing from the head to the tail (None when a boundary tensor's size is unknown)."""
        sizes = [self.sizes.get(v) for v in self.tensors]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)


#: Op types that do the NPU's work: an automatic boundary never moves them into the CPU tail.
HEAD_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "ConvInteger",
        "QLinearConv",
        "DeformConv",
        "MatMul",
        "MatMulInteger",
        "QLinearMatMul",
        "Gemm",
        "Einsum",
        "LSTM",
        "GRU",
        "RNN",
        "Attention",
        "MultiHeadAttention",
    }
)

#: How far (producer steps) above the data-dependent region the minimum cut looks.
MAX_CUT_DEPTH = 256

#: Capacity of a tensor whose size is unknown: cut only when nothing of known size separates.
_UNKNOWN_BYTES = 1 << 40


def tensor_bytes(
    value: ir.Value,
    shape: ir.Shape | None = None,
    dtype: ir.DataType | None = None,
    *,
    shared: Collection[str] = (),
) -> int | None:
    """The size of ``value`` in bytes from its static shape, or None when its rank or a dim is
    unknown. A symbolic dim named in ``shared`` (a graph input's dim, like the batch) counts once,
    as a factor every tensor carrying it shares. ``shape`` and ``dtype`` replace the value's own
    (e.g. from shape inference)."""
    shape = value.shape if shape is None else shape
    dtype = value.dtype if dtype is None else dtype
    if shape is None:
        return None
    count = 1
    for dim in shape:
        if isinstance(dim, int):
            if dim < 0:
                return None
            count *= dim
        elif isinstance(dim, ir.SymbolicDim) and dim.value is not None and dim.value in shared:
            continue
        else:
            return None
    itemsize = dtype.itemsize if dtype is not None else 4
    return int(np.ceil(count * itemsize))


def min_bytes_tail(
    flow: Dataflow,
    tail: set[ir.Node],
    const: set[ir.Node],
    sizes: Mapping[ir.Value, int | None] | None = None,
) -> set[ir.Node]:
    """The tail (a superset of ``tail``) whose boundary carries the fewest bytes.

       ``tail`` is closed under consumers (everything downstream of a data-dependent node); the
       result adds the producers upstream of it that it pays to run on the CPU. Graph inputs and
    :data:`HEAD_OPS` nodes (with their producers) stay in the head. ``sizes`` gives tensor
       sizes in bytes where the annotations do not (default :func:`tensor_bytes`). Only the nodes at
       most :data:`MAX_CUT_DEPTH` producer steps above ``tail`` may move (the rest stays in the head);
       the flow network has one vertex per such node and two per tensor they exchange.
    """
    sizes = sizes or {}
    shared = input_dim_names(flow.graph)
    import networkx as nx

    inf = float("inf")
    network = nx.DiGraph()
    source, sink = ("source",), ("sink",)

    def both(u: Any, v: Any) -> None:
        network.add_edge(u, v, capacity=inf)
        network.add_edge(v, u, capacity=inf)

    # the nodes the cut may move: at most MAX_CUT_DEPTH producer steps above the tail (post-
    # processing is short; everything further up stays in the head, and the network stays small)
    region: set[ir.Node] = set()
    frontier = {
        p
        for n in tail
        for v in flow.inputs_of(n)
        if (p := flow.producer(v)) is not None and p not in tail and p not in const
    }
    for _ in range(MAX_CUT_DEPTH):
        frontier -= region
        if not frontier:
            break
        region |= frontier
        frontier = {
            p
            for n in frontier
            for v in flow.inputs_of(n)
            if (p := flow.producer(v)) is not None and p not in const and p not in region
        }
    for node in [*flow.in_order(region), *flow.in_order(tail)]:
        consumer: Any = sink if node in tail else node
        if node in region and (
            node.op_type in HEAD_OPS
            or any(v.is_graph_input() and not v.is_initializer() for v in node.inputs if v)
        ):
            # the NPU's work stays on the NPU, and so do the nodes reading the graph inputs: a cut
            # through the inputs would move the whole model to the CPU
            network.add_edge(source, node, capacity=inf)
        for value in flow.inputs_of(node):
            producer = flow.producer(value)
            if producer is None:
                if not value.is_graph_input():
                    continue  # an initializer or a captured outer value: free on both sides
            elif producer in const or producer in tail:
                continue
            tin, tout = ("in", id(value)), ("out", id(value))
            if tin not in network:
                size = sizes[value] if value in sizes else tensor_bytes(value, shared=shared)
                network.add_edge(tin, tout, capacity=_UNKNOWN_BYTES if size is None else size)
                network.add_edge(tout, tin, capacity=inf)
                both(producer if producer in region else source, tin)
            # the consumer reads the tensor from the tail side (tout) or, in the head, where it is made
            # (tin: a head consumer keeps the producer in the head; its sibling consumers stay free)
            network.add_edge(tout, consumer, capacity=inf)
            if consumer is not sink:
                network.add_edge(consumer, tin, capacity=inf)
    if sink not in network or source not in network:
        return set(tail)
    _, flows = nx.maximum_flow(network, source, sink, flow_func=nx.algorithms.flow.preflow_push)
    # the vertices that can still reach the sink in the residual network: the tail nearest the sink
    reach = {sink}
    stack = [sink]
    while stack:
        v = stack.pop()
        # u reaches v in the residual network: spare capacity on u → v, or flow on v → u to undo
        spare = [u for u in network.predecessors(v) if network[u][v]["capacity"] - flows[u][v] > 0]
        undo = [u for u in network.successors(v) if flows[v][u] > 0]
        for u in spare + undo:
            if u not in reach:
                reach.add(u)
                stack.append(u)
    return {n for n in region if n in reach} | set(tail)


def _order_values(flow: Dataflow, values: Iterable[ir.Value]) -> list[ir.Value]:
    def key(v: ir.Value) -> tuple[int, int]:
        node = flow.producer(v)
        if node is None:
            return (-1, list(flow.graph.inputs).index(v) if v.is_graph_input() else 0)
        return (flow.position[node], v.index() or 0)

    return sorted(set(values), key=key)


def _crossing(
    flow: Dataflow, tail: set[ir.Node], const: set[ir.Node]
) -> tuple[list[ir.Value], list[ir.Value]]:
    crossing: set[ir.Value] = set()
    tail_inputs: set[ir.Value] = set()
    for node in tail:
        for value in flow.inputs_of(node):
            producer = flow.producer(value)
            if producer is None:
                if value.is_graph_input():
                    tail_inputs.add(value)
                continue
            if producer in tail or producer in const:
                continue
            crossing.add(value)
    return _order_values(flow, crossing), _order_values(flow, tail_inputs)


def postprocess_boundary(
    graph: ir.Graph,
    *,
    hostile_ops: Collection[str] = (),
    functions: FunctionMap | None = None,
    minimize: bool = True,
    model: ir.Model | None = None,
) -> Boundary:
    """The boundary in front of the first data-dependent or NPU-hostile node (by reachability),
    moved upstream to the cut with the fewest bytes (:func:`min_bytes_tail`) unless ``minimize``
    is false. With ``model`` (the model of ``graph``), shape inference sizes the tensors the
    annotations leave unknown.

    Raises:
        InputError: when the graph has no hostile node (nothing to split off).
    """
    flow = Dataflow(graph)
    dep = analyse(graph, hostile_ops=hostile_ops, flow=flow, functions=functions)
    const = constant_nodes(flow)
    live = flow.ancestors(graph.outputs)
    seeds = [h for h in dep.hostile if h.node in live and h.node not in const]
    if not seeds:
        raise NothingToSplit(
            "no data-dependent or NPU-hostile op (NonMaxSuppression, NonZero, Unique, TopK with a data-dependent k, "
            "Loop …) computes an output of the main graph, so there is no post-processing to split off; "
            "give the boundary tensors"
        )
    tail = (flow.descendants(h.node for h in seeds) & live) - const
    naive, _ = _crossing(flow, tail, const)
    sizes = _inferred_sizes(model, flow, tail, const) if model is not None else {}
    if minimize:
        tail = min_bytes_tail(flow, tail, const, sizes)
    tensors, tail_inputs = _crossing(flow, tail, const)
    shared = input_dim_names(graph)
    return Boundary(
        tensors,
        tail,
        tail_inputs,
        seeds,
        dep,
        naive,
        {v: sizes[v] if v in sizes else tensor_bytes(v, shared=shared) for v in tensors},
    )


def _inferred_sizes(
    model: ir.Model, flow: Dataflow, tail: set[ir.Node], const: set[ir.Node]
) -> dict[ir.Value, int | None]:
    """Sizes of the head's tensors the annotations leave unknown, from onnx shape inference."""
    from surgery.analysis.tensor_types import infer_types

    shared = input_dim_names(flow.graph)
    head = [n for n in flow.nodes if n not in tail and n not in const]
    unknown = [
        v for n in head for v in n.outputs if tensor_bytes(v, shared=shared) is None and v.name
    ]
    if not unknown:
        return {}
    inferred = infer_types(model, unknown, flow)
    sizes: dict[ir.Value, int | None] = {}
    for value in unknown:
        if value.name in inferred:
            tp, shape = inferred[value.name]
            sizes[value] = tensor_bytes(value, shape, getattr(tp, "dtype", None), shared=shared)
    return sizes


def input_dim_names(graph: GraphLike) -> set[str]:
    """Names of the symbolic dims of the graph inputs (the batch …)."""
    return {
        d.value
        for v in graph.inputs
        if v.shape is not None
        for d in v.shape
        if isinstance(d, ir.SymbolicDim) and d.value is not None
    }


def boundary_from_names(graph: ir.Graph, names: Sequence[str]) -> Boundary:
    """The split given by user boundary tensors: the tail is everything downstream of them.

    Raises:
        InputError: for unknown names, or when the tail also needs tensors of the head that are
            not in the boundary (the names are listed).
    """
    flow = Dataflow(graph)
    values = flow.resolve(names, role="boundary tensor")
    for v in values:
        if v.is_graph_output() and not flow.consumers(v):
            logger.info("boundary tensor %s is a graph output that nothing reads", v.name)
    const = constant_nodes(flow)
    tail = flow.descendants(values) - const
    produced_in_tail = [v for v in values if flow.producer(v) in tail]
    if produced_in_tail:
        listed = ", ".join(f"'{v.name}'" for v in produced_in_tail)
        verb = "is" if len(produced_in_tail) == 1 else "are"
        raise InputError(
            f"boundary tensors depend on each other: {listed} {verb} computed from another boundary tensor; "
            "give only the first ones"
        )
    crossing, tail_inputs = _crossing(flow, tail, const)
    given = set(values)
    extra = [v for v in crossing if v not in given]
    if extra:
        raise InputError(
            "the boundary does not separate the model: the tail also reads "
            + ", ".join(f"'{v.name}'" for v in extra[:10])
            + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
            + " from the head; add them to the boundary"
        )
    unread = [v for v in values if v not in crossing]
    if unread:
        # a boundary tensor nothing downstream reads (e.g. an original output): still passed on
        logger.info(
            "boundary tensors not read by the tail: %s", ", ".join(v.name or "?" for v in unread)
        )
    return Boundary(_order_values(flow, values), tail, tail_inputs, [], None)
