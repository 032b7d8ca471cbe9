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
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable, Sequence

import onnx_ir as ir

from surgery.analysis.dataflow import Dataflow
from surgery.analysis.dependence import Dependence, FunctionMap, Hostile, analyse
from surgery.errors import InputError

__all__ = ["Boundary", "NothingToSplit", "Slice", "boundary_from_names", "constant_nodes", "postprocess_boundary", "slice_between"]

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
        if any(v in variable or (v.producer() is None and not v.is_initializer()) for v in flow.inputs_of(node)):
            variable.update(node.outputs)
        elif node.op_type in ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"):
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

    @property
    def names(self) -> list[str]:
        return [v.name or "" for v in self.tensors]


def _order_values(flow: Dataflow, values: Iterable[ir.Value]) -> list[ir.Value]:
    def key(v: ir.Value) -> tuple[int, int]:
        node = flow.producer(v)
        if node is None:
            return (-1, list(flow.graph.inputs).index(v) if v.is_graph_input() else 0)
        return (flow.position[node], v.index() or 0)

    return sorted(set(values), key=key)


def _crossing(flow: Dataflow, tail: set[ir.Node], const: set[ir.Node]) -> tuple[list[ir.Value], list[ir.Value]]:
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
    graph: ir.Graph, *, hostile_ops: Collection[str] = (), functions: FunctionMap | None = None
) -> Boundary:
    """The boundary in front of the first data-dependent or NPU-hostile node (by reachability).

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
    tensors, tail_inputs = _crossing(flow, tail, const)
    return Boundary(tensors, tail, tail_inputs, seeds, dep)


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
        logger.info("boundary tensors not read by the tail: %s", ", ".join(v.name or "?" for v in unread))
    return Boundary(_order_values(flow, values), tail, tail_inputs, [], None)
