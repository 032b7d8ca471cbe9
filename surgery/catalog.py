"""The pass catalogue: what every built-in pass declares, as data, without importing the passes.

``surgery passes list`` and ``surgery passes show`` must answer in a blink, and importing the pass
library pulls in onnx, onnx-ir and numpy (about a second on a busy machine). The declarations do
not change between releases, so :func:`build` reads them once from the registry and
``scripts/build_pass_index.py`` writes them to ``surgery/data/passes.json`` and the reference page
``docs/passes.md``; a test fails when either is out of date.

The shipped index is used only while it provably describes the installed pass modules: it records
the names and sizes of the files in ``surgery/passes/``, and :func:`load_index` returns None when
they differ (an edited install, a development checkout with a new pass). Third-party passes
(entry points) are never in the index: the CLI imports them when there are any.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "INDEX_PATH",
    "build",
    "entry",
    "example_toml",
    "fingerprint",
    "load_index",
    "render_list",
    "render_markdown",
    "render_show",
]

INDEX_PATH = Path(__file__).with_name("data") / "passes.json"
_SCHEMA = 3  # 2: every entry has an "example"; 3: and "statistics"


def _passes_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("surgery.passes")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def fingerprint() -> list[list[Any]]:
    """Names and sizes of the pass modules as installed (cheap: one directory scan)."""
    folder = _passes_dir()
    if folder is None:
        return []
    return sorted([e.name, e.stat().st_size] for e in os.scandir(folder) if e.name.endswith(".py"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def build() -> dict[str, Any]:
    """Read every built-in pass's declaration from the registry (imports the pass library)."""
    from surgery import registry  # all_passes() imports surgery.passes, registering the built-ins

    passes = [
        entry(cls) for cls in registry.all_passes() if cls.__module__.startswith("surgery.passes.")
    ]
    # third-party passes are not shipped in the index
    return {"schema": _SCHEMA, "fingerprint": fingerprint(), "passes": passes}


def entry(cls: Any) -> dict[str, Any]:
    """One pass's declaration as catalogue data (what ``passes show`` and ``docs/passes.md`` print)."""
    from surgery.options import describe_options

    tol = cls.default_tolerance
    options = [
        {
            "name": o.name,
            "type": o.type,
            "default": _jsonable(o.default),
            "required": o.required,
            "help": o.help,
        }
        for o in describe_options(cls.Options)
    ]
    return {
        "name": cls.name,
        "module": cls.__module__,
        "numerics": cls.numerics.value,
        "gate": bool(cls.is_gate),
        "summary": cls.summary(),
        "description": cls.description(),
        "default_tolerance": {"rtol": tol.rtol, "atol": tol.atol} if tol is not None else None,
        "options": options,
        "example": example_toml(cls.name, options, getattr(cls, "example", "")),
        "statistics": _statistics(cls),
    }


def _statistics(cls: Any) -> list[dict[str, str]] | None:
    """The declared stats keys in declaration order; None when the pass declares none."""
    declared = getattr(cls, "statistics", None)
    if declared is None:
        return None
    return [{"name": str(k), "meaning": str(v)} for k, v in declared.items()]


def example_toml(name: str, options: list[dict[str, Any]], example: str = "") -> str:
    """A ``[[pass]]`` table for the pass: its declared ``example`` keys, else up to two defaults."""
    lines = ["[[pass]]", f"name = {json.dumps(name)}"]
    if example.strip():
        lines += [line.rstrip() for line in example.strip().splitlines()]
    else:
        lines += [
            f"{o['name']} = {_toml_example(o['default'])}"
            for o in options
            if not o["required"]
            and o["default"] not in (None, "", [], {})
            and _finite(o["default"])
        ][:2]
    return "\n".join(lines)


