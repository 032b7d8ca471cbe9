"""Evaluate one ONNX node on constant numpy inputs.

The ops that make up shape computations have numpy fast paths (a few microseconds each, so a
graph of 100k shape nodes folds in seconds); every other standard op goes through
``onnx.reference``'s implementation of the node's opset version. Returns ``None`` when the node
cannot be evaluated (unknown op, reference attribute, evaluation error).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.graph import is_onnx_domain

__all__ = ["attribute_values", "evaluate_node"]

logger = logging.getLogger(__name__)

_NUMPY_TYPES = {
    ir.DataType.FLOAT,
    ir.DataType.DOUBLE,
    ir.DataType.FLOAT16,
    ir.DataType.INT8,
    ir.DataType.INT16,
    ir.DataType.INT32,
    ir.DataType.INT64,
    ir.DataType.UINT8,
    ir.DataType.UINT16,
    ir.DataType.UINT32,
    ir.DataType.UINT64,
    ir.DataType.BOOL,
}


def attribute_values(node: ir.Node) -> dict[str, Any] | None:
    """Attributes as plain Python values (tensors as ``TensorProto``); None if one is a reference."""
    out: dict[str, Any] = {}
    for name, attr in node.attributes.items():
        if attr.is_ref():
            return None
        if attr.type == ir.AttributeType.TENSOR:
            out[name] = ir.serde.serialize_tensor(attr.as_tensor())
        elif attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
            return None
        elif attr.type in (
            ir.AttributeType.INTS,
            ir.AttributeType.FLOATS,
            ir.AttributeType.STRINGS,
        ):
            out[name] = list(attr.value)
        else:
            out[name] = attr.value
    return out


def _axes_arg(
    node: ir.Node, inputs: Sequence[np.ndarray | None], index: int, opset: int, since: int
) -> list[int] | None:
    if opset >= since:
        if len(inputs) > index and inputs[index] is not None:
            return [int(a) for a in np.asarray(inputs[index]).reshape(-1)]
        return None
    attr = node.attributes.get("axes")
    return list(attr.as_ints()) if attr is not None else None


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return attr.as_int() if attr is not None else default


def _gather(node, inputs, opset):
    data, idx = inputs[0], inputs[1]
    axis = _int_attr(node, "axis", 0)
    idx = np.asarray(idx)
    dim = data.shape[axis]
    if np.any((idx < -dim) | (idx >= dim)):
        raise IndexError("Gather index out of range")
    return [np.take(data, np.where(idx < 0, idx + dim, idx), axis=axis)]


def _gather_elements(node, inputs, opset):
    """GatherElements by the spec: ``out[i][j] = data[idx[i][j]][j]`` (axis 0), so ``data`` is read
    at the index tensor's own positions on the other axes (onnx 1.23's reference raises "cannot
    reshape" when the index tensor is smaller than ``data`` there: BERT's token_type_ids buffer)."""
    data, idx = inputs[0], np.asarray(inputs[1])
    axis = _int_attr(node, "axis", 0)
    if data.ndim != idx.ndim or data.ndim == 0:
        raise ValueError("GatherElements: data and indices of different ranks")
    axis = axis + data.ndim if axis < 0 else axis
    dim = data.shape[axis]
    if np.any((idx < -dim) | (idx >= dim)):
        raise IndexError("GatherElements index out of range")
    if any(i != axis and idx.shape[i] > data.shape[i] for i in range(data.ndim)):
        raise IndexError("GatherElements indices larger than data on another axis")
    window = data[
        tuple(slice(None) if i == axis else slice(0, idx.shape[i]) for i in range(data.ndim))
    ]
    return [np.take_along_axis(window, np.where(idx < 0, idx + dim, idx), axis=axis)]


def _concat(node, inputs, opset):
    axis = _int_attr(node, "axis", 0)
    arrays = [a for a in inputs if a is not None]
    return [np.concatenate(arrays, axis=axis)]


def _unsqueeze(node, inputs, opset):
    axes = _axes_arg(node, inputs, 1, opset, 13)
    if axes is None:
        raise ValueError("Unsqueeze without axes")
    data = inputs[0]
    rank = data.ndim + len(axes)
    axes = sorted(a + rank if a < 0 else a for a in axes)
    out = data
    for a in axes:
        out = np.expand_dims(out, a)
    return [out]


def _squeeze(node, inputs, opset):
    axes = _axes_arg(node, inputs, 1, opset, 13)
    data = inputs[0]
    if axes is None:
        return [np.squeeze(data)]
    return [np.squeeze(data, axis=tuple(a + data.ndim if a < 0 else a for a in axes))]


def _slice(node, inputs, opset):
    data = inputs[0]
    if opset < 10:
        starts = list(node.attributes["starts"].as_ints())
        ends = list(node.attributes["ends"].as_ints())
        axes_attr = node.attributes.get("axes")
        axes = list(axes_attr.as_ints()) if axes_attr is not None else list(range(len(starts)))
        steps = [1] * len(starts)
    else:
        starts = [int(v) for v in inputs[1].reshape(-1)]
        ends = [int(v) for v in inputs[2].reshape(-1)]
        axes = (
            [int(v) for v in inputs[3].reshape(-1)]
            if len(inputs) > 3 and inputs[3] is not None
            else list(range(len(starts)))
        )
        steps = (
            [int(v) for v in inputs[4].reshape(-1)]
            if len(inputs) > 4 and inputs[4] is not None
            else [1] * len(starts)
        )
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        if st == 0:
            raise ValueError("Slice step 0")
        a = a + data.ndim if a < 0 else a
        # numpy slices clamp like ONNX; INT64 max/min sentinels are fine for Python ints
        index[a] = slice(s, e, st)
    return [data[tuple(index)]]


