"""``surgery passes list`` and ``surgery passes show NAME``: what the pass declarations say."""

from __future__ import annotations

import argparse

from surgery import registry
from surgery.options import describe_options

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("passes", help="list the registered passes or show one")
    psub = p.add_subparsers(dest="passes_command", metavar="list|show", required=True)
    lp = psub.add_parser("list", help="one line a pass: name, numerics, summary")
    lp.set_defaults(func=_list)
    sp = psub.add_parser("show", help="a pass's description, numerics and options")
    sp.add_argument("name")
    sp.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    passes = registry.all_passes()
    width = max((len(p.name) for p in passes), default=4)
    for cls in passes:
        kind = cls.numerics.value + (" gate" if cls.is_gate else "")
        print(f"{cls.name.ljust(width)}  {kind.ljust(12)}  {cls.summary()}")
    return 0


def _show(args: argparse.Namespace) -> int:
    cls = registry.get(args.name)
    print(f"{cls.name}: {cls.summary()}")
    print()
    print(f"numerics: {cls.numerics.value}")
    if cls.default_tolerance is not None:
        print(f"default tolerance: rtol {cls.default_tolerance.rtol:g}, atol {cls.default_tolerance.atol:g}")
    if cls.is_gate:
        print("gate: fails the run when its condition does not hold")
    body = cls.description().split("\n", 1)
    if len(body) > 1 and body[1].strip():
        print()
        print(body[1].strip())
    options = describe_options(cls.Options)
    print()
    if not options:
        print("options: none")
        return 0
    print("options:")
    for o in options:
        default = "required" if o.required else f"default {o.default!r}"
        print(f"  {o.name} ({o.type}; {default})")
        if o.help:
            print(f"      {o.help}")
    return 0
