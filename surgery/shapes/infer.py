"""Shape inference that rebuilds annotations from scratch and never serializes large weights.

:func:`clear_shapes` forgets every shape an op's schema can recompute (stale exporter annotations
such as a ``seq_len`` that a Reshape silently baked to 16); :func:`infer_model` runs onnx's C++
shape inference with data propagation on a :class:`~surgery.model_io.LightProto` (large
initializers left out, as onnx-ir's ``_c_api_utils`` does) and writes the result back into every
graph, subgraphs included; :func:`infer_node` infers one node, for the folding sweep.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import numpy as np
import onnx
import onnx_ir as ir

from surgery.graph import GraphLike, const_value, iter_graphs, subgraphs
from surgery.model_io import LightProto
from surgery.shapes.dims import is_known_dim, is_static_shape, shape_text

__all__ = [
    "CONTRADICTED_KEY",
    "OBSERVED_KEY",
    "InferredTables",
    "clear_shapes",
    "has_schema",
    "honour_observation",
    "infer_control_flow",
    "infer_model",
    "infer_node",
    "inferred_tables",
    "is_known_dim",
    "is_static_shape",
    "merge_shape",
    "proven_shapes",
    "refresh_shapes",
]

logger = logging.getLogger(__name__)

_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")

#: ``ir.Value.meta`` key of the shape ONNX Runtime computed for the value on the parity sample
#: (:mod:`surgery.shapes.observed`): an inferred size that contradicts it is replaced by it.
OBSERVED_KEY = "surgery.observed_shape"
#: ``ir.Value.meta`` key set (to the shape onnx inferred, as text) once a value's inferred shape
#: was contradicted by execution; clearing never forgets such a value's shape.
CONTRADICTED_KEY = "surgery.contradicted_inference"


def honour_observation(value: ir.Value, shape: ir.Shape | None) -> ir.Shape | None:
    """``shape`` with every known size (or the rank) that execution contradicted replaced by the
    observed one; the contradiction is recorded on the value. Symbolic dims are left alone: the
    sample's size is one of many."""
    observed = value.meta.get(OBSERVED_KEY)
    if (
        observed is None
        or shape is None
        or (value.type is not None and not isinstance(value.type, ir.TensorType))
    ):
        return shape
    if len(shape) != len(observed):
        fixed = ir.Shape(list(observed))
    else:
        wrong = [i for i, d in enumerate(shape) if is_known_dim(d) and int(d) != observed[i]]
        if not wrong:
            return shape
        fixed = ir.Shape([observed[i] if i in wrong else d for i, d in enumerate(shape)])
    value.meta.setdefault(CONTRADICTED_KEY, shape_text(shape))
    return fixed


@functools.cache
def _has_schema(op_type: str, domain: str) -> bool:
    return onnx.defs.has(op_type, "" if domain == "ai.onnx" else domain)


def has_schema(node: ir.Node) -> bool:
    """Whether onnx knows the op (so shape inference can recompute its outputs)."""
    return node.domain in _STANDARD_DOMAINS and _has_schema(node.op_type, node.domain)


def _recomputable(node: ir.Node, functions: set[tuple[str, str, str]]) -> bool:
    return has_schema(node) or (node.domain, node.op_type, node.overload) in functions


def clear_shapes(model: ir.Model) -> int:
    """Forget the shape of every value an op's schema (or a local function) can recompute.

    Outputs of ops onnx does not know keep their annotations: nothing else describes them.
    ``Constant`` outputs take the shape of their tensor. Returns the number of values cleared.
    """
    functions = set(model.functions)
    cleared = 0
    for graph in iter_graphs(model.graph):
        for node in graph:
            if node.op_type == "Constant" and node.domain in _STANDARD_DOMAINS:
                attr = node.attributes.get("value")
                if attr is not None and not attr.is_ref():
                    tensor = attr.as_tensor()
                    node.outputs[0].shape = ir.Shape(tensor.shape.numpy())
                    node.outputs[0].dtype = tensor.dtype
                continue
            if not _recomputable(node, functions):
                continue
            for out in node.outputs:
                if out.shape is not None and CONTRADICTED_KEY not in out.meta:
                    out.shape = None
                    cleared += 1
    return cleared


