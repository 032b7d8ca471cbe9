"""Inputs for parity runs: declared, loaded from .npz, hinted by passes, or generated.

Random inputs lie (a random sample rate drives an untaken branch, random token ids overflow a
Gather, a dynamic dim defaulted to 1 hides a broadcast bug), so generated inputs are built with care:
declared shapes and values win; passes that fix shapes or pin values say so through
:class:`~surgery.pass_base.FeedHints`; integer inputs that index something get values inside the
indexed range; and every generated input is described in the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx_ir as ir

from surgery.errors import InputError
from surgery.graph import value_names
from surgery.pass_base import FeedHints
from surgery.shapes.dims import dim_name, is_known_dim
from surgery.verify.needs import min_dim, nbytes, reaches_signal_op

__all__ = ["INDEX_OPS", "FeedPlan", "InputSpec", "InputsConfig", "plan_inputs", "read_npz"]


#: op type → index of the input that holds indices into input 0 (and the axis attribute default).
INDEX_OPS = {"Gather": 1, "GatherElements": 1, "GatherND": 1, "ScatterElements": 1, "OneHot": 0}
#: ops through which an integer input passes unchanged in value.
_VALUE_PRESERVING = {
    "Cast",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Flatten",
    "Identity",
    "Expand",
    "Transpose",
}

_DEFAULT_FLOAT_RANGE = (-1.0, 1.0)
_DEFAULT_INT_RANGE = (0, 10)
_DEFAULT_DIM = 8
_DEFAULT_SPATIAL_DIM = 64
_DEFAULT_BATCH = 2
#: audio-like 1-D/2-D float inputs: one second at 16 kHz, not 8 samples (front ends need ≥ 400).
_DEFAULT_SIGNAL_LENGTH = 16000
_SIGNAL_WORDS = (
    "audio",
    "wav",
    "waveform",
    "speech",
    "signal",
    "pcm",
    "samples",
    "input_values",
    "sound",
)
_SMALL_INTS = ("int4", "uint4", "int2", "uint2")
#: largest generated (or broadcast) input; beyond it the run stops with exit 2 before allocating.
MAX_GENERATED_BYTES = 2 << 30


def read_npz(path: str | Path, *, what: str = "input arrays") -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` file (never a pickle).

    A ``.npy`` file holds one unnamed array: it is refused by its magic bytes, before reading it,
    with the way to make an ``.npz``.

    Raises:
        InputError: not an ``.npz`` file, or unreadable.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror}") from None
    if magic == b"\x93NUMPY":
        raise InputError(
            f"{path}: a .npy file holds one unnamed array; {what} must be an .npz of arrays named "
            "after the inputs: np.savez('inputs.npz', x=array)"
        )
    if not magic.startswith(b"PK"):
        raise InputError(
            f"{path}: not an .npz file (expected a zip of arrays named after the inputs)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise InputError(f"{path}: cannot read {what}: {type(exc).__name__}: {exc}") from None


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
        if (
            node.op_type in INDEX_OPS
            and INDEX_OPS[node.op_type] == idx
            and node.op_type != "OneHot"
        ):
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


def _guess_dim(
    value: ir.Value,
    axis: int,
    dim: Any,
    dims: Mapping[str, int],
    ones: bool,
    need: int = 1,
    signal: bool = False,
) -> tuple[int, str]:
    """A size for one symbolic dim: a binding, else a default by role, never below ``need``."""
    name = dim_name(dim)
    if name is not None and name in dims:
        return dims[name], f"{name}={dims[name]}"
    label = name or "?"
    rank = len(value.shape) if value.shape is not None else 0
    lname = (name or "").lower()
    if ones:
        size, why = 1, ""
    elif axis == 0 and rank > 1 and (not name or "batch" in lname or lname in ("n", "b", "bs")):
        size, why = _DEFAULT_BATCH, ""
    elif signal:
        size, why = _DEFAULT_SIGNAL_LENGTH, " (audio-like signal)"
    elif axis == 0 and (not name or "batch" in lname or lname in ("n", "b", "bs")):
        size, why = _DEFAULT_BATCH, ""
    elif rank == 4 and axis >= 2:
        size, why = _DEFAULT_SPATIAL_DIM, ""
    else:
        size, why = _DEFAULT_DIM, ""
    if need > size:
        size, why = need, f" (the model needs at least {need})"
    return size, f"{label}={size}{why}"


def _signal_axis(value: ir.Value) -> int | None:
    """The time axis of an audio-like float input (1-D/2-D, or [batch, time, 1|2] into STFT/DFT), else None."""
    if value.shape is None or value.dtype is None or not value.dtype.is_floating_point():
        return None
    shape = list(value.shape)
    rank = len(shape)
    if rank in (1, 2):
        axis = rank - 1
    elif rank == 3 and shape[2] in (1, 2):
        axis = 1
    else:
        return None
    if is_known_dim(shape[axis]):
        return None
    text = f"{value.name} {shape[axis]}".lower()
    if any(word in text for word in _SIGNAL_WORDS) or reaches_signal_op(value):
        return axis
    return None


def _check_size(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse to allocate an input the machine cannot hold, before allocating it."""
    if any(int(d) < 0 for d in shape):
        raise InputError(f"input '{name}': negative dimension in shape {list(shape)}")
    size = nbytes(tuple(int(d) for d in shape), dtype)
    if size > MAX_GENERATED_BYTES:
        raise InputError(
            f"input '{name}': shape {list(shape)} {dtype.name} needs {size} bytes ({size / 2**30:.1f} GiB), more than "
            f"the {MAX_GENERATED_BYTES // 2**30} GiB an input may take; declare a smaller shape in [inputs] "
            f'or give data = "inputs.npz"'
        )


