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
from collections.abc import Iterator

import numpy as np
import onnx
import onnx_ir as ir

from surgery.graph import GraphLike, subgraphs
from surgery.model_io import LightProto

__all__ = [
    "is_known_dim",
    "is_static_shape",
    "has_schema",
    "clear_shapes",
    "infer_model",
    "infer_node",
    "merge_shape",
    "walk_graphs",
]

logger = logging.getLogger(__name__)

_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def is_known_dim(dim: object) -> bool:
    """A concrete size (exporters such as Paddle's write an unknown dim as ``-1``)."""
    return isinstance(dim, int) and dim >= 0


def is_static_shape(shape: ir.Shape | None) -> bool:
    return shape is not None and all(is_known_dim(d) for d in shape)


@functools.lru_cache(maxsize=None)
def _has_schema(op_type: str, domain: str) -> bool:
    return onnx.defs.has(op_type, "" if domain == "ai.onnx" else domain)


def has_schema(node: ir.Node) -> bool:
    """Whether onnx knows the op (so shape inference can recompute its outputs)."""
    return node.domain in _STANDARD_DOMAINS and _has_schema(node.op_type, node.domain)


def walk_graphs(graph: GraphLike) -> Iterator[GraphLike]:
    """The graph and its nested subgraphs, in node and attribute order (as they serialize)."""
    yield graph
    for node in graph:
        for sub in subgraphs(node):
            yield from walk_graphs(sub)


def _walk_proto(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk_proto(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk_proto(sub)


def _recomputable(node: ir.Node, functions: set[tuple[str, str, str]]) -> bool:
    return has_schema(node) or (node.domain, node.op_type, node.overload) in functions


def clear_shapes(model: ir.Model) -> int:
    """Forget the shape of every value an op's schema (or a local function) can recompute.

    Outputs of ops onnx does not know keep their annotations: nothing else describes them.
    ``Constant`` outputs take the shape of their tensor. Returns the number of values cleared.
    """
    functions = set(model.functions)
    cleared = 0
    for graph in walk_graphs(model.graph):
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
                if out.shape is not None:
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
    for c, i in zip(current, inferred):
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
    return ir.serde.deserialize_type_proto_for_shape(type_proto), ir.serde.deserialize_type_proto_for_type(type_proto)


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
    if merged != value.shape or (merged is not None and value.shape is not None and list(merged) != list(value.shape)):
        value.shape = merged
        changed = True
    return changed


def infer_model(model: ir.Model, *, data_prop: bool = True) -> int:
    """Run onnx shape inference over the whole model and merge the result into every graph.

    Returns the number of values whose type or shape changed, or -1 when onnx refused the model as
    a whole. Inference errors on single nodes are tolerated (non-strict mode): those values simply
    stay unknown.
    """
    light = LightProto(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(
            light.proto, check_type=False, strict_mode=False, data_prop=data_prop
        )
    except Exception as exc:  # onnx raises on malformed graphs even in non-strict mode
        logger.warning("onnx shape inference failed: %s", exc)
        return -1
    ir_graphs = list(walk_graphs(model.graph))
    proto_graphs = list(_walk_proto(inferred.graph))
    changed = 0
    if len(ir_graphs) != len(proto_graphs):  # should not happen; fall back to global names
        logger.debug("graph count mismatch after inference (%d vs %d)", len(ir_graphs), len(proto_graphs))
        table = {vi.name: vi.type for g in proto_graphs for vi in list(g.value_info) + list(g.output)}
        pairs = [(g, table) for g in ir_graphs]
    else:
        pairs = []
        for g, pg in zip(ir_graphs, proto_graphs):
            table = {vi.name: vi.type for vi in pg.value_info}
            for vi in pg.output:
                table[vi.name] = vi.type
            if g is not model.graph:
                for vi in pg.input:
                    table[vi.name] = vi.type
            pairs.append((g, table))
    cache: _TypeCache = {}
    for graph, table in pairs:
        values: list[ir.Value] = [out for node in graph for out in node.outputs]
        values.extend(graph.outputs)
        if graph is not model.graph:
            values.extend(graph.inputs)
        for value in values:
            if value.name and value.name in table and _apply(value, table[value.name], cache):
                changed += 1
    return changed


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
