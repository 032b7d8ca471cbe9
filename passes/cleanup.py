"""``cleanup``: remove what does not contribute to the outputs, then sort.

What it removes, in every graph (main graph, ``If``/``Loop``/``Scan`` bodies, model-local functions):

- dead nodes: nodes none of whose outputs reach a graph output. Liveness is marked from the
  outputs backwards across scopes: a live node with subgraphs makes its subgraphs' outputs live,
  and a live node inside a subgraph makes the outer-scope values it reads live, so a value used
  only inside an ``If`` branch survives. A dead node's whole subgraph goes with it, and the
  outer-scope values that only it read become dead in the same run;
- ``Identity`` nodes, and ``Cast``/``CastLike`` nodes to the type their input already has, keeping
  every graph-output name: ``y = Identity(x)`` is bypassed when ``y`` is
  not a graph output; when ``y`` is one, ``x`` takes the name ``y`` if ``x`` is produced by a node of
  the same graph and is not itself an input, initializer or output of a graph; otherwise (``x`` a
  graph input, an initializer, another output or an outer-scope value) the Identity stays;
- initializers nothing reads (graph inputs with a default value are part of the signature and stay);
- model-local functions no node calls (directly or through other functions);

and it reduces the node count to what onnxsim/onnxslim reach (see :mod:`surgery.simplifications`):

- ``Constant`` nodes of the main graph become initializers (``fold_constants``);
- exact local rewrites in every graph: Reshape of Reshape, Squeeze/Unsqueeze pairs, Transpose
  pairs and identity Transposes, Mul/Div by 1 and Add/Sub of 0, Concat of one input, Reshape or
  Expand to the input's own shape, Pad by 0, whole Slices, Slices of a Slice (``simplify``);
- in the main graph, Conv+BatchNormalization, Conv+per-channel Add, 2-D MatMul+Add→Gemm and
  scalar-Mul→MatMul (the scale goes into the constant weight) fusions,
  which reorder float math only (``fuse``; ATC performs the same fusions when it compiles);

and finally sorts every graph topologically (stable: an already sorted graph keeps its order).

onnx-ir keeps shape/type information on the values themselves: duplicate ``value_info`` entries and
entries that name tensors which no longer exist are dropped when a model is read, so a cleaned model
is written with exactly one entry per live typed value. Graph inputs are never removed, even unused
ones: they are the model's signature.

Why not onnx-ir's own passes: ``RemoveUnusedNodesPass`` sweeps each graph in reverse and removes a
dead ``If`` with ``safe=True``, which detaches the ``If``'s inputs but not the outer-scope reads of
its branch nodes, so the producers of those values stay "used" forever (not idempotent, dead nodes
left); it also ignores subgraph initializers. ``IdentityEliminationPass`` renames ``x`` to ``y`` when
``x`` is another graph output (the first output's name disappears) or an outer-scope value (a
parent-graph tensor gets a branch output's name). ``TopologicalSortPass`` is used as is
(``Graph.sort`` sorts subgraphs too), with a change check that covers subgraphs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import onnx_ir as ir

from surgery.errors import PassError
from surgery.graph import (
    ONNX_DOMAINS,
    GraphLike,
    NameAllocator,
    forward_value,
    iter_graphs,
    subgraphs,
    walk,
)
from surgery.options import option
from surgery.pass_base import Numerics, SurgeryPass, SurgeryResult, declare_stats
from surgery.registry import register
from surgery.simplifications import (
    SimplifyStats,
    constants_to_initializers,
    simplify_graph,
)

__all__ = ["Cleanup", "forward_value", "inner_graph"]

logger = logging.getLogger(__name__)


def inner_graph(graph: GraphLike) -> ir.Graph:
    """The ``ir.Graph`` that nodes of ``graph`` point to (a Function wraps one)."""
    return graph.graph if isinstance(graph, ir.Function) else graph


def _is_identity(node: ir.Node) -> bool:
    """``Identity``, or a ``Cast``/``CastLike`` to the type its input already has (a no-op; e.g.
    what narrow-float64 leaves of ``Cast(to=double)`` → ``Cast(to=float)`` pairs)."""
    if (
        node.domain not in ONNX_DOMAINS
        or len(node.outputs) != 1
        or not node.inputs
        or node.inputs[0] is None
    ):
        return False
    op = node.op_type
    if op == "Identity":
        return len(node.inputs) == 1
    source = node.inputs[0].dtype
    if source is None:
        return False
    if op == "Cast" and len(node.inputs) == 1:
        to = node.attributes.get("to")
        return to is not None and not to.is_ref() and to.as_int() == int(source)
    if op == "CastLike" and len(node.inputs) == 2 and node.inputs[1] is not None:
        return node.inputs[1].dtype == source
    return False


def _detach(node: ir.Node) -> int:
    """Drop every input of ``node`` and of the nodes in its subgraphs; return the number of nodes."""
    count = 1
    for i in range(len(node.inputs)):
        node.replace_input_with(i, None)
    for sub in subgraphs(node):
        for inner in sub:
            count += _detach(inner)
    return count


class _Liveness:
    """Nodes and values that contribute to the outputs, marked across scopes and functions."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.nodes: set[ir.Node] = set()
        self.values: set[ir.Value] = set()
        self.functions: set[ir.OperatorIdentifier] = set()
        self._stack: list[ir.Value] = []

    def mark(self, roots: Iterable[ir.Value]) -> None:
        self._stack.extend(roots)
        while self._stack:
            value = self._stack.pop()
            if value in self.values:
                continue
            self.values.add(value)
            node = value.producer()
            if node is not None and node not in self.nodes:
                self._mark_node(node)

    def _mark_node(self, node: ir.Node) -> None:
        self.nodes.add(node)
        self._stack.extend(v for v in node.inputs if v is not None)
        for sub in subgraphs(node):
            self._stack.extend(sub.outputs)
        function = self.model.functions.get(node.op_identifier())
        if function is not None and function.identifier() not in self.functions:
            self.functions.add(function.identifier())
            self._stack.extend(function.outputs)