def merge_shape(current: ir.Shape | None, inferred: ir.Shape | None) -> ir.Shape | None:
    """Combine two shapes of one value: known sizes beat symbols, the inferred side wins conflicts."""
    if inferred is None:
        return current
    if current is None or len(current) != len(inferred):
        return inferred
    dims: list[int | ir.SymbolicDim] = []
    for c, i in zip(current, inferred, strict=True):
        if is_known_dim(i):
            dims.append(i)
        elif is_known_dim(c):
            dims.append(c)
        elif isinstance(i, ir.SymbolicDim) and i.value is not None:
            dims.append(i)
        else:
            dims.append(c)
    return ir.Shape(dims)


def _read_type(type_proto: onnx.TypeProto) -> tuple[ir.Shape | None, ir.TypeProtocol | None]:
    if type_proto.HasField("tensor_type") and not type_proto.denotation:
        tensor_type = type_proto.tensor_type  # the common case, without onnx-ir's generic decoding
        dtype = ir.TensorType(ir.DataType(tensor_type.elem_type)) if tensor_type.elem_type else None
        if not tensor_type.HasField("shape"):
            return None, dtype
        dims: list[int | ir.SymbolicDim] = []
        for d in tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(d.dim_value)
            else:
                dims.append(ir.SymbolicDim(d.dim_param or None))
        return ir.Shape(dims), dtype
    return ir.serde.deserialize_type_proto_for_shape(
        type_proto
    ), ir.serde.deserialize_type_proto_for_type(type_proto)


_TypeCache = dict[bytes, tuple[ir.Shape | None, ir.TypeProtocol | None]]


def _apply(value: ir.Value, type_proto: onnx.TypeProto, cache: _TypeCache | None = None) -> bool:
    """Merge an inferred type into ``value``; returns whether anything changed.

    With a ``cache``, values of one type share one frozen ``ir.Shape`` (most tensors of a graph
    share a handful of types; building a Shape per value dominated inference on 100k nodes).
    """
    try:
        if cache is None:
            inferred, inferred_type = _read_type(type_proto)
        else:
            key = type_proto.SerializeToString()
            hit = cache.get(key)
            if hit is None:
                inferred, inferred_type = _read_type(type_proto)
                if inferred is not None:
                    inferred.freeze()
                hit = cache[key] = (inferred, inferred_type)
            inferred, inferred_type = hit
    except Exception:  # map types and the like: nothing to learn
        return False
    changed = False
    if value.type is None and inferred_type is not None:
        value.type = inferred_type
        changed = True
    merged = merge_shape(value.shape, inferred)
    merged = honour_observation(value, merged)
    if merged != value.shape or (
        merged is not None and value.shape is not None and list(merged) != list(value.shape)
    ):
        value.shape = merged
        changed = True
    return changed


#: onnx's inferred types per graph: ``id(ir graph)`` -> value name -> TypeProto.
InferredTables = dict[int, dict[str, onnx.TypeProto]]


def _graph_attrs(node: onnx.NodeProto) -> list[onnx.AttributeProto]:
    return [
        a
        for a in node.attribute
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    ]


def _table_walk(
    graph: GraphLike, proto: onnx.GraphProto, tables: InferredTables, *, main: bool
) -> None:
    """Pair ``graph`` with its inferred proto and recurse into subgraphs by walking both in step.

    Tables are keyed by graph, never by name alone: sibling ``If`` branches (and bodies of
    different Loops) commonly reuse value names with different shapes.
    """
    table: dict[str, onnx.TypeProto] = {}
    infos = list(proto.value_info) + list(proto.output) + ([] if main else list(proto.input))
    for info in infos:
        if info.name and info.type.WhichOneof("value"):
            table.setdefault(info.name, info.type)
    tables[id(graph)] = table
    holders = [n for n in graph if any(True for _ in subgraphs(n))]
    proto_holders = [n for n in proto.node if _graph_attrs(n)]
    if len(holders) != len(proto_holders):  # should not happen: subgraphs then stay as they are
        logger.debug(
            "subgraph holders differ after inference (%d vs %d)", len(holders), len(proto_holders)
        )
        return
    for node, pnode in zip(holders, proto_holders, strict=True):
        if node.op_type != pnode.op_type:
            return
        for attr in _graph_attrs(pnode):
            mine = node.attributes.get(attr.name)
            if mine is None or mine.is_ref():
                continue
            if attr.type == onnx.AttributeProto.GRAPH and mine.type == ir.AttributeType.GRAPH:
                _table_walk(mine.as_graph(), attr.g, tables, main=False)
            elif attr.type == onnx.AttributeProto.GRAPHS and mine.type == ir.AttributeType.GRAPHS:
                for sub, psub in zip(mine.as_graphs(), attr.graphs, strict=True):
                    _table_walk(sub, psub, tables, main=False)


