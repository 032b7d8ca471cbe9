"""Types and shapes of intermediate tensors, from the model or from onnx shape inference.

Exported models often carry no ``value_info`` (the legacy torch exporter writes none), yet a new
graph input or output needs an element type and, ideally, a shape. :func:`infer_types` asks onnx's
shape inference (with data propagation) about the wanted tensors on a proto of *only the nodes
they depend on*, with large weights turned into typed inputs (their bytes are never serialized), so
it costs what the ancestors cost and works on models over 2 GB. The model is never changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import onnx
import onnx_ir as ir

from surgery.analysis.dataflow import Dataflow
from surgery.model_io import LIGHT_THRESHOLD
from surgery.shapes.dims import plain_dims, shape_text

__all__ = ["describe_value", "fill_types", "infer_types", "type_text", "upstream_proto"]

logger = logging.getLogger(__name__)

TypeAndShape = tuple[ir.TypeProtocol, "ir.Shape | None"]


def _is_small(value: ir.Value) -> bool:
    tensor = value.const_value
    return (
        tensor is not None
        and not isinstance(tensor, ir.ExternalTensor)
        and tensor.nbytes < LIGHT_THRESHOLD
    )


def upstream_proto(
    model: ir.Model, values: Sequence[ir.Value], flow: Dataflow | None = None
) -> onnx.ModelProto:
    """A ModelProto computing ``values`` from the graph inputs: their ancestors only.

    Small in-memory initializers stay initializers (shape inference reads their values, e.g. a
    Reshape's shape); large or external ones become typed graph inputs, so no weight bytes are
    serialized. ``ir_version``, opsets and model-local functions are the model's.
    """
    flow = flow or Dataflow(model.graph)
    graph = flow.graph
    nodes = flow.in_order(flow.ancestors(values))
    read: dict[str, ir.Value] = {}
    for node in nodes:
        for v in flow.inputs_of(node):
            if v.producer() is None and v.is_initializer() and v.name:
                read[v.name] = v
    for v in values:  # a wanted value may itself be an initializer
        if v.producer() is None and v.is_initializer() and v.name:
            read[v.name] = v
    small = [v for v in read.values() if _is_small(v)]
    large = [v for v in read.values() if not _is_small(v)]
    inputs = [v for v in graph.inputs if v.name not in read] + large
    view = ir.GraphView(
        inputs,
        list(values),
        nodes=nodes,
        initializers=small,
        opset_imports=dict(graph.opset_imports),
        name=graph.name or "upstream",
    )
    # onnx-ir's stubs: its GraphView does not satisfy its own GraphViewProtocol (Optional doc_string,
    # read-only meta), though serialize_graph is written for it
    gproto = ir.serde.serialize_graph(view)  # type: ignore[arg-type]
    by_name = {v.name: v for v in large}
    for info in gproto.input:
        found = by_name.get(info.name)
        if (
            found is not None
            and not info.type.HasField("tensor_type")
            and found.const_value is not None
        ):
            tensor = found.const_value
            info.CopyFrom(
                onnx.helper.make_tensor_value_info(
                    info.name, int(tensor.dtype), list(tensor.shape.numpy())
                )
            )
    proto = onnx.ModelProto(ir_version=model.ir_version, graph=gproto)
    for domain, version in graph.opset_imports.items():
        proto.opset_import.add(domain=domain, version=version)
    for function in model.functions.values():
        proto.functions.append(ir.to_proto(function))
    return proto


def _anonymous_unknowns(shape: ir.Shape) -> ir.Shape:
    """Drop the ``unk__N`` names onnx shape inference invents for unknown dims."""
    dims = [
        None
        if isinstance(d, ir.SymbolicDim)
        and isinstance(d.value, str)
        and d.value.startswith("unk__")
        else d
        for d in shape
    ]
    return ir.Shape(dims)


def infer_types(
    model: ir.Model, values: Iterable[ir.Value], flow: Dataflow | None = None
) -> dict[str, TypeAndShape]:
    """Types and shapes onnx shape inference gives ``values`` (main-graph tensors), by name.

    Failures of shape inference are logged and give an empty answer, never an exception.
    """
    wanted = [v for v in dict.fromkeys(values) if v.name]
    if not wanted:
        return {}
    names = {v.name for v in wanted}
    from surgery.shapes.infer import onnx_inference

    # inference is best effort: callers report what stays unknown
    try:
        proto = upstream_proto(model, wanted, flow)
    except Exception as exc:  # a graph onnx-ir cannot serialize: nothing is known
        logger.info("shape inference skipped: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return {}
    inferred = onnx_inference(proto, quiet=True)
    if inferred is None:
        return {}
    out: dict[str, TypeAndShape] = {}
    graph = inferred.graph
    for info in list(graph.output) + list(graph.value_info) + list(graph.input):
        if info.name not in names or not info.type.WhichOneof("value"):
            continue
        try:
            tp = ir.serde.deserialize_type_proto_for_type(info.type)
            shape = ir.serde.deserialize_type_proto_for_shape(info.type)
        except Exception:  # an exotic type onnx-ir cannot read: leave it unknown
            continue
        if tp is None:
            continue
        if shape is not None:
            shape = _anonymous_unknowns(shape)
        out.setdefault(info.name, (tp, shape))
    return out


def fill_types(
    model: ir.Model,
    values: Iterable[ir.Value],
    *,
    flow: Dataflow | None = None,
    explicit: Mapping[str, TypeAndShape] | None = None,
) -> list[ir.Value]:
    """Give ``values`` (of ``model``'s main graph) a type, and a shape when missing; return those still untyped.

    ``explicit`` types win over the model's own; inference runs only when something is missing.
    Values keep a shape they already have.
    """
    values = list(values)
    explicit = dict(explicit or {})
    for v in values:
        if v.name in explicit:
            tp, shape = explicit[v.name]
            v.type = tp
            if shape is not None:
                v.shape = shape
    missing = [v for v in values if v.type is None or v.shape is None]
    if missing:
        inferred = infer_types(model, missing, flow)
        for v in missing:
            found = inferred.get(v.name or "")
            if found is None:
                continue
            tp, shape = found
            if v.type is None:
                v.type = tp
            if v.shape is None and shape is not None:
                v.shape = shape
    return [v for v in values if v.type is None]


def _dtype_name(value: ir.Value) -> str | None:
    """numpy's name of the element type (``float32``, ``bool``), or the ONNX one."""
    if value.dtype is None:
        return None
    try:
        return value.dtype.numpy().name
    except Exception:
        return value.dtype.name.lower()


def type_text(value: ir.Value) -> str:
    """``float32[1,3,224,224]``-style text of a value's type (``?`` for unknown parts)."""
    dtype = _dtype_name(value) or "?"
    if value.shape is None:
        return f"{dtype}[?]"
    return f"{dtype}{shape_text(value.shape, sep=',')}"


def describe_value(value: ir.Value) -> dict:
    """A JSON-ready description: name, dtype (numpy name) and shape (ints, dim names or null)."""
    shape = None
    if value.shape is not None:
        shape = list(plain_dims(value.shape) or ())
    return {"name": value.name, "dtype": _dtype_name(value), "shape": shape}