def load_index() -> dict[str, Any] | None:
    """The shipped index, or None when it does not match the installed pass modules."""
    try:
        data = json.loads(INDEX_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("schema") != _SCHEMA or data.get("fingerprint") != fingerprint():
        return None
    return data


def render_list(entries: list[dict[str, Any]]) -> str:
    width = max((len(p["name"]) for p in entries), default=4)
    lines = []
    for p in sorted(entries, key=lambda p: p["name"]):
        kind = p["numerics"] + (" gate" if p["gate"] else "")
        lines.append(f"{p['name'].ljust(width)}  {kind.ljust(12)}  {p['summary']}")
    return "\n".join(lines)


def render_show(p: dict[str, Any]) -> str:
    lines = [f"{p['name']}: {p['summary']}", "", f"numerics: {p['numerics']}"]
    tol = p.get("default_tolerance")
    if tol is not None:
        lines.append(f"default tolerance: rtol {tol['rtol']:g}, atol {tol['atol']:g}")
    if p["gate"]:
        lines.append("gate: fails the run when its condition does not hold")
    body = p["description"].split("\n", 1)
    if len(body) > 1 and body[1].strip():
        lines += ["", body[1].strip()]
    lines.append("")
    if not p["options"]:
        lines.append("options: none")
    else:
        lines.append("options:")
        for o in p["options"]:
            default = "required" if o["required"] else f"default {_show_default(o['default'])}"
            lines.append(f"  {o['name']} ({o['type']}; {default})")
            if o["help"]:
                lines.append(f"      {o['help']}")
    lines += ["", *_show_statistics(p.get("statistics"))]
    example = p.get("example") or example_toml(p["name"], p["options"])
    lines += [
        "",
        "example (passes.toml; or name the pass on the command line and give these keys with "
        f"--set {p['name']}.KEY=VALUE):",
        *(f"  {line}" for line in example.splitlines()),
    ]
    return "\n".join(lines)


def _show_statistics(stats: list[dict[str, str]] | None) -> list[str]:
    if stats is None:
        return ["statistics: not declared"]
    if not stats:
        return ["statistics: none"]
    width = max(len(s["name"]) for s in stats)
    return ["statistics (the report's stats keys):"] + [
        f"  {s['name'].ljust(width)}  {s['meaning']}" for s in stats
    ]


def _show_default(value: Any) -> str:
    return repr(value) if not isinstance(value, str) or not value.startswith("<") else value


def render_markdown(index: dict[str, Any]) -> str:
    """``docs/passes.md``: every pass's summary, description, numerics, options and statistics."""
    out = [
        "# Pass reference",
        "",
        "Generated from the pass declarations by `python scripts/build_pass_index.py`; a test fails when",
        "this page is out of date. `surgery passes show NAME` prints the same for one pass.",
        "",
        "| pass | numerics | summary |",
        "|---|---|---|",
    ]
    entries = sorted(index["passes"], key=lambda p: p["name"])
    for p in entries:
        kind = p["numerics"] + (" (gate)" if p["gate"] else "")
        out.append(f"| [`{p['name']}`](#{p['name']}) | {kind} | {_md_cell(p['summary'])} |")
    for p in entries:
        out += ["", f"## {p['name']}", "", p["summary"], ""]
        body = p["description"].split("\n", 1)
        if len(body) > 1 and body[1].strip():
            out += [body[1].strip(), ""]
        out.append(
            f"- numerics: `{p['numerics']}`"
            + (" — a gate: fails the run when its condition does not hold" if p["gate"] else "")
        )
        tol = p.get("default_tolerance")
        if tol is not None:
            out.append(f"- default tolerance: rtol {tol['rtol']:g}, atol {tol['atol']:g}")
        if not p["options"]:
            out.append("- options: none")
        else:
            out += ["", "| option | type | default | what it does |", "|---|---|---|---|"]
            for o in p["options"]:
                default = "required" if o["required"] else f"`{_show_default(o['default'])}`"
                out.append(
                    f"| `{o['name']}` | `{_md_cell(o['type'])}` | {_md_cell(default)} | {_md_cell(o['help'])} |"
                )
        stats = p.get("statistics")
        if stats is None:
            out += ["", "- statistics: not declared"]
        elif not stats:
            out += ["", "- statistics: none"]
        else:
            out += ["", "| statistic | meaning |", "|---|---|"]
            out += [f"| `{s['name']}` | {_md_cell(s['meaning'])} |" for s in stats]
        example = p.get("example") or example_toml(p["name"], p["options"])
        out += ["", "```toml", *example.splitlines(), "```"]
    return "\n".join(out) + "\n"


def _finite(value: Any) -> bool:
    """A pipeline file holds no inf/nan (they are refused), so an example never shows one."""
    import math

    return not isinstance(value, float) or math.isfinite(value)


def _toml_example(value: Any) -> str:
    from surgery import tomlwrite

    return tomlwrite.value(value)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
