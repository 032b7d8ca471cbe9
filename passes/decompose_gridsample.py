"""decompose-gridsample: rewrite 4-D GridSample into arithmetic and GatherElements.

ATC maps GridSample to GridSampler2D, an AICPU-only kernel (slow, and absent on some inference
SoCs); ``F.grid_sample`` is common in optical flow, deformable attention and spatial
transformers. The decomposition follows the ONNX (and torch) definition exactly:

1. split the grid into ``x`` and ``y`` and unnormalize them to pixel coordinates
   (``align_corners=1``: ``(g + 1) / 2 * (size - 1)``; ``0``: ``((g + 1) * size - 1) / 2``);
2. apply the padding mode to the coordinates: ``border`` clips them to the image, ``reflection``
   reflects them about the image edges (about pixel centres or edges, per ``align_corners``) and
   clips, ``zeros`` leaves them;
3. ``bilinear``: gather the four neighbours with GatherElements on the image flattened to
   ``[N, C, H*W]`` (int32 indices) and blend them with the bilinear weights; a neighbour outside the image
   contributes 0. ``nearest``: round half to even (as torch and ONNX Runtime) and gather one.

Both the opset-16 (``bilinear``/``bicubic``) and opset-20 (``linear``/``cubic``) mode names are
read. Shapes must be static (a static model is what ATC compiles); ``bicubic`` and 5-D inputs are
refused with a reason, so a pipeline never leaves a GridSample behind silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Builder, Match, Op, Rule, RuleContext, RulePass, Var
from surgery.shapes.dims import is_static_shape

__all__ = ["DecomposeGridSample"]

_MODES = {
    "bilinear": "bilinear",
    "linear": "bilinear",
    "nearest": "nearest",
    "bicubic": "bicubic",
    "cubic": "bicubic",
}


class _Coords:
    """Builds the coordinate arithmetic for one axis in a fixed float type."""

    def __init__(self, b: Builder, dtype: np.dtype) -> None:
        self.b = b
        self.dtype = dtype

    def c(self, value: float, suffix: str = "c") -> ir.Value:
        return self.b.const(np.asarray(value, dtype=self.dtype), suffix)

    def unnormalize(self, g: ir.Value, size: int, align_corners: bool) -> ir.Value:
        b = self.b
        if align_corners:
            # (g + 1) / 2 * (size - 1)
            return b.op(
                "Mul", b.op("Add", g, self.c(1.0, "one")), self.c((size - 1) / 2.0, "half_extent")
            )
        # ((g + 1) * size - 1) / 2
        scaled = b.op("Mul", b.op("Add", g, self.c(1.0, "one")), self.c(float(size), "size"))
        return b.op("Div", b.op("Sub", scaled, self.c(1.0, "one")), self.c(2.0, "two"))

    def clip(self, x: ir.Value, size: int) -> ir.Value:
        b = self.b
        return b.op(
            "Min", b.op("Max", x, self.c(0.0, "zero")), self.c(float(size - 1), "max_index")
        )

    def reflect(self, x: ir.Value, size: int, align_corners: bool) -> ir.Value:
        """torch's reflect_coordinates followed by clip_coordinates."""
        b = self.b
        twice_low, twice_high = (0, 2 * (size - 1)) if align_corners else (-1, 2 * size - 1)
        if twice_low == twice_high:
            return b.op("Mul", x, self.c(0.0, "zero"))
        low = twice_low / 2.0
        span = (twice_high - twice_low) / 2.0
        dist = b.op("Abs", b.op("Sub", x, self.c(low, "low")))
        flips = b.op("Floor", b.op("Div", dist, self.c(span, "span")))
        extra = b.op("Sub", dist, b.op("Mul", flips, self.c(span, "span")))
        # parity of flips: flips - 2 * floor(flips / 2) is 0 or 1
        odd = b.op(
            "Sub",
            flips,
            b.op("Mul", b.op("Floor", b.op("Mul", flips, self.c(0.5, "half"))), self.c(2.0, "two")),
        )
        # even: low + extra; odd: low + span - extra  ==  low + extra + odd * (span - 2 * extra)
        turn = b.op("Sub", self.c(span, "span"), b.op("Mul", extra, self.c(2.0, "two")))
        reflected = b.op("Add", b.op("Add", extra, self.c(low, "low")), b.op("Mul", odd, turn))
        return self.clip(reflected, size)

    def inside(self, x: ir.Value, size: int) -> ir.Value:
        """1.0 where ``0 <= x <= size - 1`` else 0.0."""
        b = self.b
        ok = b.op(
            "And",
            b.op("GreaterOrEqual", x, self.c(0.0, "zero")),
            b.op("LessOrEqual", x, self.c(float(size - 1), "max_index")),
        )
        return b.op("Cast", ok, to=int(ir.DataType.from_numpy(self.dtype)))