def onnx_inference(
    proto: onnx.ModelProto, *, data_prop: bool = True, quiet: bool = False
) -> onnx.ModelProto | None:
    """``onnx.shape_inference.infer_shapes`` as the project runs it: non-strict (a node onnx cannot
    infer leaves its outputs as annotated and inference goes on), no type checks, and a failure
    logged in one line and answered with None (onnx raises on malformed graphs even when not
    strict). Every caller passes a light proto (weights as typed inputs): see :func:`inferred_tables`.

    ``quiet`` logs the failure at INFO (callers for whom inference is a best-effort extra).
    """
    try:
        return onnx.shape_inference.infer_shapes(
            proto, check_type=False, strict_mode=False, data_prop=data_prop
        )
    except Exception as exc:
        text = str(exc).strip().splitlines()
        log = logger.info if quiet else logger.warning
        log("onnx shape inference failed: %s", text[0] if text else type(exc).__name__)
        return None


def inferred_tables(model: ir.Model, *, data_prop: bool = True) -> InferredTables | None:
    """onnx shape inference over the whole model, once, as per-graph tables (None if onnx refused it).

    The one place the project runs onnx's whole-model inference on an ``ir.Model``: on a
    :class:`~surgery.model_io.LightProto` whose large weights are typed graph inputs (so it works
    past 2 GB and never reads external data), non-strict (a node onnx cannot infer leaves its
    outputs as annotated, and inference continues from them). Model-local function bodies get
    no table: onnx infers them only per call (see :func:`refresh_shapes`).
    """
    inferred = onnx_inference(LightProto(model).for_checker(), data_prop=data_prop)
    if inferred is None:
        return None
    tables: InferredTables = {}
    _table_walk(model.graph, inferred.graph, tables, main=True)
    return tables


def _graph_values(graph: GraphLike, *, main: bool) -> list[ir.Value]:
    values: list[ir.Value] = [out for node in graph for out in node.outputs]
    values.extend(graph.outputs)
    if not main:
        values.extend(graph.inputs)
    return values


def _merge_tables(model: ir.Model, tables: InferredTables) -> int:
    cache: _TypeCache = {}
    changed = 0
    for graph in iter_graphs(model.graph):
        table = tables.get(id(graph))
        if not table:
            continue
        for value in _graph_values(graph, main=graph is model.graph):
            if value.name and value.name in table and _apply(value, table[value.name], cache):
                changed += 1
    return changed


def infer_model(model: ir.Model, *, data_prop: bool = True) -> int:
    """Run onnx shape inference over the whole model and merge the result into every graph.

    Returns the number of values whose type or shape changed, or -1 when onnx refused the model as
    a whole. Inference errors on single nodes are tolerated (non-strict mode): those values simply
    stay unknown.
    """
    tables = inferred_tables(model, data_prop=data_prop)
    if tables is None:
        return -1
    return _merge_tables(model, tables)


def _negative_to_unknown(value: ir.Value) -> bool:
    """Rewrite a literal ``-1`` dim (Paddle's unknown) as an anonymous dim; returns whether it did."""
    shape = value.shape
    if shape is None or all(not isinstance(d, int) or d >= 0 for d in shape):
        return False
    value.shape = ir.Shape(
        [ir.SymbolicDim(None) if isinstance(d, int) and d < 0 else d for d in shape]
    )
    return True


def _small_constants(node: ir.Node) -> dict[ir.Value, np.ndarray]:
    """Small constant inputs of ``node`` (axes, shapes: what per-node inference reads data of)."""
    found: dict[ir.Value, np.ndarray] = {}
    for value in node.inputs:
        if value is None:
            continue
        tensor = value.const_value
        if tensor is not None and (tensor.shape is None or math.prod(tensor.shape.numpy()) > 64):
            continue
        array = const_value(value)
        if array is not None:
            found[value] = array
    return found


