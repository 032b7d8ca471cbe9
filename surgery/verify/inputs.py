"""Inputs for parity runs: declared, loaded from .npz, hinted by passes, or generated.

Random inputs lie (a random sample rate drives an untaken branch, random token ids overflow a
Gather, a dynamic dim defaulted to 1 hides a broadcast bug), so generated inputs are built with care:
declared shapes and values win; passes that fix shapes or pin values say so through
:class:`~surgery.pass_base.FeedHints`; integer inputs that index something get values inside the
indexed range; and every generated input is described in the report.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.errors import InputError
from surgery.pass_base import FeedHints
from surgery.shapes.dims import dim_name, is_known_dim

__all__ = ["InputSpec", "InputsConfig", "FeedPlan", "plan_inputs", "INDEX_OPS"]

logger = logging.getLogger(__name__)

#: op type → index of the input that holds indices into input 0 (and the axis attribute default).
INDEX_OPS = {"Gather": 1, "GatherElements": 1, "GatherND": 1, "ScatterElements": 1, "OneHot": 0}
#: ops through which an integer input passes unchanged in value.
_VALUE_PRESERVING = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Transpose"}

_DEFAULT_FLOAT_RANGE = (-1.0, 1.0)
_DEFAULT_INT_RANGE = (0, 10)
_DEFAULT_DIM = 8
_DEFAULT_SPATIAL_DIM = 64
_DEFAULT_BATCH = 2


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What ``[inputs]`` says of one input: a shape, dtype, value range, or an exact value."""

    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    range: tuple[float, float] | None = None
    value: Any = None


@dataclasses.dataclass(frozen=True)
class InputsConfig:
    specs: Mapping[str, InputSpec] = dataclasses.field(default_factory=dict)
    data: Path | None = None
    arrays: Mapping[str, np.ndarray] | None = None
    """Arrays given directly from Python (``surgery.apply(..., inputs={...})``)."""


@dataclasses.dataclass
class FeedPlan:
    """The feeds for parity runs and how each was obtained (for the report)."""

    feeds: dict[str, np.ndarray]
    provenance: dict[str, str]


def _np_dtype(value: ir.Value) -> np.dtype:
    if value.dtype is None:
        raise InputError(f"graph input '{value.name}' has no element type")
    return value.dtype.numpy()


def _index_bound(value: ir.Value, depth: int = 0) -> int | None:
    """Smallest size of a dimension that ``value`` indexes, through value-preserving ops."""
    bound: int | None = None
    for use in value.uses():
        node, idx = use.node, use.idx
        found: int | None = None
        if node.op_type in INDEX_OPS and INDEX_OPS[node.op_type] == idx and node.op_type != "OneHot":
            data = node.inputs[0]
            axis = node.attributes.get_int("axis", 0) if node.op_type != "GatherND" else 0
            if data is not None and data.shape is not None and len(data.shape) > 0:
                dim = data.shape[axis % len(data.shape)]
                if is_known_dim(dim):
                    found = dim
        elif node.op_type in _VALUE_PRESERVING and idx == 0 and depth < 8:
            for out in node.outputs:
                sub = _index_bound(out, depth + 1)
                if sub is not None:
                    found = sub if found is None else min(found, sub)
        if found is not None:
            bound = found if bound is None else min(bound, found)
    return bound


def _guess_dim(value: ir.Value, axis: int, dim: Any, dims: Mapping[str, int], ones: bool) -> tuple[int, str]:
    name = dim_name(dim)
    if name is not None and name in dims:
        return dims[name], f"{name}={dims[name]}"
    if ones:
        return 1, f"{name or '?'}=1"
    rank = len(value.shape) if value.shape is not None else 0
    lname = (name or "").lower()
    if axis == 0 and (not name or "batch" in lname or lname in ("n", "b", "bs")):
        return _DEFAULT_BATCH, f"{name or '?'}={_DEFAULT_BATCH}"
    if rank == 4 and axis >= 2:
        return _DEFAULT_SPATIAL_DIM, f"{name or '?'}={_DEFAULT_SPATIAL_DIM}"
    return _DEFAULT_DIM, f"{name or '?'}={_DEFAULT_DIM}"


def _spec_array(name: str, spec: InputSpec, value: ir.Value) -> np.ndarray:
    dtype = np.dtype(spec.dtype) if spec.dtype else _np_dtype(value)
    array = np.asarray(spec.value, dtype=dtype)
    if spec.shape is not None:
        array = np.broadcast_to(array, spec.shape).copy()
    return array


