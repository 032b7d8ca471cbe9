"""Decompositions for convert-opset: ops that do not exist at the target opset, as older ops.

Each ``@decomposition(op)`` function replaces one node by ops the target opset has; the driver in
``convert_opset`` calls it when the op is newer than the target (and for GroupNormalization 21,
whose scale/bias changed meaning). Importing this module fills ``DECOMPOSITIONS`` (defined in
``opset_steps``, re-exported here so that importing the table from this module guarantees it is
filled). This module registers no pass.

Decomposed: Gelu (20), LayerNormalization (17), GroupNormalization (18; and 21, whose scale/bias
are per channel), Mish (18), HardSwish (14), Swish (24), and what torch 2.13 exports above opset 18:

- AffineGrid (20; ``F.affine_grid`` with the TorchScript exporter): a MatMul of a constant
  base grid (from a constant ``size``; built with Range otherwise) with θᵀ, 2-D and 3-D,
  ``align_corners`` 0/1 (a 1-long axis gets ONNX Runtime's coordinate);
- RMSNormalization (23; ``nn.RMSNorm`` with the dynamo exporter at opset 23);
- RotaryEmbedding (23; ``torch.onnx.ops.rotary_embedding``): 3-D/4-D input, position ids or
  batched caches, halves or interleaved, partial ``rotary_embedding_dim``;
- Attention (23/24/25; ``F.scaled_dot_product_attention`` with the dynamo exporter at 23):
  3-D/4-D Q/K/V, bool or float ``attn_mask`` (a fully masked row gives 0, as in ORT),
  ``is_causal`` (offset by a KV cache), ``scale``, GQA/MQA, ``past_key``/``past_value`` with
  the ``present_*`` outputs, ``softcap``, ``softmax_precision``, ``qk_matmul_output`` in modes 0
  (no softcap) and 3. Refused, naming what: ``nonpad_kv_seqlen`` (24), a sliding window (25),
  ``qk_matmul_output`` in modes 1/2;
- DeformConv (19; ``torchvision.ops.deform_conv2d`` with the dynamo exporter): GridSample
  (16) sampling at the offset taps, mask, then a grouped MatMul; needs X's C/H/W static and a
  target ≥ 16 (decompose-gridsample can remove the GridSample afterwards).

Other ops newer than 18 (ImageDecoder, the string ops, TensorScatter, CumProd, BitCast, SwiGLU,
LinearAttention, …) are not produced by torch 2.13's exporters and have no decomposition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from surgery.graph import const_value
from surgery.rules import Builder
from surgery.rules.formulas import gelu_exact, gelu_tanh
from surgery.rules.opset_steps import DECOMPOSITIONS, OpsetStep, Refuse, decomposition
from surgery.shapes.dims import is_known_dim

__all__ = ["DECOMPOSITIONS"]


# ---- activations and normalizations ------------------------------------------------------


@decomposition("Gelu")
def _gelu(step: OpsetStep) -> None:
    b = step.builder()
    mode = step.attr("approximate", "none")
    x = step.node.inputs[0]
    assert x is not None
    y = gelu_tanh(b, x) if mode == "tanh" else gelu_exact(b, x)
    step.replace(b.nodes, [y])


def _rank(step: OpsetStep, value: ir.Value | None) -> int | None:
    shape = step.ctx.shape(value) if value is not None else None
    return len(shape) if shape is not None else None


def _normalized_axes(step: OpsetStep, x: ir.Value) -> list[int]:
    """The axes a LayerNormalization/RMSNormalization normalizes: from ``axis`` to the last."""
    axis = int(step.attr("axis", -1))
    if axis < 0:
        return list(range(axis, 0))
    rank = _rank(step, x)
    if rank is None:
        raise Refuse(f"axis={axis} on an input of unknown rank")
    return list(range(axis, rank))


def _stash(
    step: OpsetStep, b: Builder, x: ir.Value
) -> tuple[ir.Value, ir.DataType | None, ir.DataType | None]:
    """Cast half-precision input up to float32 when stash_type asks for it (ONNX's definition).

    Returns the value to normalize, the type to cast back to (or None) and the compute type.
    """
    dtype = step.ctx.dtype(x)
    stash = int(step.attr("stash_type", 1))
    if dtype in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16) and stash == int(ir.DataType.FLOAT):
        return b.cast(x, ir.DataType.FLOAT), dtype, ir.DataType.FLOAT
    return x, None, dtype


def _normalize(
    b: Builder, x: ir.Value, axes: Sequence[int], eps: float, dtype: ir.DataType | None
) -> tuple[ir.Value, ir.Value, ir.Value]:
    mean = b.reduce("ReduceMean", x, axes)
    d = b.op("Sub", x, mean)
    var = b.reduce("ReduceMean", b.op("Mul", d, d), axes)
    inv = b.op(
        "Reciprocal", b.op("Sqrt", b.op("Add", var, b.scalar(eps, x, "epsilon", dtype=dtype)))
    )
    return b.op("Mul", d, inv), mean, inv


@decomposition("LayerNormalization")
def _layernorm(step: OpsetStep) -> None:
    node = step.node
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    assert x is not None and scale is not None
    axes = _normalized_axes(step, x)
    b = step.builder()
    xs, back, compute = _stash(step, b, x)
    y, mean, inv = _normalize(b, xs, axes, float(step.attr("epsilon", 1e-5)), compute)
    if back is not None:
        y = b.cast(y, back)
    y = b.op("Mul", y, scale)
    if bias is not None:
        y = b.op("Add", y, bias)
    step.replace(b.nodes, [y, mean, inv][: len(node.outputs)])


@decomposition("GroupNormalization")
def _groupnorm(step: OpsetStep) -> None:
    node = step.node
    x, scale, bias = node.inputs[0], node.inputs[1], node.inputs[2]
    assert x is not None and scale is not None and bias is not None
    groups = int(step.attr("num_groups"))
    rank = _rank(step, x)
    if rank is None:
        raise Refuse("GroupNormalization on an input of unknown rank")
    b = step.builder()
    xs, back, compute = _stash(step, b, x)
    grouped = b.op("Reshape", xs, b.ints([0, groups, -1], "grouped_shape"))
    y, _, _ = _normalize(b, grouped, [2], float(step.attr("epsilon", 1e-5)), compute)
    per_channel = step.cur_since >= 21
    if not per_channel:  # opset 18: scale and bias hold one value per group
        group_shape = b.ints([1, groups, 1], "group_param_shape")
        y = b.op(
            "Add",
            b.op("Mul", y, b.op("Reshape", scale, group_shape)),
            b.op("Reshape", bias, group_shape),
        )
    y = b.op("Reshape", y, b.shape(xs))
    if back is not None:
        y = b.cast(y, back)
    if per_channel:
        trailing = list(range(1, rank - 1))
        y = b.op("Add", b.op("Mul", y, b.unsqueeze(scale, trailing)), b.unsqueeze(bias, trailing))
    step.replace(b.nodes, [y])


@decomposition("Mish")
def _mish(step: OpsetStep) -> None:
    b = step.builder()
    x = step.node.inputs[0]
    assert x is not None
    y = b.op("Mul", x, b.op("Tanh", b.op("Softplus", x)))
    step.replace(b.nodes, [y])


@decomposition("HardSwish")
def _hardswish(step: OpsetStep) -> None:
    b = step.builder()
    x = step.node.inputs[0]
    assert x is not None
    y = b.op("Mul", x, b.op("HardSigmoid", x, alpha=1.0 / 6.0, beta=0.5))
    step.replace(b.nodes, [y])


@decomposition("Swish")
def _swish(step: OpsetStep) -> None:
    b = step.builder()
    x = step.node.inputs[0]
    assert x is not None
    alpha = float(step.attr("alpha", 1.0))
    z = x if alpha == 1.0 else b.op("Mul", x, b.scalar(alpha, x, "alpha"))
    y = b.op("Mul", x, b.op("Sigmoid", z))
    step.replace(b.nodes, [y])


# ---- torch 2.13's ops above opset 18: AffineGrid, RMSNormalization, RotaryEmbedding, Attention, DeformConv

_INT64_MAX = int(np.iinfo(np.int64).max)


def _used(value: ir.Value | None) -> bool:
    return value is not None and bool(value.uses() or value.is_graph_output())


def _static(shape: ir.Shape | None, index: int) -> int | None:
    """Dimension ``index`` of ``shape`` when it is a known integer."""
    if shape is None or not -len(shape) <= index < len(shape):
        return None
    dim = shape[index]
    return dim if is_known_dim(dim) else None


def _need_opset(step: OpsetStep, version: int, what: str) -> None:
    if step.target < version:
        raise Refuse(f"{what} needs opset {version} or newer (target is {step.target})")


def _affine_axis(size: int, align_corners: int) -> np.ndarray:
    """The normalized coordinates of one axis of AffineGrid's base grid, as ONNX Runtime makes them.

    ORT fills them with Eigen's ``LinSpaced(size, low, high)``, which gives ``high`` for a
    single point: ``[1]`` with ``align_corners=1`` (``[0]`` without).
    """
    low, high = (-1.0, 1.0) if align_corners else (-1.0 + 1.0 / size, 1.0 - 1.0 / size)
    if size == 1:
        return np.array([high])
    return np.linspace(low, high, size)


@decomposition("AffineGrid")
def _affine_grid(step: OpsetStep) -> None:
    """grid = base @ theta^T: a constant base grid from a constant size, else one built with Range."""
    node = step.node
    theta, size = node.inputs[0], node.inputs[1]
    assert theta is not None and size is not None
    align = int(step.attr("align_corners", 0))
    dtype = step.ctx.dtype(theta)
    sizes = const_value(size)
    b = step.builder()
    if sizes is not None:
        dims = [int(d) for d in sizes.reshape(-1)[2:]]
        if len(dims) not in (2, 3):
            raise Refuse(f"size {sizes.reshape(-1).tolist()} is neither 4-D nor 5-D")
        mesh = np.meshgrid(
            *[_affine_axis(d, align) for d in dims], indexing="ij"
        )  # (H, W) / (D, H, W)
        # the last axis of the grid is (x, y[, z]): x runs along the last spatial dimension
        base = np.stack([*reversed(mesh), np.ones_like(mesh[0])], axis=-1).reshape(
            -1, len(dims) + 1
        )
        base_value = b.scalar(base, theta, "base_grid", dtype=dtype)  # type: ignore[arg-type]
        out_shape = b.ints([-1, *dims, len(dims)], "grid_shape")
    else:
        ndim = _static(step.ctx.shape(size), 0)
        theta_shape = step.ctx.shape(theta)
        k = ndim - 2 if ndim is not None else _static(theta_shape, 1)
        if k not in (2, 3):
            raise Refuse(
                f"size '{size.name}' is computed at run time and the grid's rank is unknown"
            )
        _need_opset(step, 11, "a base grid of run-time size (Range)")
        spatial = b.slice(size, [2], [_INT64_MAX], [0])  # [H, W] or [D, H, W]
        one = b.scalar(1.0, theta, "one", dtype=dtype)
        two = b.scalar(2.0, theta, "two", dtype=dtype)
        axes = []  # coordinates along D?, H, W (each a 1-D vector)
        for i in range(k):
            length = b.op(
                "Gather", size, b.const(np.asarray(2 + i, np.int64), "axis_index"), axis=0
            )
            index = b.op(
                "Range",
                b.const(np.asarray(0, np.int64), "zero"),
                length,
                b.const(np.asarray(1, np.int64), "step"),
            )
            index = b.cast(index, dtype) if dtype is not None else b.op("CastLike", index, theta)
            count = b.cast(length, dtype) if dtype is not None else b.op("CastLike", length, theta)
            if align:
                # step = 2 / max(L-1, 1); x = i*step + 1 - (L-1)*step  (a single point sits at 1, as in ORT)
                last = b.op("Sub", count, one)
                stride = b.op("Div", two, b.op("Max", last, one))
                coord = b.op(
                    "Add", b.op("Mul", index, stride), b.op("Sub", one, b.op("Mul", last, stride))
                )
            else:  # x = (2i + 1) / L - 1
                coord = b.op(
                    "Sub", b.op("Div", b.op("Add", b.op("Mul", index, two), one), count), one
                )
            layout = [1] * k
            layout[i] = -1
            axes.append(b.op("Expand", b.op("Reshape", coord, b.ints(layout, "layout")), spatial))
        ones = b.op("Expand", b.op("Reshape", one, b.ints([1] * k, "layout")), spatial)
        columns = [b.unsqueeze(a, [k]) for a in [*reversed(axes), ones]]
        base_value = b.op(
            "Reshape", b.op("Concat", *columns, axis=k), b.ints([-1, k + 1], "base_shape")
        )
        out_shape = b.op("Concat", b.ints([-1], "batch"), spatial, b.ints([k], "coords"), axis=0)
    theta_t = b.op("Transpose", theta, perm=[0, 2, 1])  # (N, k+1, k)
    grid = b.op("MatMul", base_value, theta_t)  # (P, k+1) @ (N, k+1, k) -> (N, P, k)
    y = b.op("Reshape", grid, out_shape)
    step.replace(b.nodes, [y])


@decomposition("RMSNormalization")
def _rmsnorm(step: OpsetStep) -> None:
    node = step.node
    x, scale = node.inputs[0], node.inputs[1]
    assert x is not None and scale is not None
    axes = _normalized_axes(step, x)
    b = step.builder()
    xs, back, compute = _stash(step, b, x)
    mean_square = b.reduce("ReduceMean", b.op("Mul", xs, xs), axes)
    eps = b.scalar(float(step.attr("epsilon", 1e-5)), xs, "epsilon", dtype=compute)
    y = b.op("Mul", xs, b.op("Reciprocal", b.op("Sqrt", b.op("Add", mean_square, eps))))
    if back is not None:
        y = b.cast(y, back)
    step.replace(b.nodes, [b.op("Mul", y, scale)])


@decomposition("RotaryEmbedding")
def _rotary(step: OpsetStep) -> None:
    """x1*cos - x2*sin, x1*sin + x2*cos on the rotated part (halves or interleaved pairs)."""
    node = step.node
    x, cos, sin = node.inputs[0], node.inputs[1], node.inputs[2]
    assert x is not None and cos is not None and sin is not None
    positions = node.inputs[3] if len(node.inputs) > 3 else None
    interleaved = int(step.attr("interleaved", 0))
    num_heads = int(step.attr("num_heads", 0))
    rotary_dim = int(step.attr("rotary_embedding_dim", 0))
    _need_opset(step, 11, "the decomposition")
    rank = _rank(step, x)
    if rank is None and num_heads <= 0:
        rank = 4  # a 3-D input needs num_heads (the checker enforces it): this one is 4-D
    if rank not in (3, 4):
        raise Refuse(
            f"input '{x.name}' has {'an unknown rank' if rank is None else f'rank {rank}'}; it must be 3-D or 4-D"
        )
    if rank == 3 and num_heads <= 0:
        raise Refuse("a 3-D input needs the num_heads attribute")
    b = step.builder()
    cos_cache = cos
    if positions is not None:  # (max_pos, half) caches indexed by (B, S) positions
        cos, sin = b.op("Gather", cos, positions, axis=0), b.op("Gather", sin, positions, axis=0)
    if rank == 4:  # (B, N, S, H): the (B, S, half) caches broadcast over heads
        xr = x
        cos, sin = b.unsqueeze(cos, [1]), b.unsqueeze(sin, [1])
    else:  # (B, S, N*H) -> (B, S, N, H)
        xr = b.op("Reshape", x, b.ints([0, 0, num_heads, -1], "heads_shape"))
        cos, sin = b.unsqueeze(cos, [2]), b.unsqueeze(sin, [2])
    x_pass = None
    if rotary_dim:
        x_rot = b.slice(xr, [0], [rotary_dim], [3])
        x_pass = b.slice(xr, [rotary_dim], [_INT64_MAX], [3])
    else:
        x_rot = xr
    if interleaved:
        x1 = b.slice(x_rot, [0], [_INT64_MAX], [3], [2])
        x2 = b.slice(x_rot, [1], [_INT64_MAX], [3], [2])
    else:
        half: int | ir.Value | None = (
            rotary_dim // 2 if rotary_dim else _static(step.ctx.shape(cos_cache), -1)
        )
        if half is None:
            half = b.shape(cos_cache, start=-1)
        starts = [half] if isinstance(half, int) else half
        x1 = b.slice(x_rot, [0], starts, [3])
        x2 = b.slice(x_rot, starts, [_INT64_MAX], [3])
    real = b.op("Sub", b.op("Mul", cos, x1), b.op("Mul", sin, x2))
    imag = b.op("Add", b.op("Mul", sin, x1), b.op("Mul", cos, x2))
    if interleaved:
        pairs = b.op("Concat", b.unsqueeze(real, [4]), b.unsqueeze(imag, [4]), axis=4)
        rotated = b.op("Reshape", pairs, b.ints([0, 0, 0, -1], "pairs_shape"))
    else:
        rotated = b.op("Concat", real, imag, axis=3)
    y = rotated if x_pass is None else b.op("Concat", rotated, x_pass, axis=3)
    if rank == 3:
        y = b.op("Reshape", y, b.ints([0, 0, -1], "hidden_shape"))
    step.replace(b.nodes, [y])


def _scalar_dim(b: Builder, value: ir.Value, index: int) -> ir.Value:
    """Dimension ``index`` of ``value`` as a 0-D int64 tensor (for Range)."""
    return b.op("Gather", b.shape(value), b.const(np.asarray(index, np.int64), "dim_index"), axis=0)


@decomposition("Attention")
def _attention(step: OpsetStep) -> None:
    """softmax(Q·Kᵀ·scale [softcap] + mask/causal bias) · V, with KV cache concat and GQA repeat."""
    node = step.node
    ins = list(node.inputs) + [None] * (7 - len(node.inputs))
    q, k, v, mask, past_k, past_v, nonpad = ins[:7]
    assert q is not None and k is not None and v is not None
    if nonpad is not None:
        raise Refuse(f"input 6 nonpad_kv_seqlen ('{nonpad.name}') is not supported")
    for key in ("left_window_size", "right_window_size"):
        if int(step.attr(key, -1)) != -1:
            raise Refuse(f"attribute {key}={step.attr(key)} (a sliding window) is not supported")
    if (past_k is None) != (past_v is None):
        raise Refuse("past_key and past_value must be given together")
    softcap = float(step.attr("softcap", 0.0))
    mode = int(step.attr("qk_matmul_output_mode", 0))
    outs = list(node.outputs) + [None] * (4 - len(node.outputs))
    if _used(outs[3]) and not (mode == 3 or (mode == 0 and softcap == 0.0)):
        raise Refuse(
            f"output qk_matmul_output with qk_matmul_output_mode={mode} and softcap={softcap} is not supported"
        )
    _need_opset(step, 11, "the decomposition")
    shape_of = step.ctx.shape
    rank = _rank(step, q)
    if rank is None:  # inside a function, say: 3-D inputs are the ones that carry the head counts
        rank = (
            3
            if int(step.attr("q_num_heads", 0)) > 0 and int(step.attr("kv_num_heads", 0)) > 0
            else 4
        )
    if rank not in (3, 4):
        raise Refuse(
            f"Q '{q.name}' has {'an unknown rank' if rank is None else f'rank {rank}'}; it must be 3-D or 4-D"
        )
    dtype = step.ctx.dtype(q)
    b = step.builder()
    q_heads: int | None
    kv_heads: int | None
    if rank == 3:
        q_heads, kv_heads = int(step.attr("q_num_heads", 0)), int(step.attr("kv_num_heads", 0))
        if q_heads <= 0 or kv_heads <= 0:
            raise Refuse("3-D Q/K/V need the q_num_heads and kv_num_heads attributes")
        head = _static(shape_of(q), 2)
        head = head // q_heads if head is not None else None
        perm = [0, 2, 1, 3]
        q4 = b.op(
            "Transpose", b.op("Reshape", q, b.ints([0, 0, q_heads, -1], "q_heads_shape")), perm=perm
        )
        k4 = b.op(
            "Transpose",
            b.op("Reshape", k, b.ints([0, 0, kv_heads, -1], "kv_heads_shape")),
            perm=perm,
        )
        v4 = b.op(
            "Transpose",
            b.op("Reshape", v, b.ints([0, 0, kv_heads, -1], "kv_heads_shape")),
            perm=perm,
        )
        q_len = _static(shape_of(q), 1)
        k_len = _static(shape_of(k), 1)
        k_head, v_head = (_static(shape_of(t), 2) for t in (k, v))
        k_head = k_head // kv_heads if k_head is not None else None
        v_head = v_head // kv_heads if v_head is not None else None
    else:
        q4, k4, v4 = q, k, v
        q_heads, kv_heads = _static(shape_of(q), 1), _static(shape_of(k), 1)
        head = _static(shape_of(q), 3)
        q_len = _static(shape_of(q), 2)
        k_len = _static(shape_of(k), 2)
        k_head, v_head = _static(shape_of(k), 3), _static(shape_of(v), 3)
    past_len: int | None = 0
    if past_k is not None:
        assert past_v is not None
        past_len = _static(shape_of(past_k), 2)
        k4 = b.op("Concat", past_k, k4, axis=2)
        v4 = b.op("Concat", past_v, v4, axis=2)
    total_len = None if past_len is None or k_len is None else past_len + k_len
    present_k, present_v = k4, v4
    # grouped-query attention: repeat each KV head q_heads/kv_heads times ([h0, h0, h1, h1, ...])
    if q_heads is not None and kv_heads is not None:
        if q_heads % kv_heads:
            raise Refuse(f"{q_heads} query heads are not a multiple of {kv_heads} key/value heads")
        repeat: int | ir.Value | None = q_heads // kv_heads if q_heads != kv_heads else None
    else:
        repeat = b.op("Div", b.shape(q4, 1, 2), b.shape(k4, 1, 2))
    if repeat is not None:
        expand = (
            b.ints([1, 1, repeat, 1, 1], "repeat")
            if isinstance(repeat, int)
            else b.op("Concat", b.ints([1, 1], "ones"), repeat, b.ints([1, 1], "ones"), axis=0)
        )
        heads = b.ints([q_heads], "q_heads") if q_heads is not None else b.shape(q4, 1, 2)
        batch = _static(shape_of(q), 0)

        def repeat_kv(t: ir.Value, last: int | None) -> ir.Value:
            t5 = b.op("Expand", b.unsqueeze(t, [2]), expand)
            known = [batch, q_heads, total_len, last]
            if all(d is not None for d in known):
                target = b.ints(known, "kv_shape")  # type: ignore[arg-type]
            else:
                target = b.op("Concat", b.shape(t, 0, 1), heads, b.shape(t, 2, 4), axis=0)
            return b.op("Reshape", t5, target)

        k4, v4 = repeat_kv(k4, k_head), repeat_kv(v4, v_head)
    # Q·Kᵀ scaled by sqrt(scale) on each side, as the op defines it
    scale = step.attr("scale")
    if scale is None and head is not None:
        scale = 1.0 / float(np.sqrt(head))
    if scale is not None:
        root = b.scalar(float(np.sqrt(float(scale))), q, "sqrt_scale", dtype=dtype)
    else:  # head size known only at run time: head ** -1/4
        size = b.shape(q4, 3, 4)
        size = b.cast(size, dtype) if dtype is not None else b.op("CastLike", size, q)
        root = b.op("Reciprocal", b.op("Sqrt", b.op("Sqrt", size)))
    scores = b.op(
        "MatMul", b.op("Mul", q4, root), b.op("Transpose", b.op("Mul", k4, root), perm=[0, 1, 3, 2])
    )
    raw_scores = scores
    if softcap > 0.0:
        cap = b.scalar(softcap, q, "softcap", dtype=dtype)
        scores = b.op("Mul", b.op("Tanh", b.op("Div", scores, cap)), cap)
    # the additive bias: mask (bool -> 0 / -inf) plus the causal bias
    bias = None
    made: dict[str, ir.Value] = {}

    def zero() -> ir.Value:  # built on first use: a static causal-only Attention needs neither
        if "zero" not in made:
            made["zero"] = b.scalar(0.0, q, "zero", dtype=dtype)
        return made["zero"]

    def neg_inf() -> ir.Value:
        if "neg_inf" not in made:
            made["neg_inf"] = b.scalar(-np.inf, q, "neg_inf", dtype=dtype)
        return made["neg_inf"]

    if mask is not None:
        mask_type = step.ctx.dtype(mask)
        if mask_type is None:
            raise Refuse(f"the element type of attn_mask '{mask.name}' is unknown")
        bias = b.op("Where", mask, zero(), neg_inf()) if mask_type == ir.DataType.BOOL else mask
    if int(step.attr("is_causal", 0)):
        # query i (of L) attends key j (of past+S) iff j <= i + past
        if q_len is not None and total_len is not None and past_len is not None:
            allowed = np.arange(total_len)[None, :] <= np.arange(q_len)[:, None] + past_len
            causal = b.scalar(np.where(allowed, 0.0, -np.inf), q, "causal_bias", dtype=dtype)  # type: ignore[arg-type]
        else:
            _need_opset(step, 11, "a causal mask of run-time size (Range)")
            zero_i, one_i = (
                b.const(np.asarray(0, np.int64), "zero_i"),
                b.const(np.asarray(1, np.int64), "one_i"),
            )
            rows = b.op("Range", zero_i, _scalar_dim(b, q4, 2), one_i)
            if past_k is not None:
                rows = b.op("Add", rows, _scalar_dim(b, past_k, 2))
            cols = b.op("Range", zero_i, _scalar_dim(b, k4, 2), one_i)
            masked = b.op("Greater", b.unsqueeze(cols, [0]), b.unsqueeze(rows, [1]))
            causal = b.op("Where", masked, neg_inf(), zero())
        bias = causal if bias is None else b.op("Add", bias, causal)
    if bias is not None:
        scores = b.op("Add", scores, bias)
    precision = step.attr("softmax_precision")
    if precision is not None and dtype is not None and int(precision) != int(dtype):
        scores = b.op("Cast", scores, to=int(precision))
    probs = b.op("Softmax", scores, axis=-1)
    if precision is not None and dtype is not None and int(precision) != int(dtype):
        probs = b.cast(probs, dtype)
    if mask is not None:
        # a row the bias masks entirely gives 0 (not NaN), as the op's definition and ORT do
        empty = b.op("Equal", b.reduce("ReduceMax", bias, [-1]), neg_inf())  # type: ignore[arg-type]
        probs = b.op("Where", empty, zero(), probs)
    y = b.op("MatMul", probs, v4)
    if rank == 3:  # (B, H, L, Dv) -> (B, L, H*Dv)
        y = b.op(
            "Reshape", b.op("Transpose", y, perm=[0, 2, 1, 3]), b.ints([0, 0, -1], "hidden_shape")
        )
    qk_out = (raw_scores if mode == 0 else probs) if _used(outs[3]) else None
    new = [y, present_k if _used(outs[1]) else None, present_v if _used(outs[2]) else None, qk_out]
    step.replace(b.nodes, new[: len(node.outputs)])


@decomposition("DeformConv")
def _deform_conv(step: OpsetStep) -> None:
    """Bilinear samples at the offset kernel taps with GridSample, then one MatMul with the weights.

    Per offset group, the taps' positions (a constant base grid plus the offsets) become a
    GridSample grid (``align_corners=0``, zeros outside: torchvision's interpolation); the samples,
    times the mask, are the im2col columns a grouped MatMul with the weights reduces.
    """
    node = step.node
    ins = list(node.inputs) + [None] * (5 - len(node.inputs))
    x, w, offset, bias, mask = ins[:5]
    assert x is not None and w is not None and offset is not None
    if step.target < 16:
        raise Refuse("its decomposition uses GridSample, which exists only from opset 16")
    x_shape, w_shape = step.ctx.shape(x), step.ctx.shape(w)
    if x_shape is None or len(x_shape) != 4:
        raise Refuse(
            f"input X '{x.name}' is not known to be 4-D (only 2-D DeformConv is decomposed)"
        )
    channels, height, width = (_static(x_shape, i) for i in (1, 2, 3))
    if channels is None or height is None or width is None:
        raise Refuse(
            f"input X '{x.name}' needs static channels, height and width, got {list(x_shape)}"
        )
    kernel = step.attr("kernel_shape") or (tuple(w_shape[2:]) if w_shape is not None else None)
    out_channels = _static(w_shape, 0)
    if kernel is None or not all(isinstance(k, int) for k in kernel) or out_channels is None:
        raise Refuse(f"the weight '{w.name}' needs a static shape")
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in (step.attr("strides") or (1, 1)))
    dh, dw = (int(d) for d in (step.attr("dilations") or (1, 1)))
    pt, pl, pb, pr = (int(p) for p in (step.attr("pads") or (0, 0, 0, 0)))
    group, offset_group = int(step.attr("group", 1)), int(step.attr("offset_group", 1))
    out_h = (height + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (width + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
    taps, per_offset_group, per_group = kh * kw, channels // offset_group, channels // group
    dtype = step.ctx.dtype(x)
    b = step.builder()
    # sampling positions (y, x) of every output pixel's taps: (oH, oW, K, 2), plus the offsets
    ys = (np.arange(out_h) * sh - pt)[:, None, None, None] + (np.arange(kh) * dh).repeat(kw)[
        None, None, :, None
    ]
    xs = (np.arange(out_w) * sw - pl)[None, :, None, None] + np.tile(np.arange(kw) * dw, kh)[
        None, None, :, None
    ]
    base = np.concatenate(np.broadcast_arrays(ys, xs), axis=-1).astype(np.float64)  # (oH, oW, K, 2)
    moved = b.op(
        "Reshape", offset, b.ints([0, offset_group, taps, 2, out_h, out_w], "offset_shape")
    )
    moved = b.op("Transpose", moved, perm=[0, 1, 4, 5, 2, 3])  # (N, G, oH, oW, K, 2)
    position = b.op("Add", moved, b.scalar(base, x, "base_positions", dtype=dtype))  # type: ignore[arg-type]
    # GridSample's normalized coordinates with align_corners=0: (2p + 1) / size - 1, as (x, y)
    sizes = np.array([height, width], np.float64)
    scale = b.scalar(2.0 / sizes, x, "to_grid_scale", dtype=dtype)  # type: ignore[arg-type]
    shift = b.scalar(1.0 / sizes - 1.0, x, "to_grid_shift", dtype=dtype)  # type: ignore[arg-type]
    normalized = b.op("Add", b.op("Mul", position, scale), shift)
    grid = b.op("Gather", normalized, b.ints([1, 0], "xy"), axis=5)
    grid = b.op("Reshape", grid, b.ints([-1, out_h, out_w * taps, 2], "grid_shape"))
    images = b.op("Reshape", x, b.ints([-1, per_offset_group, height, width], "group_images_shape"))
    samples = b.op(
        "GridSample", images, grid, mode="bilinear", padding_mode="zeros", align_corners=0
    )
    # (N*G, C/G, oH, oW*K) -> (N, G, C/G, oH, oW, K)
    shape6 = [-1, offset_group, per_offset_group, out_h, out_w, taps]
    samples = b.op("Reshape", samples, b.ints(shape6, "samples_shape"))
    if mask is not None:  # (N, G*K, oH, oW) -> (N, G, 1, oH, oW, K)
        weights = b.op("Reshape", mask, b.ints([0, offset_group, taps, out_h, out_w], "mask_shape"))
        weights = b.unsqueeze(b.op("Transpose", weights, perm=[0, 1, 3, 4, 2]), [2])
        samples = b.op("Mul", samples, weights)
    # im2col columns per conv group: (N, group, oH*oW, C/group*K), channels g-major as in X
    columns = b.op("Transpose", samples, perm=[0, 3, 4, 1, 2, 5])  # (N, oH, oW, G, C/G, K)
    columns = b.op(
        "Reshape", columns, b.ints([0, out_h * out_w, group, per_group * taps], "columns_shape")
    )
    columns = b.op("Transpose", columns, perm=[0, 2, 1, 3])
    kernel_cols = per_group * taps
    w_array = const_value(w)
    if w_array is not None:  # fold the weight layout now: (group, C/group*K, oC/group)
        folded = w_array.reshape(group, out_channels // group, kernel_cols).transpose(0, 2, 1)
        w_cols = b.const(np.ascontiguousarray(folded), "weight_columns")
    else:
        w_cols = b.op(
            "Reshape", w, b.ints([group, out_channels // group, kernel_cols], "weight_groups")
        )
        w_cols = b.op("Transpose", w_cols, perm=[0, 2, 1])
    y = b.op("MatMul", columns, w_cols)  # (N, group, oH*oW, oC/group)
    y = b.op("Transpose", y, perm=[0, 1, 3, 2])
    y = b.op("Reshape", y, b.ints([0, out_channels, out_h, out_w], "output_shape"))
    if bias is not None:
        y = b.op("Add", y, b.unsqueeze(bias, [1, 2]))
    step.replace(b.nodes, [y])