def infer_control_flow(
    node: ir.Node, constant: Callable[[ir.Value | None], np.ndarray | None] = const_value
) -> int:
    """Output shapes of an If/Loop from its bodies' outputs; returns how many outputs it set.

    onnx's whole-model inference cannot see outer-scope constants from inside a subgraph, so a
    branch output that only per-node inference resolved would leave the If output unknown.
    """
    changed = 0

    def put(out: ir.Value, shape: ir.Shape | None, dtype: ir.DataType | None) -> None:
        nonlocal changed
        if shape is None or is_static_shape(out.shape):
            return
        if is_static_shape(shape) or out.shape is None:
            out.shape = shape
            if out.type is None and dtype is not None:
                out.dtype = dtype
            changed += 1

    if node.op_type == "If":
        then_attr, else_attr = (
            node.attributes.get("then_branch"),
            node.attributes.get("else_branch"),
        )
        if then_attr is None or else_attr is None:
            return 0
        for out, a, b in zip(
            node.outputs, then_attr.as_graph().outputs, else_attr.as_graph().outputs, strict=False
        ):
            if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
                continue
            dims = [
                x if is_known_dim(x) and x == y else ir.SymbolicDim(None)
                for x, y in zip(a.shape, b.shape, strict=True)
            ]
            put(out, ir.Shape(dims), a.dtype)
    elif node.op_type == "Loop":
        body = node.attributes["body"].as_graph()
        carried_in = list(node.inputs[2:])
        n_carried = len(carried_in)
        body_outs = list(body.outputs)
        for out, init, body_out in zip(
            node.outputs[:n_carried], carried_in, body_outs[1 : 1 + n_carried], strict=False
        ):
            if (
                init is not None
                and is_static_shape(init.shape)
                and is_static_shape(body_out.shape)
                and list(init.shape) == list(body_out.shape)
            ):
                put(out, ir.Shape(list(body_out.shape)), body_out.dtype)
        trip = constant(node.inputs[0] if node.inputs else None)
        if trip is not None and trip.size == 1:
            for out, body_out in zip(
                node.outputs[n_carried:], body_outs[1 + n_carried :], strict=False
            ):
                if is_static_shape(body_out.shape):
                    put(out, ir.Shape([int(trip.reshape(-1)[0]), *body_out.shape]), body_out.dtype)
    return changed


def _infer_nodes(graph: GraphLike, opsets: dict[str, int], *, only_missing: bool) -> int:
    """Per-node inference in order, with small constant inputs read (``only_missing``: nodes with
    an output of unknown type or rank only). onnx's whole-model inference does not read constants
    from an outer scope (an ``Unsqueeze`` in an ``If`` branch whose axes are a main-graph
    initializer stays of unknown rank), nor function bodies."""
    changed = 0
    for node in graph:
        if node.op_type == "Constant" and node.domain in _STANDARD_DOMAINS:
            attr = node.attributes.get("value")
            out = node.outputs[0]
            if attr is not None and not attr.is_ref() and (out.shape is None or out.type is None):
                tensor = attr.as_tensor()
                out.shape = ir.Shape(tensor.shape.numpy())
                out.dtype = tensor.dtype
                changed += 1
            continue
        held = list(subgraphs(node))
        for sub in held:
            changed += _infer_nodes(sub, opsets, only_missing=only_missing)
        if only_missing and all(o.type is not None and o.shape is not None for o in node.outputs):
            continue
        if held:
            changed += infer_control_flow(node) if node.domain in _STANDARD_DOMAINS else 0
        elif infer_node(node, opsets, _small_constants(node)):
            changed += 1
    return changed


def _count_contradicted(model: ir.Model) -> int:
    return sum(CONTRADICTED_KEY in o.meta for node in model.graph for o in node.outputs)


