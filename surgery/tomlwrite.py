"""Writing TOML that means exactly what was intended, whatever the model's names hold.

Every passes.toml the tool writes (``doctor --emit-pipeline``, ``prepare``, the reproducer) goes
through this module, by way of :meth:`surgery.pipeline.Pipeline.to_toml`. Names come from the model and the model may come from anywhere: a tensor named
``"x\\n[[pass]]\\nname = \\"rewrite\\""`` must stay one string, never become a table. So:

- strings are TOML basic strings with ``\\``, ``"`` and every character that is not printable
  escaped (``\\n``, ``\\u0000``, line separators, bidi overrides…), so a string is one visible
  line; a string that is not valid Unicode text (undecodable bytes, lone surrogates) cannot be
  written and raises :class:`Unrepresentable`;
- keys of ``key = value`` lines and table headers are bare only when they are ``A-Za-z0-9_-``,
  otherwise quoted the same way; keys of inline tables are always quoted;
- comments go through :func:`comment`, which makes any text one printable line (control
  characters and undecodable bytes shown as escapes), so no model text can end a comment;
- floats that TOML cannot hold exactly are refused: NaN and infinity are written as TOML's
  ``nan``/``inf`` only when ``allow_nonfinite`` is set.

The output is checked by parsing it back in :func:`dumps` (``check=True``): what is written is
what is read.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from surgery.errors import one_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Unrepresentable", "comment", "dumps", "key", "plain", "string", "text_of", "value"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


class Unrepresentable(ValueError):
    """A value TOML cannot hold exactly (undecodable bytes, a lone surrogate, NaN where refused)."""


def text_of(name: str | bytes) -> str:
    """A name as text: ``bytes`` (protobuf's form of a non-UTF-8 string) decoded if they are UTF-8.

    Raises:
        Unrepresentable: bytes that are not UTF-8, or text with lone surrogates.
    """
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise Unrepresentable(f"{name!r} is not UTF-8 text") from None
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise Unrepresentable(f"{name!r} holds a lone surrogate, not Unicode text")
    return name


def string(text: str | bytes) -> str:
    """A TOML basic string holding exactly ``text`` (every control character escaped)."""
    text = text_of(text)
    out = ['"']
    for c in text:
        escaped = _ESCAPES.get(c)
        if escaped is not None:
            out.append(escaped)
        elif not c.isprintable():  # controls, but also U+2028, U+0085, bidi overrides: never raw
            out.append(f"\\u{ord(c):04X}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08X}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def key(name: str | bytes) -> str:
    """A TOML key: bare when it can be, quoted otherwise."""
    text = text_of(name)
    return text if _BARE_KEY.match(text) else string(text)


def value(obj: Any, *, allow_nonfinite: bool = False) -> str:
    """A TOML inline value: bool, int, float, string, list/tuple, mapping (inline table), Path, numpy scalars/arrays."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy arrays and scalars
        obj = obj.tolist()
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        if math.isnan(obj) or math.isinf(obj):
            if not allow_nonfinite:
                raise Unrepresentable(f"{obj!r} is not a finite number")
            return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return repr(obj)
    if isinstance(obj, (str, bytes)):
        return string(obj)
    if isinstance(obj, Path):
        return string(str(obj))
    if isinstance(obj, Mapping):
        if not obj:
            return "{}"
        # inline-table keys are always quoted: they are usually names from the model
        return (
            "{ "
            + ", ".join(
                f"{string(k)} = {value(v, allow_nonfinite=allow_nonfinite)}" for k, v in obj.items()
            )
            + " }"
        )
    if isinstance(obj, Sequence):
        return "[" + ", ".join(value(v, allow_nonfinite=allow_nonfinite) for v in obj) + "]"
    raise TypeError(f"cannot write {type(obj).__name__} as TOML")


def comment(text: Any) -> str:
    """``# text`` as one line: anything that could end the comment or the line is shown escaped.

    Control characters (newlines, carriage returns, form feeds…), lone surrogates, the line and
    paragraph separators and undecodable bytes appear as Python-style escapes, so model text in a
    comment is visible but inert.
    """
    shown = one_line(text)
    return f"# {shown}" if shown else "#"


def dumps(
    doc: Mapping[str, Any],
    *,
    allow_nonfinite: bool = False,
    check: bool = True,
    header: Sequence[Any] = (),
    notes: Mapping[int, Sequence[Any]] | None = None,
) -> str:
    """Write a passes.toml-shaped document: top-level scalars, then tables, then arrays of tables.

    A table inside an array of tables (``[pass.verify]``) is written as a sub-table; other nested
    mappings as inline tables. With ``check`` the text is parsed back and must equal ``doc``.

    ``header`` lines open the file and ``notes[i]`` stand before the ``i``-th table of the document's
    array of tables (``notes[len]``: after the last), all as comments through :func:`comment`; an
    empty line stays an empty line. A document with ``notes`` has at most one array of tables.
    """
    lines: list[str] = [_note(line) for line in header]
    opts = {"allow_nonfinite": allow_nonfinite}
    notes = notes or {}

    def is_table_array(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(t, Mapping) for t in v)

    def noted(i: int) -> list[str]:
        return [_note(line) for line in notes.get(i, ())]

    arrays = [k for k, v in doc.items() if is_table_array(v)]
    if notes and len(arrays) > 1:
        raise ValueError(f"notes need one array of tables, the document has {len(arrays)}")
    for k, v in doc.items():
        if not isinstance(v, Mapping) and not is_table_array(v):
            lines.append(f"{key(k)} = {value(v, **opts)}")
    for k, v in doc.items():
        if isinstance(v, Mapping):
            lines += ["", f"[{key(k)}]"]
            lines += [f"{key(kk)} = {value(vv, **opts)}" for kk, vv in v.items()]
    count = 0
    for k in arrays:
        tables = doc[k]
        count = len(tables)
        for i, table in enumerate(tables):
            lines += ["", *noted(i), f"[[{key(k)}]]"]
            subtables = {
                kk: vv for kk, vv in table.items() if isinstance(vv, Mapping) and kk == "verify"
            }
            lines += [
                f"{key(kk)} = {value(vv, **opts)}"
                for kk, vv in table.items()
                if kk not in subtables
            ]
            for kk, vv in subtables.items():
                lines.append(f"[{key(k)}.{key(kk)}]")
                lines += [f"{key(kkk)} = {value(vvv, **opts)}" for kkk, vvv in vv.items()]
    if notes.get(count):
        lines += ["", *noted(count)]
    text = "\n".join(lines).strip("\n") + "\n"
    if check:
        _check_round_trip(text, doc)
    return text


def _note(line: Any) -> str:
    """A comment line, or an empty line for an empty string (a break between blocks of notes)."""
    return "" if isinstance(line, str) and not line else comment(line)


def plain(obj: Any) -> Any:
    """``obj`` in the form TOML reads back: numpy arrays and scalars, tuples as lists, paths and
    UTF-8 bytes as strings, mapping keys as strings; ``None`` values of mappings left out (TOML has
    no null: an option left out takes its default).

    Raises:
        Unrepresentable: bytes that are not UTF-8 text.
    """
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
    if isinstance(obj, bytes):
        return text_of(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {
            text_of(k) if isinstance(k, bytes) else str(k): plain(v)
            for k, v in obj.items()
            if v is not None
        }
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _check_round_trip(text: str, doc: Mapping[str, Any]) -> None:
    parsed = tomllib.loads(text)
    if not _same(parsed, plain(doc)):  # pragma: no cover - a bug in this module
        raise AssertionError("the TOML writer does not round-trip this document")
