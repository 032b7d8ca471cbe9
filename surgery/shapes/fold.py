"""One folding sweep over every graph: the constant-propagation half of ``make-static``.

A :class:`Folder` walks each graph once in topological order and

- replaces ``Shape``/``Size`` of a tensor whose shape is static by a constant (``Shape``'s
  ``start``/``end`` honoured);
- evaluates every deterministic standard op whose inputs are all constant, unless the result would
  grow the model by more than ``size_limit`` bytes net (the constants it frees are subtracted;
  inputs larger than the limit are never read);
- replaces an ``If`` whose condition is constant by the nodes of its taken branch (nested ``If``s
  are visited right after, outer-scope references stay as they are, each ``If`` output keeps its
  name);
- optionally unrolls a ``Loop`` with a constant trip count and no data-dependent exit, and a
  ``Scan`` whose scan inputs have a static length;
- infers the output shapes of a node it cannot fold when they are unknown and its inputs are static,
  so a chain ``Shape → … → Reshape → Shape → …`` resolves in one sweep, not one sweep per link;
- removes whatever became dead, cascading to the producers.

Folding is deferred: a folded node's results go into the constant cache and the node stays put
until the end of its graph's sweep (or until a size decision needs the graph exact). Then the
folded nodes are finalized last to first: a consumer goes before its producer, so a chain
``Shape → Gather → … → Concat`` materializes only the constant that is still read by an unfolded
node, a graph output or a subgraph, and the intermediate results never touch the graph.

Inside ``Loop``/``Scan`` bodies, ``Shape``/``Size`` of values that depend on the body's inputs are
never folded: onnx infers a body from the loop-carried values' first-iteration shapes.

Everything is linear in the number of nodes. Folded constants are main-graph initializers; inside
subgraphs and functions they are ``Constant`` nodes.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir._cloner import Cloner

from surgery.graph import ONNX_DOMAINS, GraphLike, NameAllocator, const_value, iter_graphs
from surgery.shapes.dims import is_known_dim
from surgery.shapes.evaluate import evaluate_node
from surgery.shapes.infer import has_schema, infer_control_flow, infer_node, is_static_shape

__all__ = ["DEFAULT_KEEP_OPS", "FoldStats", "Folder"]

logger = logging.getLogger(__name__)

_NON_DETERMINISTIC = frozenset(
    {
        "RandomUniform",
        "RandomNormal",
        "RandomUniformLike",
        "RandomNormalLike",
        "Multinomial",
        "Bernoulli",
        "Dropout",
    }
)
#: Ops never folded by default: folding them would erase information the compiler needs.
DEFAULT_KEEP_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_GROWING_OPS = frozenset({"ConstantOfShape", "Expand", "Tile", "Range"})
_NOT_FOLDED = object()


@dataclasses.dataclass
class FoldStats:
    """Counters of one or more sweeps."""

    folded_nodes: int = 0
    shape_ops_folded: int = 0
    ifs_inlined: int = 0
    loops_unrolled: int = 0
    scans_unrolled: int = 0
    nodes_inferred: int = 0
    removed_nodes: int = 0
    bytes_added: int = 0
    bytes_freed: int = 0
    skipped_for_size: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def size_delta(self) -> int:
        return self.bytes_added - self.bytes_freed


def _used(value: ir.Value) -> bool:
    """Whether ``value`` has a consumer, in O(1) (``uses()`` copies every use: shared constants have thousands)."""
    uses = getattr(value, "_uses", None)
    return bool(uses) if uses is not None else bool(value.uses())


def _subgraph_attrs(node: ir.Node) -> list[ir.Attr]:
    attrs = node.attributes
    if not attrs:
        return []
    return [
        a
        for a in getattr(attrs, "data", attrs).values()
        if (a.type is ir.AttributeType.GRAPH or a.type is ir.AttributeType.GRAPHS)
        and not a.is_ref()
    ]


def _tensor_nbytes(value: ir.Value) -> int:
    tensor = value.const_value
    if tensor is not None:
        return int(tensor.nbytes)
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant":
        attr = producer.attributes.get("value")
        if attr is not None and not attr.is_ref():
            return int(attr.as_tensor().nbytes)
        return 8 * max(1, len(producer.attributes))
    return 0


class Folder:
    """Folds constants and shape computations in a model, in place (see the module docstring)."""

    def __init__(
        self,
        model: ir.Model,
        *,
        size_limit: int = 1 << 20,
        inline_if: bool = True,
        unroll_loops: bool = False,
        max_unroll: int = 64,
        keep_ops: frozenset[str] = DEFAULT_KEEP_OPS,
        infer_nodes: bool = True,
    ) -> None:
        self.model = model
        self.opsets = dict(model.opset_imports)
        if "" not in self.opsets and "ai.onnx" in self.opsets:
            self.opsets[""] = self.opsets["ai.onnx"]
        self.size_limit = size_limit
        self.inline_if = inline_if
        self.unroll_loops = unroll_loops
        self.max_unroll = max_unroll
        self.keep_ops = keep_ops
        self.infer_nodes = infer_nodes
        self.stats = FoldStats()
        self.names = NameAllocator(model)
        self._consts: dict[ir.Value, Any] = {}
        self._oversized: set[ir.Value] = set()  # constants larger than size_limit: never read
        self._variant: set[ir.Value] = set()  # loop-body values whose shape may vary per iteration
        # folded nodes not yet replaced, one list per graph being swept (outermost first)
        self._pending: list[tuple[GraphLike, list[tuple[ir.Node, list[np.ndarray]]]]] = []
        self._changed = False
        self._structure_changed = False

    # ------------------------------------------------------------------ constants
    def constant(self, value: ir.Value | None) -> np.ndarray | None:
        """The array behind ``value`` if it is a constant no larger than ``size_limit``."""
        if value is None:
            return None
        cached = self._consts.get(value, None)
        if cached is not None:
            return None if cached is _NOT_FOLDED else cached
        array: Any = _NOT_FOLDED
        if (value.const_value is not None and not value.is_graph_input()) or (
            (p := value.producer()) is not None
            and p.op_type == "Constant"
            and p.domain in ONNX_DOMAINS
        ):
            if _tensor_nbytes(value) <= self.size_limit:
                found = const_value(value)
                if found is not None:
                    array = found
            else:
                self._oversized.add(value)
        self._consts[value] = array
        return None if array is _NOT_FOLDED else array

    def _opset(self, node: ir.Node) -> int:
        if node.version is not None:
            return node.version
        return self.opsets.get(node.domain if node.domain != "ai.onnx" else "", 0)

    # ------------------------------------------------------------------ driving
    def sweep(self) -> bool:
        """One pass over every graph and function. Returns whether anything changed."""
        self._changed = False
        self._sweep(self.model.graph)
        for function in list(self.model.functions.values()):
            self._sweep(function)
        if self._structure_changed:
            self._uniquify_names()
            self._structure_changed = False
        return self._changed

    def _sweep(self, graph: GraphLike) -> None:
        pending: list[tuple[ir.Node, list[np.ndarray]]] = []
        self._pending.append((graph, pending))
        try:
            self._walk(graph)
        finally:
            self._pending.pop()
            self._finalize(graph, pending)

    def _walk(self, graph: GraphLike) -> None:
        for node in graph:
            if node.graph is not graph:  # removed while we walked
                continue
            subgraphs = _subgraph_attrs(node)
            if subgraphs:
                if (
                    node.op_type == "If"
                    and node.domain in ONNX_DOMAINS
                    and self.inline_if
                    and self._inline_if(graph, node)
                ):
                    continue
                if (
                    node.op_type == "Loop"
                    and node.domain in ONNX_DOMAINS
                    and self.unroll_loops
                    and self._unroll_loop(graph, node)
                ):
                    continue
                if (
                    node.op_type == "Scan"
                    and node.domain in ONNX_DOMAINS
                    and self.unroll_loops
                    and self._unroll_scan(graph, node)
                ):
                    continue
                for attr in subgraphs:
                    for sub in (
                        [attr.as_graph()]
                        if attr.type == ir.AttributeType.GRAPH
                        else attr.as_graphs()
                    ):
                        if node.op_type in ("Loop", "Scan"):
                            self._mark_loop_variant(sub)
                        self._sweep(sub)
                if self.infer_nodes and node.domain in ONNX_DOMAINS:
                    self._infer_control_flow(node)
                continue
            if node.op_type == "Constant" or not has_schema(node):
                continue
            if self._fold(graph, node):
                continue
            if (
                self.infer_nodes
                and any(not is_static_shape(o.shape) for o in node.outputs)
                and all(v is None or is_static_shape(v.shape) for v in node.inputs)
                and (
                    self._reshape_shape(node)
                    or infer_node(node, self.opsets, self._const_map(node))
                )
            ):
                self.stats.nodes_inferred += 1

    def _mark_loop_variant(self, body: ir.Graph) -> None:
        """Values of a Loop/Scan body whose shape may change from one iteration to the next.

        onnx infers a body once, from the loop-carried values' *initial* shapes; a carried tensor
        that grows makes those inferred shapes wrong after the first iteration, so ``Shape``/``Size``
        of anything that depends on a body input is never folded.
        """
        variant = self._variant
        variant.update(body.inputs)
        for graph in iter_graphs(body):
            for node in graph:
                if any(v in variant for v in node.inputs if v is not None):
                    variant.update(node.outputs)
                elif _subgraph_attrs(node):
                    for attr in _subgraph_attrs(node):
                        for sub in (
                            [attr.as_graph()]
                            if attr.type == ir.AttributeType.GRAPH
                            else attr.as_graphs()
                        ):
                            if any(
                                v in variant
                                for g in iter_graphs(sub)
                                for n in g
                                for v in n.inputs
                                if v is not None
                            ):
                                variant.update(node.outputs)

    def _reshape_shape(self, node: ir.Node) -> bool:
        """Fast path for the commonest op of shape chains: Reshape to a constant target."""
        if node.op_type != "Reshape" or node.domain not in ONNX_DOMAINS or len(node.inputs) < 2:
            return False
        data, target = node.inputs[0], self.constant(node.inputs[1])
        if data is None or target is None or not is_static_shape(data.shape):
            return False
        dims = [int(d) for d in data.shape]
        allowzero = node.attributes.get("allowzero")
        out = [int(v) for v in target.reshape(-1)]
        if not (allowzero is not None and allowzero.as_int()):
            out = [dims[i] if v == 0 and i < len(dims) else v for i, v in enumerate(out)]
        if out.count(-1) > 1 or any(v < -1 for v in out):
            return False
        total = math.prod(dims)
        if -1 in out:
            known = math.prod(v for v in out if v != -1)
            if known == 0 or total % known:
                return False
            out[out.index(-1)] = total // known
        elif math.prod(out) != total:
            return False
        result = node.outputs[0]
        result.shape = ir.Shape(out)
        if result.dtype is None and data.dtype is not None:
            result.dtype = data.dtype
        return True

    def _infer_control_flow(self, node: ir.Node) -> None:
        self.stats.nodes_inferred += infer_control_flow(node, self.constant)

    def _const_map(self, node: ir.Node) -> dict[ir.Value, np.ndarray]:
        out = {}
        for v in node.inputs:
            arr = self.constant(v)
            if v is not None and arr is not None:
                out[v] = arr
        return out

    # ------------------------------------------------------------------ folding
    def _fold(self, graph: GraphLike, node: ir.Node) -> bool:
        op = node.op_type
        if node.domain not in ONNX_DOMAINS or op in _NON_DETERMINISTIC or op in self.keep_ops:
            return False
        if op in ("Shape", "Size") and node.inputs and node.inputs[0] is not None:
            source = node.inputs[0]
            shape = source.shape
            if not is_static_shape(shape) or source in self._variant:
                arr = self.constant(source)
                if arr is None:
                    return False
                dims = list(arr.shape)
            else:
                dims = [int(d) for d in shape]
            if op == "Size":
                result = np.array(math.prod(dims), dtype=np.int64)
            else:
                start_attr = node.attributes.get("start")
                end_attr = node.attributes.get("end")
                start = start_attr.as_int() if start_attr is not None else 0
                end = end_attr.as_int() if end_attr is not None else None
                result = np.array(dims[start:end], dtype=np.int64)
            self._defer(node, [result])
            self.stats.shape_ops_folded += 1
            return True
        inputs: list[np.ndarray | None] = []
        for v in node.inputs:
            if v is None:
                inputs.append(None)
                continue
            arr = self.constant(v)
            if arr is None:
                if v in self._oversized and all(
                    self.constant(u) is not None or u in self._oversized
                    for u in node.inputs
                    if u is not None
                ):
                    self.stats.skipped_for_size[node.name or op] = _tensor_nbytes(v)
                return False
            inputs.append(arr)
        if not any(v is not None for v in node.inputs):
            return False  # nothing to fold from
        estimate = self._estimate_bytes(node, inputs)
        freed = -1  # computed only when the size could matter
        if estimate is not None and estimate > self.size_limit:
            freed = self._freeable_bytes(node)
            if estimate - freed > self.size_limit:
                self.stats.skipped_for_size[node.name or op] = estimate - freed
                return False
        results = evaluate_node(node, inputs, self._opset(node))
        if results is None:
            return False
        for out, arr in zip(node.outputs, results, strict=False):
            if arr.dtype.kind not in "biuf":
                return False
            if is_static_shape(out.shape) and tuple(out.shape) != arr.shape:
                logger.debug(
                    "%s: evaluated shape %s differs from %s; not folded",
                    node.name,
                    arr.shape,
                    out.shape,
                )
                return False
            if out.dtype is not None and out.dtype != ir.DataType.from_numpy(arr.dtype):
                logger.debug(
                    "%s: evaluated dtype %s differs from %s; not folded",
                    node.name,
                    arr.dtype,
                    out.dtype,
                )
                return False
        added = sum(int(a.nbytes) for a in results)
        if added > self.size_limit and freed < 0:
            freed = self._freeable_bytes(node)
        if added - max(freed, 0) > self.size_limit:
            self.stats.skipped_for_size[node.name or op] = added - freed
            return False
        self._defer(node, results)
        self.stats.folded_nodes += 1
        return True

    def _estimate_bytes(self, node: ir.Node, inputs: list[np.ndarray | None]) -> int | None:
        total = 0.0  # an element of a 4-bit type takes half a byte
        for out in node.outputs:
            if is_static_shape(out.shape) and out.dtype is not None:
                total += math.prod(out.shape) * out.dtype.itemsize
            else:
                break
        else:
            return math.ceil(total)
        op = node.op_type
        first = inputs[0] if inputs else None
        second = inputs[1] if len(inputs) > 1 else None
        if first is None:
            return None
        try:
            if op == "ConstantOfShape":
                return math.prod([int(v) for v in first.reshape(-1)]) * 8
            if op == "Expand" and second is not None:
                target = np.broadcast_shapes(first.shape, tuple(int(v) for v in second.reshape(-1)))
                return math.prod(target) * first.itemsize
            if op == "Tile" and second is not None:
                return first.nbytes * math.prod([int(v) for v in second.reshape(-1)])
            if op == "Range":
                start, limit, delta = (float(np.asarray(a).reshape(())) for a in inputs[:3])
                return (
                    max(0, math.ceil((limit - start) / delta)) * first.itemsize if delta else None
                )
        except Exception:
            return None
        return None

    def _freeable_bytes(self, node: ir.Node) -> int:
        # what folding ``node`` frees depends on which folds already left the graph: settle them
        self._flush()
        freed = 0
        seen: set[ir.Value] = set()
        for v in node.inputs:
            if v is None or v in seen:
                continue
            seen.add(v)
            if v.is_graph_output() or v.is_graph_input():
                continue
            if all(user is node for user, _ in v.uses()):
                freed += _tensor_nbytes(v)
        return freed

    def _new_constant(
        self, graph: GraphLike, out: ir.Value, array: np.ndarray, node_name: str
    ) -> ir.Value:
        tensor = ir.Tensor(np.array(array, order="C", copy=True), name=out.name)
        if graph is self.model.graph:
            value = ir.Value(
                name=out.name,
                type=ir.TensorType(tensor.dtype),
                shape=ir.Shape(array.shape),
                const_value=tensor,
            )
            out.replace_all_uses_with(value, replace_graph_outputs=True)
            return value
        const = ir.Node(
            "", "Constant", [], [ir.AttrTensor("value", tensor)], name=node_name, num_outputs=1
        )
        value = const.outputs[0]
        value.name = out.name
        value.type = ir.TensorType(tensor.dtype)
        value.shape = ir.Shape(array.shape)
        graph.insert_before(out.producer(), const)  # type: ignore[arg-type]
        out.replace_all_uses_with(value, replace_graph_outputs=True)
        return value

    def _defer(self, node: ir.Node, arrays: list[np.ndarray]) -> None:
        """Record a folded node: later nodes read its results as constants; the graph is untouched."""
        for out, array in zip(node.outputs, arrays, strict=False):
            self._consts[out] = array
            # what the materialized constant would say, for nodes inferred or folded meanwhile
            out.shape = ir.Shape(array.shape)
            if out.type is None:
                out.type = ir.TensorType(ir.DataType.from_numpy(array.dtype))
        self._pending[-1][1].append((node, arrays))
        self._changed = True

    def _flush(self) -> None:
        """Finalize every deferred fold now, innermost graph first."""
        for graph, pending in reversed(self._pending):
            self._finalize(graph, pending)

    def _finalize(self, graph: GraphLike, pending: list[tuple[ir.Node, list[np.ndarray]]]) -> None:
        """Replace the deferred folds of ``graph`` by constants where still read, and delete them.

        Last to first: every consumer of a folded node was folded after it, so by a node's turn its
        folded consumers are gone (with whatever they alone kept alive) and each output still used
        is read by an unfolded node, a subgraph or the graph's outputs.
        """
        if not pending:
            return
        batch = pending[:]
        pending.clear()
        registered: list[list[ir.Value]] = []
        for node, arrays in reversed(batch):
            if node.graph is graph:  # else a cascade already removed it: nothing read it
                registered.append(self._replace_with_constants(graph, node, arrays))
            for out in node.outputs:
                self._consts.pop(out, None)
        # only now are the old output names free; registered in folding order
        if graph is self.model.graph:
            for values in reversed(registered):
                for value in values:
                    graph.register_initializer(value)

    def _replace_with_constants(
        self, graph: GraphLike, node: ir.Node, arrays: list[np.ndarray]
    ) -> list[ir.Value]:
        """Turn the used outputs of ``node`` into constants and delete it; returns the new values."""
        live = [
            (i, out) for i, out in enumerate(node.outputs) if _used(out) or out.is_graph_output()
        ]
        new_values = []
        for i, out in live:
            name = (node.name or "") if len(live) == 1 else self.names.derive(node.name, f"out{i}")
            new_values.append(self._new_constant(graph, out, arrays[i], name))
            self.stats.bytes_added += int(arrays[i].nbytes)
            self._consts[new_values[-1]] = arrays[i]
        self._delete(node)
        return new_values

    # ------------------------------------------------------------------ removal
    def _delete(self, node: ir.Node) -> None:
        """Remove a node whose outputs are unused, then producers that became dead."""
        stack = [node]
        while stack:
            current = stack.pop()
            graph = current.graph
            if graph is None:
                continue
            if any(_used(o) or o.is_graph_output() for o in current.outputs):
                continue
            inputs = [v for v in current.inputs if v is not None]
            if current.op_type == "Constant":
                self.stats.bytes_freed += _tensor_nbytes(current.outputs[0])
            for i in range(len(current.inputs)):
                if current.inputs[i] is not None:
                    current.replace_input_with(i, None)
            graph.remove(current)
            self.stats.removed_nodes += 1
            for v in inputs:
                if _used(v) or v.is_graph_output():
                    continue
                producer = v.producer()
                if producer is not None:
                    if (
                        not _subgraph_attrs(producer)
                        and has_schema(producer)
                        and producer.op_type not in _NON_DETERMINISTIC
                    ):
                        stack.append(producer)
                elif (
                    v.graph is not None
                    and not v.is_graph_input()
                    and v.name
                    and v.name in v.graph.initializers
                    and v.graph.initializers[v.name] is v
                ):
                    self.stats.bytes_freed += _tensor_nbytes(v)
                    v.graph.initializers.pop(v.name)

    @staticmethod
    def _detach_subgraphs(node: ir.Node) -> None:
        """Drop the uses that nodes of a discarded subgraph hold on outer values."""
        for attr in _subgraph_attrs(node):
            for sub in (
                [attr.as_graph()] if attr.type == ir.AttributeType.GRAPH else attr.as_graphs()
            ):
                for g in iter_graphs(sub):
                    for n in g:
                        for i in range(len(n.inputs)):
                            if n.inputs[i] is not None:
                                n.replace_input_with(i, None)

    # ------------------------------------------------------------------ outputs
    def _rebind(
        self,
        graph: GraphLike,
        old: ir.Value,
        new: ir.Value,
        moved: set[ir.Value],
        claimed: set[ir.Value],
        name: str,
    ) -> None:
        """Make ``new`` carry ``old``'s value and, where possible, its name."""
        if new in moved and new not in claimed and not new.is_graph_output():
            claimed.add(new)
            old_name = old.name
            old.replace_all_uses_with(new, replace_graph_outputs=True)
            old.name = None
            new.name = old_name
            return
        if old.is_graph_output():
            ident = ir.Node(
                "", "Identity", [new], name=self.names.derive(name, "output"), num_outputs=1
            )
            out = ident.outputs[0]
            out.type, out.shape = (
                (old.type or new.type),
                (old.shape if old.shape is not None else new.shape),
            )
            old_name = old.name
            old.replace_all_uses_with(out, replace_graph_outputs=True)
            old.name = None
            out.name = old_name
            graph.insert_before(old.producer(), ident)  # type: ignore[arg-type]
            return
        old.replace_all_uses_with(new)

    def _hoist_initializers(
        self, graph: GraphLike, body: ir.Graph, anchor: ir.Node
    ) -> list[ir.Node]:
        """Turn a subgraph's initializers into Constant nodes placed before ``anchor``."""
        nodes = []
        for name, value in list(body.initializers.items()):
            tensor = value.const_value
            if tensor is None:
                continue  # an initializer without data is a graph input: nothing to hoist
            const = ir.Node(
                "",
                "Constant",
                [],
                [ir.AttrTensor("value", tensor)],
                name=self.names.derive(anchor.name, name),
                num_outputs=1,
            )
            body.initializers.pop(name)
            new = const.outputs[0]
            new.type, new.shape = value.type, value.shape
            value.replace_all_uses_with(new, replace_graph_outputs=True)
            new.name = self.names.derive(anchor.name, name)
            nodes.append(const)
        if nodes:
            graph.insert_before(anchor, nodes)
        return nodes

    def _inline_if(self, graph: GraphLike, node: ir.Node) -> bool:
        cond = self.constant(node.inputs[0] if node.inputs else None)
        if cond is None or cond.size != 1:
            return False
        attr = node.attributes.get("then_branch" if bool(cond.reshape(-1)[0]) else "else_branch")
        if attr is None or attr.type != ir.AttributeType.GRAPH:
            return False
        branch = attr.as_graph()
        if len(branch.outputs) != len(node.outputs):
            return False
        self._hoist_initializers(graph, branch, node)
        outs = list(branch.outputs)
        body = list(branch)
        branch.outputs.clear()
        branch.remove(body, safe=False)
        graph.insert_after(node, body)
        moved = {o for n in body for o in n.outputs}
        claimed: set[ir.Value] = set()
        for if_out, branch_out in zip(node.outputs, outs, strict=True):
            if if_out.uses() or if_out.is_graph_output():
                self._rebind(graph, if_out, branch_out, moved, claimed, node.name or "If")
        self._detach_subgraphs(node)
        self._delete(node)
        for moved_node in reversed(body):  # branch nodes computing only unused If outputs
            if (
                moved_node.graph is graph
                and not _subgraph_attrs(moved_node)
                and has_schema(moved_node)
            ):
                self._delete(moved_node)
        self.stats.ifs_inlined += 1
        self._changed = True
        self._structure_changed = True
        return True

    def _unroll_loop(self, graph: GraphLike, node: ir.Node) -> bool:
        inputs = list(node.inputs)
        trip = self.constant(inputs[0] if inputs else None)
        if trip is None or trip.size != 1:
            return False
        count = int(trip.reshape(-1)[0])
        if count < 0 or count > self.max_unroll:
            return False
        cond_in = inputs[1] if len(inputs) > 1 else None
        if cond_in is not None:
            cond = self.constant(cond_in)
            if cond is None or not bool(cond.reshape(-1)[0]):
                return False
        body = node.attributes["body"].as_graph()
        carried_in = [v for v in inputs[2:] if v is not None]
        if len(carried_in) < len(inputs) - 2:
            return False  # a loop-carried initial value is required
        n_carried = len(carried_in)
        body_cond_out = body.outputs[0]
        body_cond_in = body.inputs[1]
        # the exit condition must not depend on data: a pass-through or a constant true
        while (
            (p := body_cond_out.producer()) is not None
            and p.op_type == "Identity"
            and p.inputs[0] is not None
        ):
            body_cond_out = p.inputs[0]
        if body_cond_out is not body_cond_in:
            c = self.constant(body_cond_out)
            if c is None or not bool(c.reshape(-1)[0]):
                return False
        n_scan = len(body.outputs) - 1 - n_carried
        if count == 0 and n_scan:
            return False
        self._hoist_initializers(graph, body, node)
        base = node.name or "Loop"
        carried = list(carried_in)
        scans: list[list[ir.Value]] = [[] for _ in range(n_scan)]
        new_nodes: list[ir.Node] = []
        for i in range(count):
            iter_const = ir.Node(
                "",
                "Constant",
                [],
                [ir.AttrTensor("value", ir.tensor(np.array(i, dtype=np.int64)))],
                name=self.names.derive(base, f"iter{i}"),
                num_outputs=1,
            )
            iter_const.outputs[0].name = self.names.derive(base, f"iter{i}_num")
            iter_const.outputs[0].dtype = ir.DataType.INT64
            iter_const.outputs[0].shape = ir.Shape([])
            true_const = ir.Node(
                "",
                "Constant",
                [],
                [ir.AttrTensor("value", ir.tensor(np.array(True)))],
                name=self.names.derive(base, f"iter{i}_cond"),
                num_outputs=1,
            )
            true_const.outputs[0].name = self.names.derive(base, f"iter{i}_cond")
            true_const.outputs[0].dtype = ir.DataType.BOOL
            true_const.outputs[0].shape = ir.Shape([])
            new_nodes += [iter_const, true_const]
            value_map: dict[ir.Value, ir.Value | None] = {
                body.inputs[0]: iter_const.outputs[0],
                body_cond_in: true_const.outputs[0],
            }
            for formal, actual in zip(body.inputs[2:], carried, strict=True):
                value_map[formal] = actual
            mapped = self._clone_body(body, value_map, base, i, new_nodes)
            carried = list(mapped[1 : 1 + n_carried])
            for k in range(n_scan):
                scans[k].append(mapped[1 + n_carried + k])
        opset = self._opset(node)
        scan_results = [
            self._stack(scans[k], 0, opset, base, f"scan{k}", new_nodes) for k in range(n_scan)
        ]
        self._replace_unrolled(graph, node, new_nodes, carried + scan_results, base)
        self.stats.loops_unrolled += 1
        return True

    def _clone_body(
        self,
        body: ir.Graph,
        value_map: dict[ir.Value, ir.Value | None],
        base: str,
        i: int,
        new_nodes: list[ir.Node],
    ) -> list[ir.Value]:
        """Clone ``body``'s nodes for iteration ``i`` (inputs bound by ``value_map``); its outputs' values."""
        cloner = Cloner(
            attr_map={}, value_map=value_map, metadata_props={}, allow_outer_scope_values=True
        )
        for body_node in body:
            clone = cloner.clone_node(body_node)
            clone.name = self.names.derive(base, f"iter{i}/{body_node.name or body_node.op_type}")
            for out in clone.outputs:
                out.name = self.names.derive(base, f"iter{i}/{out.name or 'out'}")
                out.shape = None  # the body's shapes hold for its first iteration only: re-infer
            new_nodes.append(clone)
        return [value_map.get(v, v) for v in body.outputs]  # type: ignore[misc]

    def _int64_constant(
        self, array: np.ndarray, base: str, tag: str, new_nodes: list[ir.Node]
    ) -> ir.Value:
        const = ir.Node(
            "",
            "Constant",
            [],
            [ir.AttrTensor("value", ir.tensor(np.asarray(array, dtype=np.int64)))],
            name=self.names.derive(base, tag),
            num_outputs=1,
        )
        const.outputs[0].name = self.names.derive(base, tag)
        const.outputs[0].dtype = ir.DataType.INT64
        const.outputs[0].shape = ir.Shape(list(np.shape(array)))
        new_nodes.append(const)
        return const.outputs[0]

    def _stack(
        self,
        items: list[ir.Value],
        axis: int,
        opset: int,
        base: str,
        tag: str,
        new_nodes: list[ir.Node],
    ) -> ir.Value:
        """``items`` stacked along a new ``axis`` (Unsqueeze each, Concat): a scan output."""
        parts = []
        for i, v in enumerate(items):
            axes_inputs: list[ir.Value] = [v]
            attrs = []
            if opset >= 13:
                axes_inputs.append(
                    self._int64_constant(np.array([axis]), base, f"{tag}_axes{i}", new_nodes)
                )
            else:
                attrs.append(ir.AttrInt64s("axes", [axis]))
            unsq = ir.Node(
                "",
                "Unsqueeze",
                axes_inputs,
                attrs,
                name=self.names.derive(base, f"{tag}_unsqueeze{i}"),
                num_outputs=1,
            )
            unsq.outputs[0].name = self.names.derive(base, f"{tag}_item{i}")
            new_nodes.append(unsq)
            parts.append(unsq.outputs[0])
        concat = ir.Node(
            "",
            "Concat",
            parts,
            [ir.AttrInt64("axis", axis)],
            name=self.names.derive(base, f"{tag}_concat"),
            num_outputs=1,
        )
        concat.outputs[0].name = self.names.derive(base, tag)
        new_nodes.append(concat)
        return concat.outputs[0]

    def _replace_unrolled(
        self,
        graph: GraphLike,
        node: ir.Node,
        new_nodes: list[ir.Node],
        results: list[ir.Value],
        base: str,
    ) -> None:
        graph.insert_after(node, new_nodes)
        moved = {o for n in new_nodes for o in n.outputs}
        claimed: set[ir.Value] = set()
        for old, new in zip(node.outputs, results, strict=False):
            if old.uses() or old.is_graph_output():
                self._rebind(graph, old, new, moved, claimed, base)
        self._detach_subgraphs(node)
        self._delete(node)
        self._changed = True
        self._structure_changed = True

    def _unroll_scan(self, graph: GraphLike, node: ir.Node) -> bool:
        """Unroll a Scan (opset 9+) whose scan inputs have a static length along their scan axis.

        Iteration ``t`` reads slice ``t`` (``length - 1 - t`` for a reverse direction) of every scan
        input with a ``Gather`` by a constant index, runs a clone of the body, and the per-iteration
        scan outputs are stacked along their output axis (in reverse order for a reverse direction).
        """
        if self._opset(node) < 9:
            return False  # opset 8's Scan has a batch axis and sequence lengths
        inputs = list(node.inputs)
        m = node.attributes.get_int("num_scan_inputs", 0)
        n = len(inputs) - m
        if m < 1 or n < 0 or any(v is None for v in inputs):
            return False
        present = [v for v in inputs if v is not None]  # all of them (checked above)
        body = node.attributes["body"].as_graph()
        k_out = len(body.outputs) - n
        in_axes = list(node.attributes.get_ints("scan_input_axes", [0] * m))
        in_dirs = list(node.attributes.get_ints("scan_input_directions", [0] * m))
        out_axes = list(node.attributes.get_ints("scan_output_axes", [0] * k_out))
        out_dirs = list(node.attributes.get_ints("scan_output_directions", [0] * k_out))
        if (
            len(in_axes) != m
            or len(in_dirs) != m
            or len(out_axes) != k_out
            or len(out_dirs) != k_out
        ):
            return False
        lengths = set()
        for j, value in enumerate(inputs[n:]):
            shape = value.shape if value is not None else None
            if shape is None or not -len(shape) <= in_axes[j] < len(shape):
                return False
            in_axes[j] %= len(shape)
            lengths.add(shape[in_axes[j]])
        if len(lengths) != 1:
            return False
        length = lengths.pop()
        if not is_known_dim(length) or length > self.max_unroll or (length == 0 and k_out):
            return False
        out_ranks = []
        for formal in body.outputs[n:]:
            if formal.shape is None:
                return False  # a negative output axis needs the element's rank
            out_ranks.append(len(formal.shape))
        self._hoist_initializers(graph, body, node)
        base = node.name or "Scan"
        carried = present[:n]
        items: list[list[ir.Value]] = [[] for _ in range(k_out)]
        new_nodes: list[ir.Node] = []
        for t in range(length):
            value_map: dict[ir.Value, ir.Value | None] = dict(
                zip(body.inputs[:n], carried, strict=True)
            )
            for j, value in enumerate(inputs[n:]):
                index = self._int64_constant(
                    np.array(length - 1 - t if in_dirs[j] else t),
                    base,
                    f"iter{t}_index{j}",
                    new_nodes,
                )
                gather = ir.Node(
                    "",
                    "Gather",
                    [value, index],
                    [ir.AttrInt64("axis", in_axes[j])],
                    name=self.names.derive(base, f"iter{t}_slice{j}"),
                    num_outputs=1,
                )
                gather.outputs[0].name = self.names.derive(base, f"iter{t}_slice{j}")
                new_nodes.append(gather)
                value_map[body.inputs[n + j]] = gather.outputs[0]
            mapped = self._clone_body(body, value_map, base, t, new_nodes)
            carried = mapped[:n]
            for k in range(k_out):
                items[k].append(mapped[n + k])
        opset = self._opset(node)
        results = list(carried)
        for k in range(k_out):
            ordered = items[k][::-1] if out_dirs[k] else items[k]
            results.append(
                self._stack(
                    ordered, out_axes[k] % (out_ranks[k] + 1), opset, base, f"scan{k}", new_nodes
                )
            )
        self._replace_unrolled(graph, node, new_nodes, results, base)
        self.stats.scans_unrolled += 1
        return True

    # ------------------------------------------------------------------ names
    def _uniquify_names(self) -> None:
        """Inlined branches may reuse names of their siblings' scopes: make every name unique."""
        value_names: collections.Counter[str] = collections.Counter()
        node_names: collections.Counter[str] = collections.Counter()
        main = self.model.graph
        for v in list(main.inputs) + list(main.initializers.values()):
            if v.name:
                value_names[v.name] += 1
        for graph in iter_graphs(main):
            values = list(graph.inputs) if graph is not main else []
            for node in graph:
                if node.name:
                    node_names[node.name] += 1
                    if node_names[node.name] > 1:
                        node.name = self.names.derive(node.name, "inlined")
                values.extend(node.outputs)
            for v in values:
                if not v.name:
                    continue
                value_names[v.name] += 1
                if value_names[v.name] > 1 and not v.is_graph_output():
                    v.name = self.names.derive(v.name, "inlined")
