"""What sizes a graph input must have for the model to run: lower bounds on its symbolic dims.

A guessed dim of 8 is too short for many real models: an STFT with a 400-sample window, a Conv
whose kernel is longer than the input, a reflect Pad wider than the signal, a Slice that starts
past the end. ONNX Runtime then fails, or dies (SIGFPE) on an audio front end. The bounds are read
from the consumers of each input, following the axis through ops that keep it (elementwise ops,
Cast, Unsqueeze, Transpose) and back through ops that shrink it (Conv, pooling, Pad, STFT), so a
Pad → STFT or Conv → Conv chain asks for what its last op needs.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx_ir as ir

from surgery.graph import const_value, is_onnx_domain
from surgery.shapes.dims import is_known_dim

__all__ = ["SIGNAL_OPS", "min_dim", "nbytes", "reaches_signal_op"]

logger = logging.getLogger(__name__)

#: ops that keep every axis of their first input (same rank, same axis order).
_AXIS_KEEPING = {
    "Cast",
    "CastLike",
    "Identity",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Abs",
    "Neg",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Clip",
    "Erf",
    "Gelu",
    "Elu",
    "Selu",
    "Softplus",
    "HardSigmoid",
    "HardSwish",
    "Mish",
    "Sin",
    "Cos",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Where",
    "Dropout",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "Softmax",
    "LogSoftmax",
    "PRelu",
}
_CONV_LIKE = {"Conv", "MaxPool", "AveragePool", "LpPool", "ConvInteger", "QLinearConv"}
#: ops whose presence downstream marks a float input as a signal (audio-like) input.
SIGNAL_OPS = {"STFT", "DFT", "MelWeightMatrix", "Conv", "ConvInteger"}

_MAX_DEPTH = 24
_HUGE = 1 << 62


def _ints(value: ir.Value | None) -> list[int] | None:
    array = const_value(value)
    if array is None:
        return None
    try:
        return [int(v) for v in np.asarray(array).reshape(-1)]
    except (TypeError, ValueError):
        return None


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.as_int()) if attr is not None else default


def _ints_attr(node: ir.Node, name: str) -> list[int] | None:
    attr = node.attributes.get(name)
    return [int(v) for v in attr.as_ints()] if attr is not None else None


def _rank(value: ir.Value) -> int | None:
    return len(value.shape) if value.shape is not None else None


def min_dim(value: ir.Value, axis: int, depth: int = 0) -> int:
    """The smallest size of ``value`` along ``axis`` that every consumer can take (at least 1)."""
    if depth > _MAX_DEPTH:
        return 1
    need = 1
    for use in value.uses():
        node, idx = use.node, use.idx
        try:
            found = _need_of(node, idx, value, axis, depth)
        except Exception as exc:  # noqa: BLE001 - a malformed attribute must not stop the feeds being planned
            logger.debug("size needs of %s at %s: %s", value.name, node.name, exc)
            found = 1
        need = max(need, found)
    return need


def _need_of(node: ir.Node, idx: int, value: ir.Value, axis: int, depth: int) -> int:
    op = node.op_type if is_onnx_domain(node.domain) else ""
    out = node.outputs[0] if node.outputs else None
    if out is None:
        return 1
    if op in _AXIS_KEEPING:
        if (
            op == "Softmax"
            or op == "LayerNormalization"
            or _rank(out) == _rank(value)
            or _rank(out) is None
        ):
            return min_dim(out, axis, depth + 1)
        return 1
    if op == "Unsqueeze" and idx == 0:
        axes = _ints(node.inputs[1]) if len(node.inputs) > 1 else _ints_attr(node, "axes")
        rank = _rank(value)
        if axes is None or rank is None:
            return 1
        new_rank = rank + len(axes)
        axes = sorted(a % new_rank for a in axes)
        new_axis = axis
        for a in axes:
            if a <= new_axis:
                new_axis += 1
        return min_dim(out, new_axis, depth + 1)
    if op == "Transpose" and idx == 0:
        perm = _ints_attr(node, "perm")
        rank = _rank(value)
        if perm is None and rank is not None:
            perm = list(reversed(range(rank)))
        if perm is None or axis not in perm:
            return 1
        return min_dim(out, perm.index(axis), depth + 1)
    if op in _CONV_LIKE and idx == 0:
        return _conv_need(node, value, out, axis, depth)
    if op == "STFT" and idx == 0:
        return _stft_need(node, out, axis, depth)
    if op == "Pad" and idx == 0:
        return _pad_need(node, value, out, axis, depth)
    if op == "Slice" and idx == 0:
        return _slice_need(node, value, axis)
    return 1


def _conv_need(node: ir.Node, value: ir.Value, out: ir.Value, axis: int, depth: int) -> int:
    if axis < 2:
        return 1
    spatial = axis - 2
    kernel = _ints_attr(node, "kernel_shape")
    if kernel is None and node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        weight = node.inputs[3 if node.op_type == "QLinearConv" else 1]
        if weight is not None and weight.shape is not None and len(weight.shape) > 2:
            kernel = [d if is_known_dim(d) else 1 for d in list(weight.shape)[2:]]
    if kernel is None or spatial >= len(kernel):
        return 1
    n = len(kernel)
    dilations = _ints_attr(node, "dilations") or [1] * n
    strides = _ints_attr(node, "strides") or [1] * n
    pads = _ints_attr(node, "pads") or [0] * (2 * n)
    auto_pad = node.attributes.get("auto_pad")
    mode = auto_pad.as_string() if auto_pad is not None else "NOTSET"
    effective = (kernel[spatial] - 1) * dilations[spatial] + 1
    out_need = min_dim(out, axis, depth + 1)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        return max(1, (out_need - 1) * strides[spatial] + 1)
    pad = 0 if mode == "VALID" else pads[spatial] + pads[spatial + n]
    if _int_attr(node, "ceil_mode", 0):
        return max(1, (out_need - 1) * strides[spatial] + effective - pad - strides[spatial] + 1)
    return max(1, (out_need - 1) * strides[spatial] + effective - pad)


def _stft_need(node: ir.Node, out: ir.Value, axis: int, depth: int) -> int:
    if axis != 1:
        return 1
    frame = None
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        values = _ints(node.inputs[3])
        frame = values[0] if values else None
    if frame is None and len(node.inputs) > 2 and node.inputs[2] is not None:
        window = node.inputs[2]
        if window.shape is not None and len(window.shape) == 1 and isinstance(window.shape[0], int):
            frame = window.shape[0]
    step = _ints(node.inputs[1]) if len(node.inputs) > 1 else None
    if frame is None:
        return 1
    frames = min_dim(out, 1, depth + 1)
    hop = step[0] if step else 1
    return max(1, (frames - 1) * max(hop, 1) + frame)


def _pad_need(node: ir.Node, value: ir.Value, out: ir.Value, axis: int, depth: int) -> int:
    pads = (
        _ints(node.inputs[1])
        if len(node.inputs) > 1 and node.inputs[1] is not None
        else _ints_attr(node, "pads")
    )
    if pads is None:
        return 1
    axes = _ints(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    rank = _rank(value) or (len(pads) // 2 if axes is None else None)
    if axes is None:
        axes = list(range(len(pads) // 2))
    elif rank is not None:
        axes = [a % rank for a in axes]
    if axis not in axes or len(pads) != 2 * len(axes):
        return min_dim(out, axis, depth + 1)
    k = axes.index(axis)
    begin, end = pads[k], pads[k + len(axes)]
    need = max(1, min_dim(out, axis, depth + 1) - begin - end)
    mode_attr = node.attributes.get("mode")
    mode = mode_attr.as_string() if mode_attr is not None else "constant"
    if mode == "reflect":
        need = max(need, max(begin, end) + 1)  # a reflection cannot be wider than the signal
    elif mode == "edge":
        need = max(need, 1)
    return need


def _slice_need(node: ir.Node, value: ir.Value, axis: int) -> int:
    rank = _rank(value)
    starts = _ints(node.inputs[1]) if len(node.inputs) > 1 else None
    ends = _ints(node.inputs[2]) if len(node.inputs) > 2 else None
    if starts is None or ends is None:
        return 1
    axes = (
        _ints(node.inputs[3])
        if len(node.inputs) > 3 and node.inputs[3] is not None
        else list(range(len(starts)))
    )
    steps = (
        _ints(node.inputs[4])
        if len(node.inputs) > 4 and node.inputs[4] is not None
        else [1] * len(starts)
    )
    if axes is None or steps is None:
        return 1
    if rank is not None:
        axes = [a % rank for a in axes]
    if axis not in axes:
        return 1
    k = axes.index(axis)
    start, end, step = starts[k], ends[k], steps[k]
    if step < 0:
        return max(1, start + 1 if 0 <= start < _HUGE else -end if -_HUGE < end < 0 else 1)
    need = 1
    if 0 <= start < _HUGE:
        need = max(need, start + 1)  # the slice is not empty
    elif -_HUGE < start < 0:
        need = max(need, -start)
    if 0 < end < _HUGE:
        need = max(need, end)  # the slice is as long as the model expects
    return need


def reaches_signal_op(value: ir.Value, depth: int = 0) -> bool:
    """Whether ``value`` flows (through a few ops) into an STFT/DFT/Conv: a signal input."""
    if depth > 6:
        return False
    for use in value.uses():
        node = use.node
        if node.op_type in SIGNAL_OPS and use.idx == 0:
            return True
        if (
            node.op_type in _AXIS_KEEPING
            or node.op_type in ("Unsqueeze", "Reshape", "Pad", "Transpose", "Squeeze")
        ) and any(reaches_signal_op(o, depth + 1) for o in node.outputs):
            return True
    return False


def nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes of an array of ``shape`` and ``dtype``, in Python ints (no overflow for dims of 2^40)."""
    return math.prod(shape) * dtype.itemsize
