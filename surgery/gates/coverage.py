"""Which ``If`` branches and ``Loop`` bodies a sample executes, nested ones included.

A branch's execution is observed, not guessed: the model is run with a marker per branch. Inside
the branch a ``Constant`` true is added as an extra branch output (false from the other branch of
an ``If``), the ``If`` node gets an extra output, and a ``Loop`` an extra loop-carried bool
(``Or`` of its value so far and the marker; false before the first iteration). A marker of a
nested branch is carried out through every enclosing ``If``/``Loop`` the same way, up to a graph
output. The markers are added to a copy of the model's light proto (the weights are never copied),
so the model under test is untouched and one session runs every sample.

Targets are named by the same paths as :mod:`surgery.gates.fingerprint` uses (``graph/If
'outer'.then_branch/If 'inner'.else_branch``), so a changed subgraph maps onto its target.
Branches inside ``Scan`` bodies and functions are not tracked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import onnx
import onnx_ir as ir
from onnx import TensorProto
from onnx import helper as oh

from surgery.graph import is_onnx_domain
from surgery.model_io import LightProto

__all__ = ["MARKER", "Target", "branch_targets", "instrument"]

MARKER = "__surgery_cov"
_KINDS = {"If": ("then_branch", "else_branch"), "Loop": ("body",)}
_WHAT = {"then_branch": "then-branch", "else_branch": "else-branch", "body": "body"}


@dataclasses.dataclass(frozen=True)
class Target:
    """One ``If`` branch or ``Loop`` body: its path and the chain of (op, node index, name, attr) to it."""

    path: str
    chain: tuple[tuple[str, int, str, str], ...]

    @property
    def label(self) -> str:
        parts = [f"{_WHAT[attr]} of {op} '{name}'" for op, _, name, attr in reversed(self.chain)]
        return " in ".join(parts)

    @property
    def node_name(self) -> str:
        return self.chain[-1][2]

    @property
    def attr(self) -> str:
        return self.chain[-1][3]

    @property
    def parent(self) -> Target | None:
        if len(self.chain) == 1:
            return None
        return Target(self.path.rsplit("/", 1)[0], self.chain[:-1])


def _walk(graph: ir.Graph, path: str, chain: tuple) -> Iterator[Target]:
    for index, node in enumerate(graph):
        attrs = _KINDS.get(node.op_type) if is_onnx_domain(node.domain) else None
        if not attrs:
            continue
        for attr in attrs:
            a = node.attributes.get(attr)
            if a is None or a.type is not ir.AttributeType.GRAPH:
                continue
            sub_path = f"{path}/{node.op_type} '{node.name or index}'.{attr}"
            sub_chain = (*chain, (node.op_type, index, node.name or str(index), attr))
            yield Target(sub_path, sub_chain)
            yield from _walk(a.as_graph(), sub_path, sub_chain)


def branch_targets(model: ir.Model) -> list[Target]:
    """Every ``If`` branch and ``Loop`` body of the main graph and of their subgraphs (pre-order)."""
    return list(_walk(model.graph, "graph", ()))


def _const(name: str, value: bool) -> onnx.NodeProto:
    return oh.make_node(
        "Constant",
        [],
        [name],
        name=name,
        value=oh.make_tensor(name + "_v", TensorProto.BOOL, [], [value]),
    )


def _graph_attr(node: onnx.NodeProto, attr: str) -> onnx.GraphProto:
    return next(a.g for a in node.attribute if a.name == attr)


def _carry(graph: onnx.GraphProto, node: onnx.NodeProto, attr: str, inner: str, tag: str) -> str:
    """Carry the bool ``inner`` (a value of ``node``'s subgraph ``attr``) out of ``node``.

    Returns the name of the new value in ``graph`` (``node``'s graph) that is true when the
    subgraph ran and ``inner`` was true.
    """
    out = f"{tag}_out"
    if node.op_type == "If":
        other = "else_branch" if attr == "then_branch" else "then_branch"
        _graph_attr(node, attr).output.append(
            oh.make_tensor_value_info(inner, TensorProto.BOOL, [])
        )
        other_graph = _graph_attr(node, other)
        other_graph.node.append(_const(f"{tag}_false", False))
        other_graph.output.append(oh.make_tensor_value_info(f"{tag}_false", TensorProto.BOOL, []))
        node.output.append(out)
        return out
    # Loop: body inputs (iter, cond, carried...), outputs (cond, carried..., scans...)
    while len(node.input) < 2:
        node.input.append("")
    body = _graph_attr(node, "body")
    carried = len(node.input) - 2
    state_in, state_out = f"{tag}_in", f"{tag}_next"
    body.input.append(oh.make_tensor_value_info(state_in, TensorProto.BOOL, []))
    body.node.append(oh.make_node("Or", [state_in, inner], [state_out], name=state_out))
    body.output.insert(1 + carried, oh.make_tensor_value_info(state_out, TensorProto.BOOL, []))
    start = f"{tag}_start"  # an initializer of the Loop's graph: no node order to keep
    graph.initializer.append(oh.make_tensor(start, TensorProto.BOOL, [], [False]))
    node.input.append(start)
    node.output.insert(carried, out)
    return out


def _resolve(
    graph: onnx.GraphProto, chain: Sequence[tuple[str, int, str, str]]
) -> list[tuple[onnx.GraphProto, int, str]]:
    """(containing graph, node index, attr) for each level of ``chain``."""
    levels = []
    for _, index, _, attr in chain:
        levels.append((graph, index, attr))
        graph = _graph_attr(graph.node[index], attr)
    return levels


def instrument(
    light: LightProto, targets: Sequence[Target], expose: Sequence[ir.Value] = ()
) -> tuple[LightProto, dict[str, Target]]:
    """A light proto of the same model with a marker output per target (and ``expose`` as outputs).

    Returns it and the map marker output name → target. The weights are shared with ``light``.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(light.proto)
    markers: dict[str, Target] = {}
    for number, target in enumerate(targets):
        tag = f"{MARKER}{number}"
        levels = _resolve(proto.graph, target.chain)
        # innermost: a constant true inside the target subgraph
        innermost_graph, index, attr = levels[-1]
        inner_graph = _graph_attr(innermost_graph.node[index], attr)
        value = f"{tag}_l{len(levels)}_true"
        inner_graph.node.append(_const(value, True))
        for depth in range(len(levels) - 1, -1, -1):
            graph, index, attr = levels[depth]
            value = _carry(graph, graph.node[index], attr, value, f"{tag}_l{depth}")
        proto.graph.output.append(oh.make_tensor_value_info(value, TensorProto.BOOL, []))
        markers[value] = target
    names = {o.name for o in proto.graph.output}
    for v in expose:
        if v.name and v.name not in names:
            if v.dtype is None:  # untyped: ORT infers it (a type of UNDEFINED it refuses)
                info = onnx.ValueInfoProto()
                info.name = v.name
                proto.graph.output.append(info)
            else:
                proto.graph.output.append(oh.make_tensor_value_info(v.name, v.dtype.value, None))
            names.add(v.name)
    out = LightProto.__new__(LightProto)
    out.tensors, out.values, out.proto = light.tensors, light.values, proto
    return out, markers
