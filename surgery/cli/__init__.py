"""The ``surgery`` command line: one module a subcommand, each calling the Python API.

Exit codes: 0 success, 1 a verification gate failed, 2 bad input or usage, 3 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from surgery.errors import SurgeryError

__all__ = ["main", "COMMANDS"]

#: Subcommand modules; each has ``register(subparsers)``. Adding a command is one line here.
COMMANDS: tuple[str, ...] = (
    "surgery.cli.apply",
    "surgery.cli.check",
    "surgery.cli.passes",
    "surgery.cli.extract",
    "surgery.cli.split",
    "surgery.cli.compare",
    "surgery.cli.doctor",
    "surgery.cli.prepare",
    "surgery.cli.precision",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"surgery: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from surgery import __version__

    parser = _Parser(prog="surgery", description="Verified, pass-by-pass rewriting of ONNX models for NPU compilers.")
    parser.add_argument("--version", action="version", version=f"onnx-surgery {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", default=False,
                        help="print less (the atc command lines are always printed)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    # -v and -q work before or after the subcommand: each subcommand accepts them too, with no
    # default of its own, so a flag given before the subcommand is not reset by the subparser
    for subparser in {id(p): p for p in sub.choices.values()}.values():
        _add_global_flags(subparser)
    return parser


def _add_global_flags(subparser: argparse.ArgumentParser) -> None:
    taken = {s for action in subparser._actions for s in action.option_strings}
    if "-v" not in taken:
        subparser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    if "-q" not in taken:
        subparser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for action in subparser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in {id(p): p for p in action.choices.values()}.values():
                _add_global_flags(nested)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except SurgeryError as exc:
        print(f"surgery: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `surgery ... | head`: the reader left; not an error of ours
        try:
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except KeyboardInterrupt:
        print("surgery: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback only with -vv
        logging.getLogger("surgery").debug("internal error", exc_info=True)
        print(f"surgery: internal error: {type(exc).__name__}: {exc} (run with -vv for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
