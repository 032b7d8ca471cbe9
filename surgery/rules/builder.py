"""Builds replacement nodes: named after the node they replace, right for the graph's opset.

``b.op("Mul", x, b.const(0.5))`` creates a node called ``<replaced>/Mul`` (``…/Mul_1`` …) whose
output is ``<replaced>/Mul_out``. Constants are ``Constant`` nodes, so replacements work the same
in the main graph, in ``If``/``Loop`` bodies and in model-local functions (which cannot hold
initializers). Helpers such as :meth:`Builder.reduce`, :meth:`Builder.unsqueeze` and
:meth:`Builder.split` emit the form the graph's ``ai.onnx`` opset expects (``axes`` as an attribute
or as an input).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.graph import NameAllocator

__all__ = ["Builder"]


class Builder:
    """Collects new nodes for one rewrite.

    Args:
        names: the model's name allocator.
        base: the name new nodes derive theirs from (usually the replaced node's name).
        opset: the ``ai.onnx`` version of the graph the nodes go into.
    """

    def __init__(
        self,
        names: NameAllocator,
        base: str,
        opset: int,
        dtype_of: Callable[[ir.Value], ir.DataType | None] | None = None,
    ) -> None:
        self.names = names
        self.dtype_of = dtype_of or (lambda v: v.dtype)
        self.base = base or "rewrite"
        self.opset = opset
        self.nodes: list[ir.Node] = []
        self._consts: dict[tuple, ir.Value] = {}

    # ---- generic nodes -------------------------------------------------------------------
    def op(
        self,
        op_type: str,
        *inputs: ir.Value | None,
        domain: str = "",
        outputs: int = 1,
        suffix: str | None = None,
        name: str | None = None,
        **attrs: Any,
    ) -> Any:
        """Add a node; return its output value (or a tuple when ``outputs > 1``).

        The node is named ``<base>/<suffix or op_type>`` unless ``name`` gives the exact name
        (for a node that takes over the name of the one it replaces).
        """
        attributes = (
            ir.convenience.convert_attributes(
                {k: _attr(v) for k, v in attrs.items() if v is not None}
            )
            if attrs
            else []
        )
        # Trailing absent inputs are dropped; absent ones in the middle stay empty.
        ins = list(inputs)
        while ins and ins[-1] is None:
            ins.pop()
        node_name = name if name is not None else self.names.derive(self.base, suffix or op_type)
        node = ir.Node(domain, op_type, ins, attributes, num_outputs=outputs, name=node_name)
        for i, out in enumerate(node.outputs):
            out.name = self.names.derive(node_name, "out" if outputs == 1 else f"out{i}")
        self.nodes.append(node)
        return node.outputs[0] if outputs == 1 else tuple(node.outputs)

    def const(self, value: Any, suffix: str = "const", dtype: Any = None) -> ir.Value:
        """A ``Constant`` node holding ``value`` (``dtype`` is a numpy dtype or ``ir.DataType``)."""
        if isinstance(dtype, ir.DataType):
            dtype = dtype.numpy()
        array = np.asarray(value, dtype=dtype)
        if dtype is None and array.dtype == np.float64 and not isinstance(value, np.ndarray):
            array = array.astype(np.float32)  # Python floats default to float32 unless asked
        key = (array.dtype.str, array.shape, array.tobytes())
        if key in self._consts:  # one Constant per distinct value within a rewrite
            return self._consts[key]
        name = self.names.derive(self.base, suffix)
        tensor = ir.Tensor(np.asarray(array, order="C"), name=name)
        node = ir.Node("", "Constant", [], [ir.AttrTensor("value", tensor)], name=name)
        out = node.outputs[0]
        out.name = self.names.derive(name, "out")
        out.type = ir.TensorType(tensor.dtype)
        out.shape = ir.Shape(array.shape)
        out.const_value = tensor
        self.nodes.append(node)
        self._consts[key] = out
        return out

    def scalar(
        self, value: float, like: ir.Value, suffix: str = "c", dtype: ir.DataType | None = None
    ) -> ir.Value:
        """A scalar constant of ``like``'s element type (or ``dtype``; CastLike when unknown)."""
        dtype = dtype or self.dtype_of(like)
        if dtype is not None and dtype not in (ir.DataType.BFLOAT16,) and dtype.is_floating_point():
            return self.const(np.asarray(value, dtype=dtype.numpy()), suffix)
        if dtype is not None and dtype.is_integer():
            return self.const(np.asarray(value, dtype=dtype.numpy()), suffix)
        c = self.const(np.asarray(value, dtype=np.float32), suffix)
        if dtype == ir.DataType.FLOAT:
            return c
        if dtype is not None:
            return self.op("Cast", c, to=int(dtype))
        if self.opset >= 15:
            return self.op("CastLike", c, like)
        return c  # unknown type before CastLike existed: float32 is the only sensible guess

    def ints(self, values: Sequence[int], suffix: str = "ints") -> ir.Value:
        return self.const(np.asarray(list(values), dtype=np.int64), suffix)

    # ---- opset-aware helpers -------------------------------------------------------------
    def cast(self, x: ir.Value, to: ir.DataType) -> ir.Value:
        return self.op("Cast", x, to=int(to))

    def unsqueeze(self, x: ir.Value, axes: Sequence[int]) -> ir.Value:
        if self.opset >= 13:
            return self.op("Unsqueeze", x, self.ints(axes, "axes"))
        return self.op("Unsqueeze", x, axes=list(axes))

    def squeeze(self, x: ir.Value, axes: Sequence[int]) -> ir.Value:
        if self.opset >= 13:
            return self.op("Squeeze", x, self.ints(axes, "axes"))
        return self.op("Squeeze", x, axes=list(axes))

    def reduce(self, op_type: str, x: ir.Value, axes: Sequence[int], keepdims: int = 1) -> ir.Value:
        """A reduction over ``axes``; ``axes`` goes in as an input where the opset wants it."""
        axes_as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if axes_as_input:
            return self.op(op_type, x, self.ints(axes, "axes"), keepdims=keepdims)
        return self.op(op_type, x, axes=list(axes), keepdims=keepdims)

    def split(self, x: ir.Value, sizes: Sequence[int], axis: int = 0) -> tuple[ir.Value, ...]:
        n = len(sizes)
        if self.opset >= 13:
            outs = self.op("Split", x, self.ints(sizes, "split"), axis=axis, outputs=n)
        else:
            outs = self.op("Split", x, axis=axis, split=list(sizes), outputs=n)
        return outs if n > 1 else (outs,)

    def slice(
        self,
        x: ir.Value,
        starts: Sequence[int] | ir.Value,
        ends: Sequence[int] | ir.Value,
        axes: Sequence[int] | None = None,
        steps: Sequence[int] | None = None,
    ) -> ir.Value:
        def as_value(v: Sequence[int] | ir.Value, suffix: str) -> ir.Value:
            return v if isinstance(v, ir.Value) else self.ints(v, suffix)

        return self.op(
            "Slice",
            x,
            as_value(starts, "starts"),
            as_value(ends, "ends"),
            self.ints(axes, "axes") if axes is not None else None,
            self.ints(steps, "steps") if steps is not None else None,
        )

    def clip(
        self, x: ir.Value, lo: float | None, hi: float | None, dtype: Any = np.float32
    ) -> ir.Value:
        if self.opset >= 11:
            return self.op(
                "Clip",
                x,
                self.const(np.asarray(lo, dtype=dtype), "min") if lo is not None else None,
                self.const(np.asarray(hi, dtype=dtype), "max") if hi is not None else None,
            )
        return self.op("Clip", x, min=lo, max=hi)

    def shape(self, x: ir.Value, start: int = 0, end: int | None = None) -> ir.Value:
        if start == 0 and end is None:
            return self.op("Shape", x)
        if self.opset >= 15:
            return self.op("Shape", x, start=start, end=end)
        full = self.op("Shape", x)
        return self.slice(full, [start], [end if end is not None else np.iinfo(np.int64).max], [0])


def _attr(value: Any) -> Any:
    if isinstance(value, ir.DataType):
        return int(value)
    if isinstance(value, np.ndarray):
        return ir.tensor(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    return value
