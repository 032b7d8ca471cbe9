"""Several parity samples instead of one: the planned inputs plus inputs that reach further.

One random sample lies in a small box: ``Where(m > 100, 0, Relu(m))`` equals ``Relu(m)`` on inputs in
[-1, 1), an int input clamped to [0, 10) equals itself on ints drawn from [0, 10), and
``Reshape(m, [2, 4])`` equals ``Reshape(m, [-1, 4])`` for the guessed batch 2. So parity runs on:

1. the planned sample (:func:`~surgery.verify.inputs.plan_inputs`: declared, given, hinted or generated);
2. wider samples: float inputs over ×10 and ×1000 their range (kept non-negative when the declared
   range is), non-index integer inputs over ±100 and ±10⁴ (clipped to the dtype; declared integer
   ranges are the range the model accepts and are kept), index inputs over the whole indexed size;
3. where a symbolic dim survives to a graph output, a sample with every guessed symbolic dim one
   larger (catches a size baked in for the guessed batch).

Inputs the user gave (arrays, ``data``, ``value``) or a pass pinned are the same in every sample.
A candidate on which the original fails or gives a non-finite output is dropped and the next
candidate tried (non-negative variants, then constant fills at the range ends); the caller reports
the drops. ``scale`` is how much wider than planned a sample's float inputs are: the absolute
tolerance is scaled by it, so a wide sample is as strict, relative to its magnitudes, as the
planned one.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.pass_base import FeedHints
from surgery.verify.inputs import FeedPlan, InputsConfig, _index_bound

__all__ = ["DEFAULT_SAMPLES", "Sample", "candidate_samples", "extreme_samples", "fixed_inputs"]

DEFAULT_SAMPLES = 3
"""The planned sample plus two wide ones (``[verify] samples``)."""

_FLOAT_DEFAULT = (-1.0, 1.0)


@dataclasses.dataclass
class Sample:
    """One set of parity feeds and how it was drawn."""

    name: str
    feeds: dict[str, np.ndarray]
    scale: float = 1.0
    provenance: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Recipe:
    name: str
    scale: float
    nonneg: bool = False
    fill: str | None = None  # "high" / "low": every element at that end of the range
    resize: bool = False


def fixed_inputs(model: ir.Model, config: InputsConfig, hints: FeedHints) -> set[str]:
    """Inputs whose values are not generated (given, pinned, declared values)."""
    fixed = set(hints.values)
    if config.arrays:
        fixed.update(config.arrays)
    if config.data is not None:
        try:
            with np.load(config.data, allow_pickle=False) as npz:
                fixed.update(npz.files)
        except Exception:  # plan_inputs already reported an unreadable file
            pass
    fixed.update(name for name, spec in config.specs.items() if spec.value is not None)
    return fixed


def _resizable(
    model: ir.Model, config: InputsConfig, hints: FeedHints, fixed: set[str]
) -> dict[str, list[int]]:
    """Input name → axes whose size was guessed (symbolic, not declared, hinted or bound)."""
    out: dict[str, list[int]] = {}
    for value in model.graph.inputs:
        name = value.name
        if not name or name in fixed or name in hints.shapes or value.shape is None:
            continue
        spec = config.specs.get(name)
        if spec is not None and spec.shape is not None:
            continue
        axes = [
            axis
            for axis, dim in enumerate(value.shape)
            if not isinstance(dim, int) and (getattr(dim, "value", None) not in hints.dims)
        ]
        if axes:
            out[name] = axes
    return out


def _symbolic_output(model: ir.Model) -> bool:
    return any(
        v.shape is None or any(not isinstance(d, int) for d in v.shape) for v in model.graph.outputs
    )


def _int_range(dtype: np.dtype, wide: float, nonneg: bool) -> tuple[int, int]:
    info = np.iinfo(dtype)
    if wide <= 1:  # not a wide sample (e.g. the second size): the planned range
        return 0, 10
    span = 100 if wide <= 10 else 10_000
    lo, hi = (0 if nonneg else -span), span
    return max(lo, int(info.min)), min(hi, int(info.max))


def _draw(
    value: ir.Value,
    planned: np.ndarray,
    shape: tuple[int, ...],
    recipe: _Recipe,
    declared: tuple[float, float] | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, str]:
    dtype = planned.dtype
    if dtype.kind == "b":
        fill = {"high": True, "low": False}.get(recipe.fill or "")
        if fill is not None:
            return np.full(shape, fill), f"all {fill}"
        return rng.random(shape) < 0.5, "random bool"
    if dtype.kind in "iu":
        bound = _index_bound(value) if declared is None else None
        if bound is not None:
            lo, hi = 0, bound
        elif declared is not None:
            lo, hi = int(declared[0]), int(declared[1])
        else:
            lo, hi = _int_range(dtype, recipe.scale, recipe.nonneg or dtype.kind == "u")
        if recipe.fill:
            v = hi - 1 if recipe.fill == "high" else lo
            return np.full(shape, max(v, lo), dtype=dtype), f"all {max(v, lo)}"
        return rng.integers(lo, max(hi, lo + 1), size=shape).astype(dtype), f"ints in [{lo}, {hi})"
    if dtype.kind in "fc" or dtype.kind == "V" or dtype.type.__module__ != "numpy":
        flo, fhi = declared if declared is not None else _FLOAT_DEFAULT
        mid, half = (flo + fhi) / 2, (fhi - flo) / 2
        flo, fhi = mid - half * recipe.scale, mid + half * recipe.scale
        if recipe.nonneg or (declared is not None and declared[0] >= 0):
            flo, fhi = max(flo, 0.0), max(fhi, 0.0)
            if declared is not None and declared[0] >= 0:
                flo = declared[0]
        if recipe.fill:
            fv = fhi if recipe.fill == "high" else flo
            return np.full(shape, fv, dtype=np.float64).astype(dtype), f"all {fv:g}"
        array = rng.uniform(flo, fhi, size=shape).astype(
            np.float32 if dtype.type.__module__ != "numpy" else dtype
        )
        return array.astype(dtype), f"uniform in [{flo:g}, {fhi:g})"
    return planned, "as planned"


def _build(
    model: ir.Model,
    config: InputsConfig,
    planned: FeedPlan,
    recipe: _Recipe,
    fixed: set[str],
    resizable: Mapping[str, list[int]],
    seed: int,
) -> Sample:
    rng = np.random.default_rng([seed, zlib.crc32(recipe.name.encode())])
    feeds: dict[str, np.ndarray] = {}
    provenance: dict[str, str] = {}
    sizes: dict[Any, int] = {}
    by_name = {v.name: v for v in model.graph.inputs}
    for name, array in planned.feeds.items():
        value = by_name.get(name)
        if (
            name in fixed
            or value is None
            or not isinstance(array, np.ndarray)
            or array.dtype.kind in "OSU"
        ):
            feeds[name] = array
            continue
        shape = list(array.shape)
        if recipe.resize:
            for axis in resizable.get(name, ()):
                dim = value.shape[axis] if value.shape is not None else None
                key = getattr(dim, "value", None) or (name, axis)
                sizes.setdefault(key, shape[axis] + 1)
                shape[axis] = sizes[key]
        spec = config.specs.get(name)
        feeds[name], how = _draw(
            value, array, tuple(shape), recipe, spec.range if spec else None, rng
        )
        provenance[name] = f"{list(shape)} {how}"
    return Sample(recipe.name, feeds, recipe.scale, provenance)


def candidate_samples(
    model: ir.Model, config: InputsConfig, hints: FeedHints, planned: FeedPlan, *, seed: int = 0
) -> Iterator[Sample]:
    """The extra samples, best first (the caller keeps the first ones the original runs finitely).

    The "second size" candidate, when the model has one, comes first and is yielded with
    ``name == "second size"`` so the caller can count it apart from the wide samples.
    """
    fixed = fixed_inputs(model, config, hints)
    generated = [n for n in planned.feeds if n not in fixed]
    if not generated:
        return
    resizable = _resizable(model, config, hints, fixed)
    recipes: list[_Recipe] = []
    if resizable and _symbolic_output(model):
        recipes.append(_Recipe("second size", 1.0, resize=True))
    recipes += [
        _Recipe("wide x10", 10.0),
        _Recipe("wide x1000", 1000.0),
        _Recipe("wide x10 non-negative", 10.0, nonneg=True),
        _Recipe("wide x1000 non-negative", 1000.0, nonneg=True),
        _Recipe("wide x3", 3.0),
        _Recipe("high x10", 10.0, fill="high"),
        _Recipe("high x1000", 1000.0, fill="high"),
        _Recipe("low x10", 10.0, fill="low"),
    ]
    for recipe in recipes:
        yield _build(model, config, planned, recipe, fixed, resizable, seed)


def extreme_samples(
    model: ir.Model, config: InputsConfig, hints: FeedHints, planned: FeedPlan, *, seed: int = 0
) -> Iterator[Sample]:
    """Samples at the ends of the ranges, for taking a branch no sample took yet."""
    fixed = fixed_inputs(model, config, hints)
    for scale in (1.0, 10.0, 1000.0, 1e5):
        for fill in ("high", "low"):
            recipe = _Recipe(f"{fill} x{scale:g}", scale, fill=fill)
            yield _build(model, config, planned, recipe, fixed, {}, seed)
    for fill in ("high", "low"):
        recipe = _Recipe(f"{fill} x1000 non-negative", 1000.0, nonneg=True, fill=fill)
        yield _build(model, config, planned, recipe, fixed, {}, seed)