class GridSampleRule(Rule):
    """GridSample (4-D, bilinear or nearest) → coordinates arithmetic + GatherElements."""

    name = "decompose-gridsample"
    pattern = Op("GridSample", Var("X", rank=4), Var("grid", rank=4))

    def check(self, ctx: RuleContext, m: Match) -> str | None:
        node = m.root
        mode = _MODES.get(str(m.attr("mode", "bilinear")))
        if mode is None or mode == "bicubic":
            raise self.refuse(
                ctx,
                f"GridSample '{node.name}' uses mode={m.attr('mode')!r}; only bilinear and nearest are decomposed",
            )
        padding = m.attr("padding_mode", "zeros")
        if padding not in ("zeros", "border", "reflection"):
            raise self.refuse(ctx, f"GridSample '{node.name}' has padding_mode={padding!r}")
        for label in ("X", "grid"):
            shape = ctx.shape(m[label])
            if not is_static_shape(shape):
                raise self.refuse(
                    ctx,
                    f"GridSample '{node.name}': input {label} ('{m[label].name}') has a dynamic or unknown shape "
                    f"{shape}; fix the input shapes first (the decomposition needs static H, W and grid size)",
                )
            m.extra[label] = tuple(int(d) for d in shape)
        _, _, h, w = m.extra["X"]
        if h * w >= 1 << 24:
            raise self.refuse(
                ctx, f"GridSample '{node.name}': image of {h}x{w} is too large to index in float32"
            )
        return None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value]:
        x_val, grid = m["X"], m["grid"]
        n, c, h, w = m.extra["X"]
        _, ho, wo, _ = m.extra["grid"]
        mode = _MODES[str(m.attr("mode", "bilinear"))]
        padding = str(m.attr("padding_mode", "zeros"))
        align = bool(m.attr("align_corners", 0))
        x_dtype = b.dtype_of(x_val) or ir.DataType.FLOAT
        g_dtype = b.dtype_of(grid) or ir.DataType.FLOAT
        coord_dtype = np.float64 if g_dtype == ir.DataType.DOUBLE else np.float32
        if g_dtype.numpy() != np.dtype(coord_dtype):
            grid = b.cast(grid, ir.DataType.from_numpy(np.dtype(coord_dtype)))
        k = _Coords(b, np.dtype(coord_dtype))

        gx, gy = b.split(grid, [1, 1], axis=3)
        gx = b.squeeze(gx, [3])  # [N, Ho, Wo]
        gy = b.squeeze(gy, [3])
        ix = k.unnormalize(gx, w, align)
        iy = k.unnormalize(gy, h, align)
        if padding == "border":
            ix, iy = k.clip(ix, w), k.clip(iy, h)
        elif padding == "reflection":
            ix, iy = k.reflect(ix, w, align), k.reflect(iy, h, align)

        flat = b.op("Reshape", x_val, b.ints([n, c, h * w], "flat_shape"))
        index_shape = b.ints([n, 1, ho * wo], "index_shape")
        expand_shape = b.ints([n, c, ho * wo], "gather_shape")
        out_shape = b.ints([n, c, ho, wo], "out_shape")
        weight_shape = b.ints([n, 1, ho, wo], "weight_shape")

        def tap(xs: ir.Value, ys: ir.Value) -> ir.Value:
            """Gather X at integer-valued float coords (clamped), as [N, C, Ho, Wo]."""
            xc, yc = k.clip(xs, w), k.clip(ys, h)
            idx = b.op("Add", b.op("Mul", yc, k.c(float(w), "width")), xc)
            idx = b.op(
                "Reshape", b.cast(idx, ir.DataType.INT32), index_shape
            )  # int32: AI Core, and H*W < 2**24
            idx = b.op("Expand", idx, expand_shape)
            gathered = b.op("GatherElements", flat, idx, axis=2)
            return b.op("Reshape", gathered, out_shape)

        def weighted(value: ir.Value, weight: ir.Value) -> ir.Value:
            weight = b.op("Reshape", weight, weight_shape)
            if np.dtype(coord_dtype) != x_dtype.numpy():
                weight = b.cast(weight, x_dtype)
            return b.op("Mul", value, weight)

        if mode == "nearest":
            xn, yn = b.op("Round", ix), b.op("Round", iy)
            sample = tap(xn, yn)
            if padding != "zeros":
                return [sample]
            return [weighted(sample, b.op("Mul", k.inside(xn, w), k.inside(yn, h)))]

        x0, y0 = b.op("Floor", ix), b.op("Floor", iy)
        x1, y1 = b.op("Add", x0, k.c(1.0, "one")), b.op("Add", y0, k.c(1.0, "one"))
        wx1, wy1 = b.op("Sub", ix, x0), b.op("Sub", iy, y0)
        wx0, wy0 = b.op("Sub", k.c(1.0, "one"), wx1), b.op("Sub", k.c(1.0, "one"), wy1)
        # neighbours outside the image contribute 0 (also for border/reflection, where only the
        # far neighbour of an edge coordinate can fall outside, with weight 0)
        vx0, vx1, vy0, vy1 = k.inside(x0, w), k.inside(x1, w), k.inside(y0, h), k.inside(y1, h)
        total = None
        for xs, ys, wxs, wys, vx, vy in (
            (x0, y0, wx0, wy0, vx0, vy0),
            (x1, y0, wx1, wy0, vx1, vy0),
            (x0, y1, wx0, wy1, vx0, vy1),
            (x1, y1, wx1, wy1, vx1, vy1),
        ):
            weight = b.op("Mul", b.op("Mul", wxs, wys), b.op("Mul", vx, vy))
            term = weighted(tap(xs, ys), weight)
            total = term if total is None else b.op("Add", total, term)
        assert total is not None
        return [total]


@register
class DecomposeGridSample(RulePass):
    """Rewrite 4-D GridSample (bilinear/nearest, any padding) into GatherElements arithmetic."""

    name = "decompose-gridsample"
    numerics = Numerics.EXACT

    def rules(self) -> list[Rule]:
        return [GridSampleRule()]
