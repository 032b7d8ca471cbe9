"""``decompose-dft``: DFT as one MatMul and STFT as one Conv, for compilers that have neither.

ATC has no parser for ``DFT`` or ``STFT`` (opset 17/20), and audio front ends written in
onnxscript use them. A DFT of length ``n`` is a matrix product with the ``n × m`` matrix of
twiddle factors ``exp(∓2πi·jk/n)``; written on ONNX's interleaved ``[..., re, im]`` layout it is a
single real MatMul:

- **DFT**: the signal axis is moved next to the complex axis (Transpose, when it is not already),
  the two are flattened (``Reshape [0, …, 0, -1]``), multiplied by a constant ``(L·c) × (2m)``
  matrix (``c`` = 1 for real, 2 for complex input; ``L`` the input length, ``n`` = ``dft_length``:
  rows past ``n`` are zero — truncation — and a longer ``n`` only changes the angles — zero
  padding), reshaped to ``[..., m, 2]`` and moved back. ``inverse`` conjugates the factors and
  scales by ``1/n``; ``onesided`` keeps ``m = n/2 + 1`` bins. DFT-17 (``axis`` attribute, default 1)
  and DFT-20 (``axis`` input, default -2) are both read.
- **STFT**: framing, windowing and the DFT of every frame are one strided 2-D Conv: the signal
  ``[B, L, c]`` becomes ``[B, c, 1, L]``, the kernel ``[2m, c, 1, frame_length]`` holds
  ``window[j]·exp(-2πi·jk/frame_length)`` on the interleaved layout, the stride is
  ``frame_step``, and ``[B, 2m, 1, F]`` is transposed and reshaped to ``[B, F, m, 2]``. A constant
  window is folded into the kernel; a window given at run time multiplies it (one Mul). The
  defaults are ONNX's: ``onesided = 1``, a rectangular window, ``frame_length`` = the window's.
  A ``[B, L]`` signal (what ``torch.stft`` exports; ONNX Runtime reads it as real) is taken too.

Results match ONNX Runtime's FFT to float rounding (sums of ``n`` products instead of an FFT's
``log n`` stages), hence ``approx``. Needs: the signal's rank, the complex axis's size and (for DFT)
the signal length static; ``dft_length``, ``axis``, ``frame_step`` and ``frame_length`` constants.
A node that does not qualify is left as it was with a note naming why (including a matrix larger
than ``max_matrix_elements``, and ``onesided`` on complex input, which ONNX does not define).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from surgery.graph import ONNX_DOMAINS, const_value
from surgery.options import option
from surgery.pass_base import Numerics, Tolerance
from surgery.registry import register
from surgery.rules import Builder, Miss, Replacement, RuleContext, RulePass
from surgery.rules.engine import RuleLike

__all__ = ["DecomposeDft", "dft_matrix", "stft_kernel"]

_FLOATS: dict[ir.DataType | None, type[np.floating]] = {
    ir.DataType.FLOAT: np.float32,
    ir.DataType.DOUBLE: np.float64,
    ir.DataType.FLOAT16: np.float16,
}


def dft_matrix(length: int, n: int, bins: int, complex_input: bool, inverse: bool) -> np.ndarray:
    """The ``(length·c) × (2·bins)`` float64 matrix taking an interleaved signal to interleaved bins.

    Row ``j`` (``2j``, ``2j+1`` for complex input) is sample ``j``; rows with ``j ≥ n`` stay zero
    (the signal is truncated to ``n``). Column ``2k`` is bin ``k``'s real part, ``2k+1`` its imaginary.
    """
    used = min(length, n)
    j = np.arange(used, dtype=np.float64)[:, None]
    k = np.arange(bins, dtype=np.float64)[None, :]
    angle = 2.0 * np.pi * ((j * k) % n) / n  # reduce jk mod n first: exact for large products
    cos, sin = np.cos(angle), np.sin(angle) * (1.0 if inverse else -1.0)
    scale = 1.0 / n if inverse else 1.0
    c = 2 if complex_input else 1
    out = np.zeros((length * c, 2 * bins), dtype=np.float64)
    if complex_input:  # (a + ib)(cos + i sin) = (a cos - b sin) + i(a sin + b cos)
        out[0 : 2 * used : 2, 0::2], out[0 : 2 * used : 2, 1::2] = cos, sin
        out[1 : 2 * used : 2, 0::2], out[1 : 2 * used : 2, 1::2] = -sin, cos
    else:
        out[:used, 0::2], out[:used, 1::2] = cos, sin
    return out * scale


def stft_kernel(
    frame_length: int, bins: int, complex_input: bool, window: np.ndarray | None
) -> np.ndarray:
    """The Conv weight ``[2·bins, c, 1, frame_length]`` of a windowed forward DFT of each frame."""
    matrix = dft_matrix(
        frame_length, frame_length, bins, complex_input, inverse=False
    )  # (fl·c, 2·bins)
    c = 2 if complex_input else 1
    kernel = matrix.reshape(frame_length, c, 2 * bins).transpose(2, 1, 0)[:, :, None, :]
    if window is not None:
        kernel = kernel * np.asarray(window, dtype=np.float64).reshape(1, 1, 1, frame_length)
    return np.ascontiguousarray(kernel)


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None or attr.is_ref() else int(attr.value)


def _const_int(value: ir.Value | None) -> int | None:
    array = const_value(value)
    if array is None or array.size != 1:
        return None
    return int(array.reshape(-1)[0])


def _static_dims(shape: ir.Shape | None) -> list[int | None] | None:
    if shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


class _SpectralRule:
    """Shared checks of the DFT and STFT rules."""

    op = ""

    def __init__(self, max_elements: int) -> None:
        self.max_elements = max_elements
        self.name = f"decompose-{self.op.lower()}"

    def targets(self, node: ir.Node) -> bool:
        return node.op_type == self.op and node.domain in ONNX_DOMAINS

    @staticmethod
    def _signal(ctx: RuleContext, x: ir.Value) -> tuple[list[int | None], np.dtype] | str:
        dims = _static_dims(ctx.shape(x))
        dtype = ctx.dtype(x)
        if dims is None:
            return "the input's rank is unknown"
        if len(dims) < 2 or dims[-1] not in (1, 2):
            return f"the input's last dim is {dims[-1] if dims else '?'} (1 for real, 2 for complex, static)"
        if dtype not in _FLOATS:
            return f"the input's element type is {dtype.name if dtype is not None else 'unknown'}"
        return dims, np.dtype(_FLOATS[dtype])

    def _too_big(self, elements: int) -> str | None:
        if elements > self.max_elements:
            return f"its matrix would have {elements} elements (max_matrix_elements = {self.max_elements})"
        return None

    @staticmethod
    def _typed(b: Builder, dtype: ir.DataType) -> None:
        for node in b.nodes:
            for out in node.outputs:
                if out.type is None:
                    out.type = ir.TensorType(dtype)


class DftRule(_SpectralRule):
    """DFT → [Transpose] → Reshape → MatMul(twiddle matrix) → Reshape → [Transpose]."""

    op = "DFT"

    def rewrite(self, ctx: RuleContext, node: ir.Node) -> Replacement | Miss:
        x = node.inputs[0]
        if x is None:
            return Miss("DFT without input")
        signal = self._signal(ctx, x)
        if isinstance(signal, str):
            return Miss(signal)
        dims, np_dtype = signal
        rank = len(dims)
        version = node.version or ctx.opsets.get("", ctx.opsets.get("ai.onnx", 17))
        if version >= 20:
            axis_value = node.inputs[2] if len(node.inputs) > 2 else None
            axis = -2 if axis_value is None else _const_int(axis_value)
            if axis is None:
                return Miss("its axis is not a constant")
        else:
            axis = _attr_int(node, "axis", 1)
        if not -rank <= axis < rank:
            return Miss(f"axis {axis} is out of range for rank {rank}")
        axis %= rank
        if axis == rank - 1:
            return Miss("axis is the complex axis")
        length = dims[axis]
        if length is None:
            return Miss(f"the signal length (dim {axis}) is not static")
        length_value = node.inputs[1] if len(node.inputs) > 1 else None
        n = length if length_value is None else _const_int(length_value)
        if n is None or n < 1:
            return Miss("dft_length is not a positive constant")
        inverse, onesided = _attr_int(node, "inverse", 0), _attr_int(node, "onesided", 0)
        complex_input = dims[-1] == 2
        if onesided and complex_input:
            return Miss(
                "onesided output of a complex input (ONNX defines onesided for real input only)"
            )
        if onesided and inverse:
            return Miss(
                "onesided with inverse (a real inverse transform of a half spectrum is not a DFT)"
            )
        bins = n // 2 + 1 if onesided else n
        too_big = self._too_big(length * dims[-1] * 2 * bins)  # type: ignore[operator]
        if too_big:
            return Miss(too_big)
        dtype = ctx.dtype(x)
        assert dtype is not None
        b = ctx.builder(node)
        last = rank - 1
        perm = [d for d in range(last) if d != axis] + [axis, last]
        moved = x if perm == list(range(rank)) else b.op("Transpose", x, perm=perm)
        flat = b.op("Reshape", moved, b.ints([0] * (rank - 2) + [-1], "flat_shape"))
        matrix = b.const(
            dft_matrix(length, n, bins, complex_input, bool(inverse)).astype(np_dtype), "twiddle"
        )
        spectrum = b.op("MatMul", flat, matrix)
        y = b.op("Reshape", spectrum, b.ints([0] * (rank - 2) + [bins, 2], "bins_shape"))
        moved_dims = [dims[d] for d in perm]
        flat.shape = ir.Shape([*moved_dims[:-2], length * dims[-1]])  # type: ignore[operator]
        spectrum.shape = ir.Shape([*moved_dims[:-2], 2 * bins])
        y.shape = ir.Shape([*moved_dims[:-2], bins, 2])
        if moved is not x:
            moved.shape = ir.Shape(moved_dims)
            inverse_perm = [perm.index(d) for d in range(rank)]
            y = b.op("Transpose", y, perm=inverse_perm)
            out_dims = list(dims)
            out_dims[axis], out_dims[-1] = bins, 2
            y.shape = ir.Shape(out_dims)
        self._typed(b, dtype)
        return Replacement(node, [node], list(node.outputs), b.nodes, [y])


class StftRule(_SpectralRule):
    """STFT → Reshape → Transpose → Conv(windowed twiddle kernel, stride frame_step) → Transpose → Reshape."""

    op = "STFT"

    def rewrite(self, ctx: RuleContext, node: ir.Node) -> Replacement | Miss:
        x = node.inputs[0]
        if x is None:
            return Miss("STFT without signal")
        shape = ctx.shape(x)
        if shape is not None and len(shape) == 2 and ctx.dtype(x) in _FLOATS:
            # [batch, length]: a real signal without its complex axis (torch.stft exports it so,
            # ONNX Runtime reads it as real)
            dims, np_dtype = [*(_static_dims(shape) or []), 1], np.dtype(_FLOATS[ctx.dtype(x)])
        else:
            signal = self._signal(ctx, x)
            if isinstance(signal, str):
                return Miss(signal)
            dims, np_dtype = signal
        if len(dims) != 3:
            return Miss(
                f"the signal has rank {len(dims)} (STFT takes [batch, length, 1|2] or [batch, length])"
            )
        step = _const_int(node.inputs[1] if len(node.inputs) > 1 else None)
        if step is None or step < 1:
            return Miss("frame_step is not a positive constant")
        window = node.inputs[2] if len(node.inputs) > 2 else None
        length_value = node.inputs[3] if len(node.inputs) > 3 else None
        frame_length = _const_int(length_value) if length_value is not None else None
        if length_value is not None and frame_length is None:
            return Miss("frame_length is not a constant")
        window_dims = _static_dims(ctx.shape(window)) if window is not None else None
        if frame_length is None:
            if window_dims is None or len(window_dims) != 1 or window_dims[0] is None:
                return Miss("neither frame_length nor a window of static length is given")
            frame_length = window_dims[0]
        window_array = const_value(window) if window is not None else None
        if window_array is not None and window_array.size != frame_length:
            return Miss(
                f"the window has {window_array.size} values for frame_length {frame_length}"
            )
        onesided = _attr_int(node, "onesided", 1)
        complex_input = dims[-1] == 2
        if onesided and complex_input:
            return Miss(
                "onesided output of a complex signal (ONNX defines onesided for real input only)"
            )
        bins = frame_length // 2 + 1 if onesided else frame_length
        c = int(dims[-1])  # type: ignore[arg-type]
        too_big = self._too_big(2 * bins * c * frame_length)
        if too_big:
            return Miss(too_big)
        dtype = ctx.dtype(x)
        assert dtype is not None
        b = ctx.builder(node)
        planes = b.op("Reshape", x, b.ints([0, 1, -1, c], "planes_shape"))  # [B, 1, L, c]
        channels = b.op("Transpose", planes, perm=[0, 3, 1, 2])  # [B, c, 1, L]
        kernel_values = stft_kernel(frame_length, bins, complex_input, window_array).astype(
            np_dtype
        )
        kernel = b.const(kernel_values, "kernel")
        if window is not None and window_array is None:  # a window given at run time
            shaped = b.op("Reshape", window, b.ints([1, 1, 1, frame_length], "window_shape"))
            kernel = b.op("Mul", kernel, shaped)
            kernel.shape = ir.Shape(list(kernel_values.shape))
        frames = b.op(
            "Conv", channels, kernel, kernel_shape=[1, frame_length], strides=[1, step]
        )  # [B, 2m, 1, F]
        last = b.op("Transpose", frames, perm=[0, 2, 3, 1])  # [B, 1, F, 2m]
        y = b.op("Reshape", last, b.ints([0, -1, bins, 2], "bins_shape"))
        batch, length = dims[0], dims[1]
        count = None if length is None else (length - frame_length) // step + 1
        planes.shape = ir.Shape([batch, 1, length, c])
        channels.shape = ir.Shape([batch, c, 1, length])
        frames.shape = ir.Shape([batch, 2 * bins, 1, count])
        last.shape = ir.Shape([batch, 1, count, 2 * bins])
        y.shape = ir.Shape([batch, count, bins, 2])
        self._typed(b, dtype)
        return Replacement(node, [node], list(node.outputs), b.nodes, [y])


@register
class DecomposeDft(RulePass):
    """Decompose DFT into one MatMul and STFT into one Conv (twiddle factors as constants).

    For compilers without DFT/STFT (ATC). Covers real/complex input, inverse, onesided, dft_length,
    axis (DFT-17 and -20), window, frame_step and frame_length.
    """

    name = "decompose-dft"
    numerics = Numerics.APPROX
    default_tolerance = Tolerance(rtol=1e-3, atol=1e-3)

    @dataclasses.dataclass(frozen=True)
    class Options:
        max_matrix_elements: int = option(
            1 << 24,
            help="leave a DFT/STFT alone when its twiddle matrix would have more elements than this",
        )

    def rules(self) -> Sequence[RuleLike]:
        return [
            DftRule(self.options.max_matrix_elements),
            StftRule(self.options.max_matrix_elements),
        ]
