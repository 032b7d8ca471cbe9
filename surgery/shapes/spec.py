"""Input-shape specs in the syntaxes users already have, and dim-name bindings.

Accepted forms (all parse to ``{input_name: (d0, d1, ...)}``; ``-1`` keeps that dim as it is):

- ATC: ``"x:1,3,224,224;y:1,10"``; a scalar input is ``"s:"``;
- onnxsim: ``"x:1,3,224,224"`` (several entries separated by spaces or ``;``);
- Polygraphy: ``"x:[1,3,224,224] y:[1,10]"``;
- a TOML table / dict: ``{x = [1, 3, 224, 224]}``.

Names may contain ``:`` (``input:0:1,3`` is input ``input:0``): the dims follow the last colon.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from surgery.errors import PipelineError

__all__ = ["MAX_DIM", "ShapeSpec", "format_atc_shapes", "parse_bucket_spec", "parse_shapes"]

ShapeSpec = dict[str, tuple[int, ...]]

#: The largest static dim a user may ask for (2^31 - 1: ATC and most NPU runtimes index with int32);
#: anything larger is a typo that would otherwise surface as an allocation failure much later.
MAX_DIM = (1 << 31) - 1

_DIMS_RE = re.compile(r"^\[?\s*(-?\d+(\s*,\s*-?\d+)*)?\s*,?\s*\]?$")


def _split_entries(text: str) -> list[str]:
    """Split on ``;`` and on whitespace outside brackets."""
    entries: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if depth == 0 and (ch == ";" or ch.isspace()):
            if current:
                entries.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        entries.append("".join(current))
    return entries


def _check_dims(name: str, dims: Sequence[Any], where: str) -> tuple[int, ...]:
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise PipelineError(f"{where}: dim {d!r} of '{name}' is not an integer")
        if d < -1:
            raise PipelineError(
                f"{where}: dim {d} of '{name}' is negative (use -1 to keep a dim dynamic)"
            )
        if d > MAX_DIM:
            raise PipelineError(
                f"{where}: dim {d} of '{name}' is above {MAX_DIM}, larger than any tensor can be"
            )
        out.append(int(d))
    return tuple(out)


def parse_shapes(
    spec: str | Mapping[str, Sequence[int]] | None, *, where: str = "shapes"
) -> ShapeSpec:
    """Parse a shape spec (string in ATC/onnxsim/Polygraphy syntax, or a mapping).

    Raises:
        PipelineError: on a malformed spec or a name given twice.
    """
    if spec is None or spec == "":
        return {}
    result: ShapeSpec = {}
    if isinstance(spec, Mapping):
        for name, dims in spec.items():
            if not isinstance(dims, (list, tuple)):
                raise PipelineError(
                    f"{where}: the shape of '{name}' must be a list of ints, got {dims!r}"
                )
            result[str(name)] = _check_dims(str(name), dims, where)
        return result
    if not isinstance(spec, str):
        raise PipelineError(f"{where}: expected a string or a table, got {type(spec).__name__}")
    for entry in _split_entries(spec.strip()):
        name, sep, dims_text = entry.rpartition(":")
        if not sep or not name:
            raise PipelineError(
                f"{where}: cannot read {entry!r}; write 'name:1,3,224,224' (ATC/onnxsim), "
                f"'name:[1,3,224,224]' (Polygraphy) or 'name:' for a scalar"
            )
        dims_text = dims_text.strip()
        if not _DIMS_RE.match(dims_text):
            raise PipelineError(
                f"{where}: cannot read the dims {dims_text!r} of '{name}' (expected e.g. 1,3,224,224)"
            )
        numbers = [int(t) for t in re.findall(r"-?\d+", dims_text)]
        if name in result:
            raise PipelineError(f"{where}: input '{name}' is given twice")
        result[name] = _check_dims(name, numbers, where)
    return result


def format_atc_shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    """``{"x": (1, 3), "s": ()}`` → ``"x:1,3;s:"`` (ATC ``--input_shape`` syntax)."""
    return ";".join(
        f"{name}:{','.join(str(int(d)) for d in dims)}" for name, dims in shapes.items()
    )


def parse_bucket_spec(
    spec: str | Mapping[str, Any], *, where: str = "buckets"
) -> dict[str, tuple[int, ...]]:
    """Parse ``"batch=1,4,8"`` (several bindings joined by ``;``) or ``{batch = [1, 4, 8]}``.

    A key is a dim name (``batch``) or an input axis (``x[0]``). Only one key may vary: each bucket
    binds it to one value; several keys must list the same number of values (zipped).
    """
    table: dict[str, tuple[int, ...]] = {}
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, str):
        items = []
        for part in [p for p in re.split(r"[;\s]+", spec.strip()) if p]:
            key, sep, values = part.partition("=")
            if not sep or not key:
                raise PipelineError(f"{where}: cannot read {part!r}; write e.g. 'batch=1,4,8'")
            try:
                items.append((key, [int(v) for v in values.split(",") if v.strip()]))
            except ValueError:
                raise PipelineError(
                    f"{where}: the values of '{key}' must be integers, got {values!r}"
                ) from None
    else:
        raise PipelineError(f"{where}: expected a string or a table, got {type(spec).__name__}")
    for key, values in items:
        if isinstance(values, int) and not isinstance(values, bool):
            values = [values]
        if not isinstance(values, (list, tuple)) or not values:
            raise PipelineError(f"{where}: '{key}' needs a non-empty list of sizes")
        if any(
            isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_DIM for v in values
        ):
            raise PipelineError(
                f"{where}: the sizes of '{key}' must be positive integers, got {list(values)}"
            )
        if len(set(values)) != len(values):
            raise PipelineError(f"{where}: '{key}' lists a size twice: {list(values)}")
        table[str(key)] = tuple(int(v) for v in values)
    if not table:
        raise PipelineError(f"{where}: no bucket given")
    lengths = {len(v) for v in table.values()}
    if len(lengths) != 1:
        raise PipelineError(f"{where}: every key must list the same number of sizes, got {table}")
    return table