def plan_inputs(
    model: ir.Model,
    config: InputsConfig,
    hints: FeedHints,
    *,
    seed: int = 0,
    ones: bool = False,
) -> FeedPlan:
    """Decide the feeds for every graph input of ``model``.

    Precedence: arrays given from Python and ``data = "inputs.npz"``, then ``[inputs]`` specs,
    then pass hints (pinned values, fixed shapes, dim bindings), then the model's own shapes with
    symbolic dims guessed (``ones=True`` guesses 1 for every symbolic dim, the fallback when the
    first guess does not run).
    """
    rng = np.random.default_rng(seed)
    graph = model.graph
    names = {v.name for v in graph.inputs}
    given: dict[str, np.ndarray] = {}
    if config.data is not None:
        path = Path(config.data)
        if not path.is_file():
            raise InputError(f"inputs data file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as npz:
                given.update({k: npz[k] for k in npz.files})
        except Exception as exc:
            raise InputError(f"{path}: cannot read input arrays: {exc}") from None
    if config.arrays:
        given.update({k: np.asarray(v) for k, v in config.arrays.items()})
    for key in list(given) + list(config.specs):
        if key not in names and key not in hints.values:
            from surgery.options import did_you_mean

            raise InputError(
                f"input '{key}' is not an input of the model{did_you_mean(key, names)}; "
                f"its inputs are: {', '.join(sorted(names))}"
            )

    feeds: dict[str, np.ndarray] = {}
    provenance: dict[str, str] = {}
    initialized = set(graph.initializers)
    for value in graph.inputs:
        name = value.name
        assert name is not None
        if name in given:
            feeds[name] = given[name]
            provenance[name] = "given"
            continue
        if name in hints.values:
            feeds[name] = np.asarray(hints.values[name])
            provenance[name] = "pinned value"
            continue
        spec = config.specs.get(name, InputSpec())
        if spec.value is not None:
            feeds[name] = _spec_array(name, spec, value)
            provenance[name] = "declared value"
            continue
        if name in initialized:
            continue  # an input with a default (initializer): the model's own value is used
        how: list[str] = []
        if spec.shape is not None:
            shape = tuple(spec.shape)
            how.append("declared shape")
        elif name in hints.shapes:
            shape = tuple(hints.shapes[name])
            how.append("shape from a pass")
        else:
            if value.shape is None:
                raise InputError(
                    f"input '{name}' has no shape in the model; declare it in [inputs] "
                    f"(e.g. {name} = {{ shape = [1, 3, 224, 224] }})"
                )
            dims = []
            for axis, dim in enumerate(value.shape):
                if is_known_dim(dim):
                    dims.append(dim)
                    continue
                size, text = _guess_dim(value, axis, dim, hints.dims, ones)
                dims.append(size)
                how.append(text)
            shape = tuple(dims)
        dtype = np.dtype(spec.dtype) if spec.dtype else _np_dtype(value)
        if dtype.kind == "b":
            array = rng.random(shape) < 0.5
            how.append("random bool")
        elif dtype.kind in "iu":
            lo, hi = spec.range if spec.range is not None else _DEFAULT_INT_RANGE
            bound = _index_bound(value) if spec.range is None else None
            if bound is not None:
                lo, hi = 0, bound
                how.append(f"indices in [0, {bound})")
            else:
                how.append(f"uniform ints in [{int(lo)}, {int(hi)})")
            array = rng.integers(int(lo), max(int(hi), int(lo) + 1), size=shape).astype(dtype)
        elif dtype.kind in "fc":
            lo, hi = spec.range if spec.range is not None else _DEFAULT_FLOAT_RANGE
            array = rng.uniform(lo, hi, size=shape).astype(dtype)
            how.append(f"uniform in [{lo:g}, {hi:g})")
        elif dtype.kind in "OSU":
            array = np.array(rng.choice(["a", "b", "c"], size=shape), dtype=object)
            how.append("random strings")
        else:
            # ml_dtypes (bfloat16, float8): generate in float32 and convert.
            lo, hi = spec.range if spec.range is not None else _DEFAULT_FLOAT_RANGE
            array = rng.uniform(lo, hi, size=shape).astype(np.float32).astype(dtype)
            how.append(f"uniform in [{lo:g}, {hi:g})")
        feeds[name] = np.asarray(array)
        provenance[name] = f"generated {list(shape)} {dtype.name}: " + ", ".join(how)
    return FeedPlan(feeds, provenance)
