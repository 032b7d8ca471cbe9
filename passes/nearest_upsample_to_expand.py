"""nearest-upsample-to-expand: integer-scale nearest Resize as Unsqueeze + Expand + Reshape, bit-exact.

ATC implements Resize ``mode=nearest`` as ``round_prefer_ceil`` only (CANN 8.3.RC1 and later), while
PyTorch's exporter writes nearest upsampling as ``coordinate_transformation_mode=asymmetric,
nearest_mode=floor``: pixels can land one place off on the device. An upsample by an integer factor
``s`` along an axis repeats every element ``s`` times, which is exactly what

    Unsqueeze(x, after each scaled axis) → Expand(..., s on each new axis) → Reshape(d * s)

computes — pure copies, so ORT parity is bit-exact and ATC's rounding never enters. The rewrite is
applied only where the Resize *is* that repeat: integer scales >= 1 (given as ``scales``, or as
``sizes`` that are integer multiples of a static input shape), and a coordinate/rounding pair that
maps output ``o`` to input ``o // s``: ``asymmetric`` + ``floor``, or ``half_pixel``/``pytorch_half_pixel``
+ ``round_prefer_floor``/``round_prefer_ceil`` (no ties occur for integer ``s``). Every dim from the
first scaled axis on must be static (leading dims, e.g. the batch, are copied with Reshape's ``0``).
Opset-10 Resize, ``axes`` (opset 18) and a non-``stretch`` aspect policy are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from surgery.graph import const_value
from surgery.pass_base import Numerics
from surgery.registry import register
from surgery.rules import Builder, Match, Op, Rule, RuleContext, RulePass, Var
from surgery.shapes.dims import is_static_shape

__all__ = ["NearestUpsampleToExpand", "repeat_factors"]

_EXACT_PAIRS = {
    ("asymmetric", "floor"),
    ("half_pixel", "round_prefer_floor"),
    ("half_pixel", "round_prefer_ceil"),
    ("pytorch_half_pixel", "round_prefer_floor"),
    ("pytorch_half_pixel", "round_prefer_ceil"),
}


def _attr(node: ir.Node, name: str, default):
    a = node.attributes.get(name)
    return default if a is None else a.value


def repeat_factors(
    node: ir.Node, shape: ir.Shape | None, opset: int
) -> tuple[list[int] | None, str]:
    """Per-axis integer repeat factors when ``node`` (a Resize) is an exact nearest repeat, else a reason."""
    if opset < 11:
        return None, "opset-10 Resize (its nearest rounding is not an attribute)"
    if _attr(node, "mode", "nearest") != "nearest":
        return None, "not nearest"
    pair = (
        _attr(node, "coordinate_transformation_mode", "half_pixel"),
        _attr(node, "nearest_mode", "round_prefer_floor"),
    )
    if pair not in _EXACT_PAIRS:
        return None, f"{pair[0]}/{pair[1]} is not a plain repeat"
    if "axes" in node.attributes or _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        return None, "axes or keep_aspect_ratio_policy"
    if shape is None:
        return None, "input shape unknown"
    rank = len(shape)
    scales = (
        const_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    )
    sizes = (
        const_value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    )
    factors: list[float]
    if scales is not None and scales.size:
        factors = [float(s) for s in scales.reshape(-1)]
    elif sizes is not None and sizes.size:
        if not is_static_shape(shape):
            return None, "sizes with a dynamic input shape"
        factors = [
            int(o) / int(i) if int(i) else 0.0
            for o, i in zip(sizes.reshape(-1), shape, strict=False)
        ]
    else:
        return None, "scales/sizes not constant"
    if len(factors) != rank:
        return None, "scales rank differs from the input's"
    if any(f < 1 or f != int(f) for f in factors):
        return None, "a scale is not an integer >= 1"
    ints = [int(f) for f in factors]
    if all(f == 1 for f in ints):
        return None, "identity resize"
    first = next(i for i, f in enumerate(ints) if f > 1)
    if not all(isinstance(d, int) for d in list(shape)[first:]):
        return None, "a dynamic dim at or after the first scaled axis"
    return ints, ""


class NearestRepeatRule(Rule):
    """Resize(nearest, integer scales) → Unsqueeze → Expand → Reshape."""

    name = "nearest-upsample-to-expand"
    pattern = Op(
        "Resize",
        Var("x", rank=(1, None)),
        Var("roi", optional=True),
        Var("scales", optional=True),
        Var("sizes", optional=True),
    )

    def check(self, ctx: RuleContext, m: Match) -> str | None:
        self._shape = ctx.shape(m["x"])
        factors, reason = repeat_factors(m.root, self._shape, ctx.opset)
        return reason if factors is None else None

    def build(self, b: Builder, m: Match) -> Sequence[ir.Value | None]:
        x = m["x"]
        shape = self._shape
        factors, _ = repeat_factors(m.root, shape, b.opset)
        assert factors is not None and shape is not None
        scaled = [i for i, f in enumerate(factors) if f > 1]
        # the new axes sit right after each scaled axis, in the unsqueezed tensor's numbering
        new_axes = [axis + k + 1 for k, axis in enumerate(scaled)]
        up = b.unsqueeze(x, new_axes)
        target: list[int] = []
        for f in factors:
            target.append(1)
            if f > 1:
                target.append(f)
        wide = b.op("Expand", up, b.ints(target, "repeats"))
        first = scaled[0]
        scaled_dims = list(shape)[first:]
        assert is_static_shape(
            scaled_dims
        )  # repeat_factors needs the dims from the first scaled axis on
        final = [0] * first + [d * f for d, f in zip(scaled_dims, factors[first:], strict=True)]
        return [b.op("Reshape", wide, b.ints(final, "shape"))]


@register
class NearestUpsampleToExpand(RulePass):
    """Rewrite integer-scale nearest Resize (torch's asymmetric/floor upsample) as Expand, bit-exact."""

    name = "nearest-upsample-to-expand"
    numerics = Numerics.EXACT

    def rules(self) -> list[Rule]:
        return [NearestRepeatRule()]
