"""Types and shapes of intermediate tensors, from the model or from onnx shape inference.

Exported models often carry no ``value_info`` (the legacy torch exporter writes none), yet a new
graph input or output needs an element type and, ideally, a shape. :func:`fill_types` asks onnx's
shape inference for the missing ones on a proto *without the large weights*
(:class:`~surgery.model_io.LightProto`), so it works on models over 2 GB and never touches the
model being edited except to set the types it was asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import onnx
import onnx_ir as ir

from surgery.model_io import LightProto

__all__ = ["infer_types", "fill_types", "describe_value", "type_text"]

logger = logging.getLogger(__name__)


def infer_types(model: ir.Model, names: Iterable[str] | None = None) -> dict[str, tuple[ir.TypeProtocol, ir.Shape | None]]:
    """Types and shapes onnx shape inference gives main-graph tensors (``names`` only, if given).

    Failures of shape inference are logged and give an empty answer, never an exception.
    """
    wanted = set(names) if names is not None else None
    light = LightProto(model)
    proto = light.for_checker()
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is best effort: callers report what stays unknown
        logger.info("onnx shape inference failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return {}
    out: dict[str, tuple[ir.TypeProtocol, ir.Shape | None]] = {}
    graph = inferred.graph
    for info in list(graph.value_info) + list(graph.output) + list(graph.input):
        if wanted is not None and info.name not in wanted:
            continue
        if not info.type.WhichOneof("value"):
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


def _anonymous_unknowns(shape: ir.Shape) -> ir.Shape:
    """Drop the ``unk__N`` names onnx shape inference invents for unknown dims."""
    dims = [None if isinstance(d, ir.SymbolicDim) and isinstance(d.value, str) and d.value.startswith("unk__") else d
            for d in shape]
    return ir.Shape(dims)


def fill_types(model: ir.Model, values: Iterable[ir.Value], *, explicit: Mapping[str, tuple[ir.TypeProtocol, ir.Shape | None]] | None = None) -> list[ir.Value]:
    """Give ``values`` a type (and a shape when missing) and return those still untyped.

    ``explicit`` types win over the model's own; inference runs only when something is missing.
    Values keep a richer shape they already have.
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
        inferred = infer_types(model, [v.name for v in missing if v.name])
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
    dims = ",".join(str(d) if isinstance(d, int) else (str(d.value) if d.value is not None else "?") for d in value.shape)
    return f"{dtype}[{dims}]"


def describe_value(value: ir.Value) -> dict:
    """A JSON-ready description: name, dtype (numpy name) and shape (ints, dim names or null)."""
    dtype = _dtype_name(value)
    shape = None
    if value.shape is not None:
        shape = [d if isinstance(d, int) else d.value for d in value.shape]
    return {"name": value.name, "dtype": dtype, "shape": shape}
