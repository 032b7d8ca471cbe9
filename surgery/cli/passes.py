"""``surgery passes list`` and ``surgery passes show NAME``: what the pass declarations say.

Both read the shipped catalogue (:mod:`surgery.catalog`) when it matches the installed passes, so
they answer without importing onnx, onnx-ir or the pass library; third-party passes (entry points)
and a catalogue that does not match fall back to the registry.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("passes", help="list the registered passes or show one")
    psub = p.add_subparsers(dest="passes_command", metavar="list|show", required=True)
    lp = psub.add_parser("list", help="one line a pass: name, numerics, summary")
    lp.set_defaults(func=_list)
    sp = psub.add_parser("show", help="a pass's description, numerics, options and statistics")
    sp.add_argument("name")
    sp.set_defaults(func=_show)


def _third_party() -> bool:
    """Whether an installed distribution declares ``surgery.passes`` entry points.

    A scan of the ``*.dist-info``/``*.egg-info`` folders on ``sys.path`` for the group header: the
    same files :mod:`importlib.metadata` reads, without its import and parsing (about 0.15 s, most of
    ``passes list``'s start-up).
    """
    import os

    for entry in sys.path:
        try:
            found = os.scandir(entry or ".")
        except OSError:
            continue
        with found:
            for item in found:
                if not item.name.endswith((".dist-info", ".egg-info")):
                    continue
                try:
                    with open(os.path.join(item.path, "entry_points.txt"), encoding="utf-8") as fh:
                        if "[surgery.passes]" in fh.read().replace(" ", ""):
                            return True
                except OSError:
                    continue
    return False


def _entries() -> list[dict[str, Any]]:
    """Every pass as a catalogue entry: from the shipped index when it is current, else from the registry."""
    from surgery import catalog

    index = catalog.load_index()
    if index is None or _third_party():
        return _from_registry()
    entries = list(index["passes"])
    # passes registered in this process (from Python, or by a test) are not in the shipped index
    loaded = sys.modules.get("surgery.registry")
    if loaded is not None:
        known = {p["name"] for p in entries}
        entries += _from_registry(
            [cls for name, cls in loaded._PASSES.items() if name not in known]
        )
    return entries


def _from_registry(classes: list[Any] | None = None) -> list[dict[str, Any]]:
    from surgery import registry
    from surgery.catalog import entry

    return [entry(cls) for cls in (registry.all_passes() if classes is None else classes)]


def _list(args: argparse.Namespace) -> int:
    from surgery.catalog import render_list

    print(render_list(_entries()))
    return 0


def _show(args: argparse.Namespace) -> int:
    from surgery.catalog import render_show

    entries = {p["name"]: p for p in _entries()}
    if args.name not in entries:
        from surgery import registry

        registry.get(args.name)  # raises the unknown-pass error with its did-you-mean
    print(render_show(entries[args.name]))
    return 0
