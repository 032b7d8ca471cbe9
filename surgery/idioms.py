"""Multi-node idioms that a pass rewrites and the doctor points at: matched once, here.

The doctor (core) must not import a concrete pass, and passes must not import each other, so a
pattern both need lives in the core:

- :func:`match_dropout_idiom`: hand-written training-mode dropout,
  ``x * (torch.rand_like(x) > p).float() / (1 - p)`` — a random op, a comparison with a constant,
  a Cast, a Mul by ``x`` and an optional rescale (Div by ``1 - p`` or Mul by ``1 / (1 - p)``);
- :func:`match_focus`: YOLOv5-style Focus (space-to-depth) slicing — four Slices with step 2 on
  the two spatial axes, concatenated on the channel axis.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir

from surgery.graph import ONNX_DOMAINS, const_value

__all__ = ["RANDOM_OPS", "DropoutIdiom", "FocusIdiom", "match_dropout_idiom", "match_focus"]


#: Ops whose output is random: a deployed inference model should have none.
RANDOM_OPS = frozenset(
    {
        "RandomUniform",
        "RandomUniformLike",
        "RandomNormal",
        "RandomNormalLike",
        "Bernoulli",
        "Multinomial",
    }
)

_COMPARE = {"Greater": True, "GreaterOrEqual": True, "Less": False, "LessOrEqual": False}
"""Comparison op → whether ``random OP p`` keeps values *above* p (for ``p OP random`` it flips)."""


def _only_use(value: ir.Value) -> ir.Node | None:
    """The single node reading ``value`` (None when it has several readers or is a graph output)."""
    if value.is_graph_output():
        return None
    uses = list(value.uses())
    if len(uses) != 1:
        return None
    return uses[0].node


def _scalar(value: ir.Value | None) -> float | None:
    array = const_value(value)
    if array is None or array.size != 1 or not np.issubdtype(array.dtype, np.number):
        return None
    return float(array.reshape(-1)[0])


def _attr(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None or attr.is_ref() else float(attr.value)


def _keep_probability(random: ir.Node, threshold: float, keep_above: bool) -> float | None:
    """P(element kept) for ``random > threshold`` (``keep_above``) or ``random < threshold``."""
    if random.op_type in ("RandomUniform", "RandomUniformLike"):
        low, high = _attr(random, "low", 0.0), _attr(random, "high", 1.0)
        if high <= low:
            return None
        above = min(max((high - threshold) / (high - low), 0.0), 1.0)
    elif random.op_type in ("RandomNormal", "RandomNormalLike"):
        mean, scale = _attr(random, "mean", 0.0), _attr(random, "scale", 1.0)
        if scale <= 0:
            return None
        above = 0.5 * math.erfc((threshold - mean) / (scale * math.sqrt(2.0)))
    else:
        return None
    return above if keep_above else 1.0 - above


@dataclasses.dataclass
class DropoutIdiom:
    """One matched hand-written dropout: ``output`` computes a randomly masked ``data``."""

    random: ir.Node
    nodes: list[ir.Node]
    """The chain from the random op to the last node (random op first)."""
    data: ir.Value
    output: ir.Value
    keep: float | None
    """The probability that an element is kept, when the constants tell it."""
    scale: float | None
    """The rescale factor applied after the Mul (None: no rescale)."""

    @property
    def scale_matches(self) -> bool:
        """Whether the rescale is the inverted-dropout ``1 / keep`` (so that ``E[output] = data``).

        Without a rescale, or when the keep probability is not a constant, there is nothing to
        contradict reading the idiom as dropout."""
        if self.scale is None or self.keep is None:
            return True  # nothing to compare the scale with: the mask is the only randomness
        if self.keep <= 0:
            return False
        return math.isclose(self.scale * self.keep, 1.0, rel_tol=1e-3)


def _same_shape(a: ir.Value, b: ir.Value) -> bool:
    """Whether both shapes are known and equal dim by dim (ints, or the same symbolic name)."""
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return False
    for x, y in zip(a.shape, b.shape, strict=True):
        if isinstance(x, int) or isinstance(y, int):
            if x != y:
                return False
        elif not (
            getattr(x, "value", None) and getattr(x, "value", None) == getattr(y, "value", None)
        ):
            return False
    return True


def match_dropout_idiom(random: ir.Node) -> DropoutIdiom | None:
    """The hand-written dropout that starts at the random op ``random``, or None.

    Matched: ``R → {Greater,GreaterOrEqual,Less,LessOrEqual}(R, p) or (p, R) → [Cast] → Mul(x, ·)``
    (``R`` a RandomUniform(Like)/RandomNormal(Like)), or ``Bernoulli(probs) → [Cast] → Mul(x, ·)``;
    then an optional ``Div(·, c)`` or ``Mul(·, c)`` by a constant scalar. The mask must have
    ``x``'s shape (the ``*Like`` op reads ``x``, or both shapes are known and equal), so that the
    output has ``x``'s shape and ``x`` can stand in for it.
    """
    if (
        random.domain not in ONNX_DOMAINS
        or random.op_type not in RANDOM_OPS
        or random.op_type == "Multinomial"
    ):
        return None
    if len(random.outputs) != 1:
        return None
    chain = [random]
    current = random.outputs[0]
    keep: float | None = None
    if random.op_type == "Bernoulli":
        probs = const_value(random.inputs[0] if random.inputs else None)
        if probs is not None and probs.size and np.all(probs == probs.reshape(-1)[0]):
            keep = float(probs.reshape(-1)[0])
    else:
        compare = _only_use(current)
        if compare is None or compare.domain not in ONNX_DOMAINS or compare.op_type not in _COMPARE:
            return None
        if len(compare.inputs) != 2:
            return None
        keep_above = _COMPARE[compare.op_type]
        if compare.inputs[0] is current:
            threshold = _scalar(compare.inputs[1])
        elif compare.inputs[1] is current:
            threshold, keep_above = _scalar(compare.inputs[0]), not keep_above
        else:
            return None
        if threshold is None:
            return None
        keep = _keep_probability(random, threshold, keep_above)
        chain.append(compare)
        current = compare.outputs[0]
    node = _only_use(current)
    if node is not None and node.domain in ONNX_DOMAINS and node.op_type == "Cast":
        chain.append(node)
        current = node.outputs[0]
        node = _only_use(current)
    if (
        node is None
        or node.domain not in ONNX_DOMAINS
        or node.op_type != "Mul"
        or len(node.inputs) != 2
    ):
        return None
    data = node.inputs[1] if node.inputs[0] is current else node.inputs[0]
    if data is None or data is current:
        return None
    chain.append(node)
    output = node.outputs[0]
    reads_data = random.op_type.endswith("Like") and random.inputs and random.inputs[0] is data
    if not reads_data and not _same_shape(data, output):
        return None
    scale: float | None = None
    after = _only_use(output)
    if (
        after is not None
        and after.domain in ONNX_DOMAINS
        and after.op_type in ("Div", "Mul")
        and len(after.inputs) == 2
    ):
        if after.op_type == "Div" and after.inputs[0] is output:
            c = _scalar(after.inputs[1])
            scale = None if c in (None, 0.0) else 1.0 / c
        elif after.op_type == "Mul":
            other = after.inputs[1] if after.inputs[0] is output else after.inputs[0]
            scale = _scalar(other)
        if scale is not None:
            chain.append(after)
            output = after.outputs[0]
    return DropoutIdiom(random, chain, data, output, keep, scale)


@dataclasses.dataclass
class FocusIdiom:
    """Four stride-2 Slices of ``data`` on axes (H, W) = (2, 3), concatenated on axis 1.

    ``order`` lists, for each Concat input in turn, the (row, column) offsets it starts at, e.g.
    YOLOv5's ``x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]`` is
    ``[(0, 0), (1, 0), (0, 1), (1, 1)]``.
    """

    concat: ir.Node
    slices: list[ir.Node]
    """Every Slice of the idiom (for two-level forms, the outer ones first)."""
    data: ir.Value
    order: list[tuple[int, int]]


def _slice_params(node: ir.Node, rank: int) -> dict[int, tuple[int, int, int]] | None:
    """``{axis: (start, end, step)}`` of a Slice (opset ≥ 10) with constant parameters, or None."""
    if node.domain not in ONNX_DOMAINS or node.op_type != "Slice" or len(node.inputs) < 3:
        return None
    starts, ends = const_value(node.inputs[1]), const_value(node.inputs[2])
    axes = (
        const_value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    )
    steps = (
        const_value(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
    )
    if starts is None or ends is None:
        return None
    if len(node.inputs) > 3 and node.inputs[3] is not None and axes is None:
        return None
    if len(node.inputs) > 4 and node.inputs[4] is not None and steps is None:
        return None
    starts, ends = starts.reshape(-1).tolist(), ends.reshape(-1).tolist()
    axes_l = list(range(len(starts))) if axes is None else axes.reshape(-1).tolist()
    steps_l = [1] * len(starts) if steps is None else steps.reshape(-1).tolist()
    if not len(starts) == len(ends) == len(axes_l) == len(steps_l):
        return None
    out: dict[int, tuple[int, int, int]] = {}
    for s, e, a, st in zip(starts, ends, axes_l, steps_l, strict=True):
        out[int(a) % rank] = (int(s), int(e), int(st))
    return out


_TO_THE_END = 2**31 - 1
"""An end this large runs to the end of any axis (torch writes INT64_MAX)."""


def _offset(param: tuple[int, int, int] | None, size: int | None) -> int | None:
    """The start (0 or 1) of a step-2 slice that runs to the end of an axis of ``size``."""
    if param is None:
        return None
    start, end, step = param
    if step != 2 or start not in (0, 1) or end < (_TO_THE_END if size is None else size):
        return None
    return start


def _is_noop(param: tuple[int, int, int]) -> bool:
    start, end, step = param
    return start == 0 and step == 1 and end >= _TO_THE_END


def _focus_branch(
    value: ir.Value,
) -> tuple[ir.Value, list[ir.Node], dict[int, tuple[int, int, int]]] | None:
    """``value`` as a chain of Slices of one tensor that slice only H and W (axes 2, 3), each once:
    (the tensor, the Slices outermost last, ``{axis: (start, end, step)}``). Full-range step-1
    slices of other axes (older torch exports write them) are ignored."""
    params: dict[int, tuple[int, int, int]] = {}
    slices: list[ir.Node] = []
    current = value
    while len(slices) < 4 and set(params) != {2, 3}:
        node = current.producer()
        if (
            node is None
            or node.op_type != "Slice"
            or node.domain not in ONNX_DOMAINS
            or node.inputs[0] is None
        ):
            break
        found = _slice_params(node, 4)
        if found is None:
            return None
        found = {axis: p for axis, p in found.items() if not _is_noop(p)}
        if set(found) - {2, 3} or set(found) & set(params):
            return None
        params.update(found)
        slices.insert(0, node)
        current = node.inputs[0]
    if set(params) != {2, 3}:
        return None
    return current, slices, params


ShapeOf = Callable[[ir.Value], "ir.Shape | Sequence[int | str | ir.SymbolicDim | None] | None"]


def _dims(value: ir.Value | None, shape_of: ShapeOf | None) -> tuple[int | None, ...] | None:
    """``value``'s dims (None for a dynamic one), None when its rank is unknown."""
    if value is None:
        return None
    shape = value.shape if value.shape is not None or shape_of is None else shape_of(value)
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