def refresh_shapes(model: ir.Model) -> int:
    """Give every value of every graph and function the type and shape inference can give.

    The runner calls this after every pass that changed the model, so that no pass has to
    annotate the nodes it creates (a ``Constant`` left unannotated read as "unknown rank" to
    ``assert-static`` and to ATC). Known information is never lost: an inferred known size beats a
    symbol or a stale size, a known size is never replaced by a symbol, and a value inference says
    nothing about keeps its annotation (a graph output whose shape was dropped makes the checker
    fail with "Field 'shape' of 'type' is required but missing", naming no tensor). Shapes that
    execution contradicted (:mod:`surgery.shapes.observed`) are kept as observed. Literal ``-1``
    dims become anonymous dims first (onnx would keep a ``-1`` rather than infer the size).
    Returns the number of values changed.
    """
    changed = 0
    # first, so that onnx does not hold a "-1" against the size it infers (it keeps the annotation)
    for graph in [
        *iter_graphs(model.graph),
        *(g for f in model.functions.values() for g in iter_graphs(f)),
    ]:
        for value in [*graph.inputs, *_graph_values(graph, main=True)]:
            changed += _negative_to_unknown(value)
    for _ in range(3):
        contradicted = _count_contradicted(model)
        tables = inferred_tables(model)
        if tables is not None:
            changed += _merge_tables(model, tables)
        if tables is None or _count_contradicted(model) == contradicted:
            break
        # a size execution contradicted was just corrected: onnx propagated the wrong one
        # downstream in this run, so infer once more from the corrected annotations
    opsets = dict(model.opset_imports)
    changed += _infer_nodes(model.graph, opsets, only_missing=True)  # what onnx left unknown
    for function in model.functions.values():
        changed += _infer_nodes(function, {**opsets, **function.opset_imports}, only_missing=False)
    return changed


def proven_shapes(model: ir.Model) -> dict[ir.Value, ir.Shape | None]:
    """The shape inference proves for every value of every graph, ignoring intermediate annotations.

    Annotations an op's schema can recompute are forgotten (:func:`clear_shapes`), the model is
    inferred from its inputs alone, the result is read, and every annotation is put back: the
    model is unchanged. ``assert-static`` judges these shapes, never the annotations a pass or an
    exporter wrote (which may be stale, or missing on nodes a pass created).
    """
    values = [
        v for g in iter_graphs(model.graph) for v in [*g.inputs, *_graph_values(g, main=True)]
    ]
    saved = [(v, v.type, v.shape) for v in values]
    try:
        clear_shapes(model)
        refresh_shapes(model)
        return {v: v.shape for v in values}
    finally:
        for value, tp, shape in saved:
            value.type = tp
            value.shape = shape


@functools.lru_cache(maxsize=4096)
def _schema(op_type: str, version: int, domain: str) -> onnx.defs.OpSchema | None:
    try:
        return onnx.defs.get_schema(op_type, version, domain)
    except Exception:
        return None


def _type_proto(value: ir.Value) -> onnx.TypeProto | None:
    if value.type is None:
        return None
    proto = ir.serde.serialize_type(value.type)
    if value.shape is not None:
        ir.serde.serialize_shape_into(proto, value.shape)
    return proto


def infer_node(
    node: ir.Node,
    opset_imports: dict[str, int],
    constants: dict[ir.Value, np.ndarray] | None = None,
) -> bool:
    """Infer the output types/shapes of one node from its inputs (and small constant inputs).

    Returns whether any output changed.
    """
    if not has_schema(node):
        return False
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = node.version or opset_imports.get(domain) or opset_imports.get("ai.onnx")
    if version is None:
        return False
    schema = _schema(node.op_type, version, domain)
    if schema is None:
        return False
    input_types: dict[str, onnx.TypeProto] = {}
    input_data: dict[str, onnx.TensorProto] = {}
    for value in node.inputs:
        if value is None:
            continue
        if not value.name:
            return False
        tp = _type_proto(value)
        if tp is None:
            return False
        input_types[value.name] = tp
        if constants is not None and value in constants:
            array = constants[value]
            if array is not None and array.size <= 64:
                input_data[value.name] = onnx.numpy_helper.from_array(np.asarray(array), value.name)
    opsets = [onnx.helper.make_opsetid(d, v) for d, v in opset_imports.items()]
    try:
        outputs = onnx.shape_inference.infer_node_outputs(
            schema, ir.serde.serialize_node(node), input_types, input_data, opset_imports=opsets
        )
    except Exception as exc:
        logger.debug("per-node inference of %s failed: %s", node.name, exc)
        return False
    changed = False
    for out in node.outputs:
        if out.name in outputs:
            changed |= _apply(out, outputs[out.name])
    return changed