def _reshape(node, inputs, opset):
    data, shape = inputs[0], [int(v) for v in inputs[1].reshape(-1)]
    allowzero = _int_attr(node, "allowzero", 0)
    if not allowzero:
        shape = [data.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [data.reshape(shape)]


def _cast(node, inputs, opset):
    to = ir.DataType(node.attributes["to"].as_int())
    if to not in _NUMPY_TYPES or inputs[0].dtype.kind not in "biuf":
        raise NotImplementedError
    return [inputs[0].astype(to.numpy())]


def _range(node, inputs, opset):
    start, limit, delta = (np.asarray(a).reshape(()) for a in inputs[:3])
    dtype = np.asarray(inputs[0]).dtype
    if delta == 0:
        raise ValueError("Range delta 0")
    n = max(int(np.ceil((limit - start) / delta)), 0)
    return [
        (start + np.arange(n, dtype=np.float64 if dtype.kind == "f" else np.int64) * delta).astype(
            dtype
        )
    ]


def _constant_of_shape(node, inputs, opset):
    shape = [int(v) for v in inputs[0].reshape(-1)]
    attr = node.attributes.get("value")
    if attr is None:
        return [np.zeros(shape, dtype=np.float32)]
    fill = attr.as_tensor().numpy().reshape(-1)
    return [np.full(shape, fill[0], dtype=fill.dtype)]


def _expand(node, inputs, opset):
    data, shape = inputs[0], [int(v) for v in inputs[1].reshape(-1)]
    target = np.broadcast_shapes(data.shape, tuple(shape))
    return [np.broadcast_to(data, target).copy()]


def _where(node, inputs, opset):
    return [np.where(inputs[0], inputs[1], inputs[2])]


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def run(node, inputs, opset):
        a, b = inputs[0], inputs[1]
        if a.dtype != b.dtype:
            raise TypeError("mixed dtypes")
        out = fn(a, b)
        return [out.astype(a.dtype) if out.dtype != a.dtype and out.dtype != np.bool_ else out]

    return run


def _compare(fn):
    def run(node, inputs, opset):
        return [np.asarray(fn(inputs[0], inputs[1]))]

    return run


def _variadic(fn):
    def run(node, inputs, opset):
        arrays = [a for a in inputs if a is not None]
        out = arrays[0]
        for a in arrays[1:]:
            out = fn(out, a)
        return [np.asarray(out)]

    return run


def _unary(fn):
    def run(node, inputs, opset):
        return [np.asarray(fn(inputs[0])).astype(inputs[0].dtype)]

    return run


def _div(node, inputs, opset):
    a, b = inputs[0], inputs[1]
    if a.dtype != b.dtype:
        raise TypeError("mixed dtypes")
    if a.dtype.kind in "iu":
        if np.any(b == 0):
            raise ZeroDivisionError("integer division by zero")
        q = np.floor_divide(a, b)
        adjust = (np.remainder(a, b) != 0) & ((a < 0) ^ (b < 0))  # C-style truncation, as ONNX
        return [(q + adjust.astype(q.dtype)).astype(a.dtype)]
    return [np.divide(a, b).astype(a.dtype)]


def _identity(node, inputs, opset):
    return [inputs[0]]


_FAST: dict[str, Callable[[ir.Node, list[Any], int], list[np.ndarray]]] = {
    "Identity": _identity,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "Concat": _concat,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Slice": _slice,
    "Reshape": _reshape,
    "Cast": _cast,
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "Where": _where,
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _div,
    "Equal": _compare(np.equal),
    "Greater": _compare(np.greater),
    "Less": _compare(np.less),
    "GreaterOrEqual": _compare(np.greater_equal),
    "LessOrEqual": _compare(np.less_equal),
    "And": _compare(np.logical_and),
    "Or": _compare(np.logical_or),
    "Xor": _compare(np.logical_xor),
    "Not": lambda node, inputs, opset: [np.logical_not(inputs[0])],
    "Neg": _unary(np.negative),
    "Abs": _unary(np.abs),
    "Min": _variadic(np.minimum),
    "Max": _variadic(np.maximum),
}


@functools.cache
def _reference_op(domain: str, op_type: str, version: int) -> Any:
    try:
        from onnx.reference.ops import load_op

        return load_op(domain, op_type, version)
    except Exception:  # no reference implementation
        return None


def evaluate_node(
    node: ir.Node, inputs: list[np.ndarray | None], opset: int
) -> list[np.ndarray] | None:
    """Outputs of ``node`` for constant ``inputs`` (None for an absent optional input)."""
    domain = node.domain if not is_onnx_domain(node.domain) else ""
    if domain == "" and node.op_type in _FAST:
        try:
            return [np.asarray(o) for o in _FAST[node.op_type](node, inputs, opset)]
        except NotImplementedError:
            pass
        except Exception as exc:  # evaluation error: leave the node alone
            logger.debug("cannot evaluate %s (%s): %s", node.name, node.op_type, exc)
            return None
    op_class = _reference_op(domain, node.op_type, opset)
    if op_class is None:
        return None
    attrs = attribute_values(node)
    if attrs is None:
        return None
    # trailing absent optional inputs are dropped; inner ones stay None
    args = list(inputs)
    while args and args[-1] is None:
        args.pop()
    try:
        result = op_class.eval(*args, n_outputs=len(node.outputs), **attrs)
    except Exception as exc:
        logger.debug("reference evaluation of %s (%s) failed: %s", node.name, node.op_type, exc)
        return None
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    if len(outputs) != len(node.outputs):
        return None
    converted = []
    for out in outputs:
        if not isinstance(out, np.ndarray) and not np.isscalar(out):
            return None
        converted.append(np.asarray(out))
    return converted