def match_focus(
    concat: ir.Node, shape_of: ShapeOf | None = None, *, require_static: bool = True
) -> FocusIdiom | None:
    """The Focus idiom ending at ``concat``, or None.

    Needs a 4-D input, each Concat input a stride-2 sampling of the same tensor running to the end
    of H and W, and the four offsets ``(0,0), (0,1), (1,0), (1,1)`` each exactly once. Inner Slice
    outputs read by anything else are not matched (the Slices must disappear with the rewrite).
    With ``require_static`` (what the rewrite needs) the input shape must be static with even H
    and W; without it (what the doctor asks before make-static) dynamic dims are allowed.
    ``shape_of`` gives the shape of a value that carries none (e.g. from onnx inference).
    """
    if concat.domain not in ONNX_DOMAINS or concat.op_type != "Concat" or len(concat.inputs) != 4:
        return None
    axis_attr = concat.attributes.get("axis")
    if axis_attr is None or axis_attr.is_ref() or int(axis_attr.value) not in (1, -3):
        return None
    branches: list[tuple[ir.Value, list[ir.Node], dict[int, tuple[int, int, int]]]] = []
    for value in concat.inputs:
        branch = _focus_branch(value) if value is not None else None
        if branch is None or branch[0] is not (branches[0][0] if branches else branch[0]):
            return None
        branches.append(branch)
    data = branches[0][0]
    shape = _dims(data, shape_of)
    if shape is None or len(shape) != 4:
        return None
    if require_static and (None in shape or shape[2] % 2 or shape[3] % 2):  # type: ignore[operator]
        return None
    slices: list[ir.Node] = []
    order: list[tuple[int, int]] = []
    for _, nodes, params in branches:
        row, col = _offset(params[2], shape[2]), _offset(params[3], shape[3])
        if row is None or col is None:
            return None
        slices.extend(nodes)
        order.append((row, col))
    if data is None or sorted(order) != [(0, 0), (0, 1), (1, 0), (1, 1)]:
        return None
    unique = list(dict.fromkeys(slices))
    members = set(unique) | {concat}
    for node in unique:  # every Slice output is read only inside the idiom
        out = node.outputs[0]
        if out.is_graph_output() or any(use.node not in members for use in out.uses()):
            return None
    return FocusIdiom(concat, unique, data, order)