@register
class Cleanup(SurgeryPass):
    """Remove dead nodes, redundant Identity nodes, unused initializers and functions; sort topologically.

    Also folds Constant nodes into initializers, applies exact simplifications (Reshape/Transpose/
    Squeeze pairs, neutral Mul/Add, Concat of one, Pad by 0, Slice chains) and Conv+BN, Conv+Add,
    MatMul+Add, scalar Mul+MatMul fusions.
    Works in every graph: the main graph, If/Loop/Scan bodies and model-local functions. Values read
    from an outer scope by a subgraph count as used. Graph input and output names never change.
    """

    name = "cleanup"
    numerics = Numerics.EXACT
    statistics = declare_stats(
        constants_folded="Constant nodes turned into initializers",
        simplified="exact local rewrites applied (Reshape/Transpose/Squeeze pairs, x*1, x+0, ...)",
        fused="fusions applied (Conv+BatchNormalization, Conv+Add, MatMul+Add, scalar Mul+MatMul)",
        dead_nodes="nodes removed because nothing reads their outputs",
        identities="redundant Identity nodes removed",
        initializers="unused initializers removed",
        functions="unused model-local functions removed",
        sorted_graphs="graphs re-sorted topologically",
    )

    @dataclasses.dataclass(frozen=True)
    class Options:
        fold_constants: bool = option(
            True, help="turn Constant nodes of the main graph into initializers"
        )
        simplify: bool = option(
            True,
            help="exact local rewrites: Reshape/Transpose/Squeeze pairs, x*1, x+0, Concat of one",
        )
        fuse: bool = option(
            True,
            help="fuse Conv+BatchNormalization, Conv+bias Add, 2-D MatMul+Add (Gemm), a scalar Mul into the next MatMul weight",
        )

    #: Sweeps of the local rewrites at most (each is linear; chains resolve in one or two).
    MAX_SWEEPS = 8

    def call(self, model: ir.Model) -> SurgeryResult:
        renamed: dict[str, str] = {}
        # Identities first: torch shares equal weights through Identity nodes, which hide constants
        identities = self._remove_identities(model, renamed)
        shrink = self._shrink(model)
        stats = {
            "constants_folded": shrink.constants_folded,
            "simplified": shrink.simplified,
            "fused": shrink.fused,
            "dead_nodes": self._remove_dead(model),
            "identities": identities + self._remove_identities(model, renamed),
            "initializers": self._remove_unused_initializers(model),
        }
        stats["functions"] = self._remove_unused_functions(model)
        stats["sorted_graphs"] = self._sort(model)
        modified = any(stats.values())
        if modified:
            logger.info("cleanup: %s", ", ".join(f"{k}={v}" for k, v in stats.items() if v))
        return SurgeryResult(model, modified, stats=stats, renamed=renamed)

    # -- fewer nodes ---------------------------------------------------------------------------

    def _shrink(self, model: ir.Model) -> SimplifyStats:
        total = SimplifyStats()
        opts = self.options
        if opts.fold_constants:
            total.constants_folded = constants_to_initializers(model.graph)
        if not (opts.simplify or opts.fuse):
            return total
        names = NameAllocator(model)
        for _ in range(self.MAX_SWEEPS):
            changed = 0
            for graph, imports in [(sc.graph, sc.opsets) for sc in walk(model)]:
                opset = imports.get("", imports.get("ai.onnx", 0))
                found = simplify_graph(
                    graph,
                    opset,
                    names,
                    local=opts.simplify,
                    fuse=opts.fuse and graph is model.graph,
                )
                total.simplified += found.simplified
                total.fused += found.fused
                changed += found.simplified + found.fused
            if not changed:
                break
        return total

    # -- dead nodes ----------------------------------------------------------------------------

    def _remove_dead(self, model: ir.Model) -> int:
        live = _Liveness(model)
        live.mark(model.graph.outputs)
        removed = self._sweep(model.graph, live.nodes)
        # Functions that are still called: everything their outputs need is live. Functions that
        # are not called are removed whole by _remove_unused_functions.
        for function in model.functions.values():
            if function.identifier() in live.functions:
                removed += self._sweep(function, live.nodes)
        return removed

    def _sweep(self, graph: GraphLike, live: set[ir.Node]) -> int:
        dead = [node for node in graph if node not in live]
        removed = 0
        for node in dead:
            removed += _detach(node)
        if dead:
            graph.remove(dead)
        for node in graph:
            for sub in subgraphs(node):
                removed += self._sweep(sub, live)
        return removed

    # -- identities ----------------------------------------------------------------------------

    def _remove_identities(self, model: ir.Model, renamed: dict[str, str]) -> int:
        count = 0
        for graph in iter_graphs(model):
            for node in list(graph):
                if not _is_identity(node):
                    continue
                x, y = node.inputs[0], node.outputs[0]
                if x is None:
                    continue
                x_name, y_name = x.name, y.name
                if not forward_value(y, x):
                    continue
                if x.name and x.name != x_name and x_name:
                    renamed[x_name] = x.name  # x took the graph output's name
                elif y_name and x.name:
                    renamed[y_name] = x.name
                graph.remove(node, safe=True)
                count += 1
        return count

    # -- initializers --------------------------------------------------------------------------

    @staticmethod
    def _remove_unused_initializers(model: ir.Model) -> int:
        count = 0
        for graph in iter_graphs(model, functions=False):
            assert isinstance(graph, ir.Graph)
            for name, value in list(graph.initializers.items()):
                if value.uses() or value.is_graph_input() or value.is_graph_output():
                    continue
                del graph.initializers[name]
                count += 1
        return count

    # -- functions -----------------------------------------------------------------------------

    @staticmethod
    def _remove_unused_functions(model: ir.Model) -> int:
        if not model.functions:
            return 0
        used: set[ir.OperatorIdentifier] = set()
        stack: list[GraphLike] = [model.graph]
        while stack:
            graph = stack.pop()
            for node in graph:
                stack.extend(subgraphs(node))
                key = node.op_identifier()
                function = model.functions.get(key)
                if function is not None and key not in used:
                    used.add(key)
                    stack.append(function)
        unused = [key for key in model.functions if key not in used]
        for key in unused:
            del model.functions[key]
        return len(unused)

    # -- topological order ---------------------------------------------------------------------

    def _sort(self, model: ir.Model) -> int:
        before = {id(g): (g, list(g)) for g in iter_graphs(model)}
        try:
            model.graph.sort()  # sorts the subgraphs too
            for function in model.functions.values():
                function.sort()
        except ValueError as exc:
            raise PassError(
                f"cannot sort the graph topologically: {exc}", pass_name=self.name
            ) from None
        changed = 0
        for graph, nodes in before.values():
            after = list(graph)
            if len(after) != len(nodes) or any(
                a is not b for a, b in zip(after, nodes, strict=True)
            ):
                changed += 1
        return changed