def _random_array(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    dtype: np.dtype,
    spec: InputSpec,
    value: ir.Value,
    how: list[str],
) -> np.ndarray:
    if dtype.kind == "b":
        how.append("random bool")
        return rng.random(shape) < 0.5
    integer = dtype.kind in "iu" or dtype.name in _SMALL_INTS
    if integer:
        lo, hi = spec.range if spec.range is not None else _DEFAULT_INT_RANGE
        bound = _index_bound(value) if spec.range is None else None
        if bound is not None:
            lo, hi = 0, bound
        if dtype.name in _SMALL_INTS:  # int4/uint4 (ml_dtypes): clip to what the type holds
            info = ml_dtypes.iinfo(dtype)
            lo, hi = max(int(lo), int(info.min)), min(int(hi), int(info.max) + 1)
        how.append(
            f"indices in [0, {bound})"
            if bound is not None
            else f"uniform ints in [{int(lo)}, {int(hi)})"
        )
        ints = rng.integers(int(lo), max(int(hi), int(lo) + 1), size=shape)
        return ints.astype(dtype) if dtype.kind in "iu" else ints.astype(np.int8).astype(dtype)
    if dtype.kind in "fc":
        lo, hi = spec.range if spec.range is not None else _DEFAULT_FLOAT_RANGE
        how.append(f"uniform in [{lo:g}, {hi:g})")
        return rng.uniform(lo, hi, size=shape).astype(dtype)
    if dtype.kind in "OSU":
        how.append("random strings")
        return np.array(rng.choice(["a", "b", "c"], size=shape), dtype=object)
    # ml_dtypes floats (bfloat16, float8, float4): generate in float32 and convert.
    lo, hi = spec.range if spec.range is not None else _DEFAULT_FLOAT_RANGE
    how.append(f"uniform in [{lo:g}, {hi:g})")
    return rng.uniform(lo, hi, size=shape).astype(np.float32).astype(dtype)


def _spec_array(name: str, spec: InputSpec, value: ir.Value) -> np.ndarray:
    dtype = _dtype(spec.dtype) if spec.dtype else _np_dtype(value)
    array = np.asarray(spec.value, dtype=np.float64 if dtype.kind == "V" else dtype).astype(dtype)
    if spec.shape is not None:
        _check_size(name, tuple(spec.shape), dtype)
        array = np.broadcast_to(array, spec.shape).copy()
    return array


def _dtype(name: str) -> np.dtype:
    """A numpy dtype from a name, ``ml_dtypes`` names included (bfloat16, float8_e4m3fn, int4 …)."""
    try:
        return np.dtype(name)
    except TypeError:
        if hasattr(ml_dtypes, name):
            return np.dtype(getattr(ml_dtypes, name))
        raise InputError(f"unknown dtype '{name}'") from None


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
    names = set(value_names(graph.inputs))
    given: dict[str, np.ndarray] = {}
    if config.data is not None:
        path = Path(config.data)
        if not path.is_file():
            raise InputError(f"inputs data file {path} does not exist")
        given.update(read_npz(path))
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
    needs = _dim_needs(graph, given, hints, config)
    chosen: dict[str, tuple[int, str]] = {}  # one size per symbolic dim name, across inputs
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
            signal = _signal_axis(value)
            dims = []
            for axis, dim in enumerate(value.shape):
                if is_known_dim(dim):
                    dims.append(int(dim))
                    continue
                key = _dim_key(name, axis, dim)
                if key in chosen and key not in hints.dims:
                    size, text = chosen[key]
                else:
                    size, text = _guess_dim(
                        value,
                        axis,
                        _dim_name(dim),
                        hints.dims,
                        ones,
                        needs.get(key, 1),
                        axis == signal,
                    )
                    chosen[key] = (size, text)
                dims.append(size)
                how.append(text)
            shape = tuple(dims)
        dtype = _dtype(spec.dtype) if spec.dtype else _np_dtype(value)
        _check_size(name, shape, dtype)
        array = _random_array(rng, shape, dtype, spec, value, how)
        feeds[name] = np.asarray(array)
        provenance[name] = f"generated {list(shape)} {dtype.name}: " + ", ".join(how)
    return FeedPlan(feeds, provenance)


def _dim_name(dim: Any) -> str | None:
    return dim_name(dim)  # None for -1, "?", anonymous and onnx's unk__N dims


def _dim_key(input_name: str, axis: int, dim: Any) -> str:
    """Symbolic dims with a name are one size across inputs; unnamed ones are per input and axis."""
    name = _dim_name(dim)
    return str(name) if name else f"{input_name}#{axis}"


def _dim_needs(
    graph: ir.Graph, given: Mapping[str, np.ndarray], hints: FeedHints, config: InputsConfig
) -> dict[str, int]:
    """The least size each symbolic dim (by :func:`_dim_key`) must have for every input using it."""
    needs: dict[str, int] = {}
    for value in graph.inputs:
        name = value.name or ""
        if name in given or name in hints.values or name in hints.shapes or value.shape is None:
            continue
        spec = config.specs.get(name)
        if spec is not None and (spec.value is not None or spec.shape is not None):
            continue
        for axis, dim in enumerate(value.shape):
            if is_known_dim(dim):
                continue
            need = min_dim(value, axis)
            if need > 1:
                key = _dim_key(name, axis, dim)
                needs[key] = max(needs.get(key, 1), need)
    return needs
