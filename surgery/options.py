"""Option schemas: frozen dataclasses whose fields are a pass's TOML keys.

A pass declares ``Options`` as a frozen dataclass. Each field is a TOML key; its type annotation is
the schema and ``field(metadata={"help": ...})`` (or :func:`option`) its documentation. This module
turns a TOML table into an ``Options`` instance, rejecting unknown keys (with a did-you-mean) and
values of the wrong type, and describes the schema for ``surgery passes show``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

from surgery.errors import PipelineError

__all__ = [
    "NoOptions",
    "OptionInfo",
    "describe_options",
    "did_you_mean",
    "option",
    "parse_options",
    "path_options",
]

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING, *, help: str, default_factory: Any = _MISSING, path: bool = False
) -> Any:
    """Declare an option field with its help text (a thin wrapper over ``dataclasses.field``).

    ``path=True`` marks a file or folder: a relative value written in a ``passes.toml`` is taken
    relative to that file's folder, as ``[inputs] data`` is (values given in Python or with
    ``--set`` stay relative to the working directory).
    """
    kwargs: dict[str, Any] = {"metadata": {"help": help, "path": path}}
    if default_factory is not _MISSING:
        kwargs["default_factory"] = default_factory
    elif default is not _MISSING:
        kwargs["default"] = default
    return dataclasses.field(**kwargs)


def path_options(options_cls: type | None) -> list[str]:
    """Names of the fields declared with ``option(..., path=True)``."""
    if not dataclasses.is_dataclass(options_cls):
        return []
    return [f.name for f in dataclasses.fields(options_cls) if f.metadata.get("path")]


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """Options of a pass that takes none."""


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """One option as ``surgery passes show`` prints it."""

    name: str
    type: str
    default: Any
    required: bool
    help: str


def did_you_mean(word: str, candidates: typing.Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "none"
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (list, tuple, typing.Sequence):
        inner = _type_name(args[0]) if args else "any"
        return f"list[{inner}]"
    if origin in (dict, typing.Mapping):
        return f"table[{_type_name(args[0])}, {_type_name(args[1])}]" if args else "table"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it in canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _type_error(where, tp, value)
    if origin is Literal:
        if value in args:
            return value
        raise PipelineError(
            f"{where}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}"
            + (did_you_mean(value, [str(a) for a in args]) if isinstance(value, str) else "")
        )
    if origin in (Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except PipelineError:
                continue
        raise _type_error(where, tp, value)
    if origin in (list, tuple, typing.Sequence):
        if isinstance(value, (list, tuple)):
            inner = args[0] if args else Any
            return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
        raise _type_error(where, tp, value)
    if origin in (dict, typing.Mapping):
        if isinstance(value, dict):
            kt, vt = args if args else (Any, Any)
            return {
                _coerce(k, kt, f"{where} key"): _coerce(v, vt, f"{where}.{k}")
                for k, v in value.items()
            }
        raise _type_error(where, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(where, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(where, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(where, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(where, tp, value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _type_error(where, tp, value)


def _type_error(where: str, tp: Any, value: Any) -> PipelineError:
    return PipelineError(
        f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
    )


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse_options(cls: type, table: typing.Mapping[str, Any], *, owner: str) -> Any:
    """Build an instance of the options dataclass ``cls`` from a TOML table.

    Raises:
        PipelineError: for unknown keys (with a did-you-mean), wrong types, or missing required keys.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise PipelineError(
                f"{owner}: unknown option '{key}'{did_you_mean(key, fields)}; known options: {known}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{owner}.{key}")
    for name, f in fields.items():
        if name not in kwargs and f.default is _MISSING and f.default_factory is _MISSING:
            raise PipelineError(f"{owner}: option '{name}' is required ({_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation in the dataclass
        raise PipelineError(f"{owner}: {exc}") from None


def describe_options(cls: type) -> list[OptionInfo]:
    """List the options of ``cls`` for display."""
    hints = _hints(cls)
    infos = []
    for f in dataclasses.fields(cls):
        if f.default is not _MISSING:
            default, required = f.default, False
        elif f.default_factory is not _MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        infos.append(
            OptionInfo(
                name=f.name,
                type=_type_name(hints[f.name]),
                default=default,
                required=required,
                help=str(f.metadata.get("help", "")),
            )
        )
    return infos
