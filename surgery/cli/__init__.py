"""The ``surgery`` command line: one module a subcommand, each calling the Python API.

Exit codes: 0 success, 1 a verification gate failed, 2 bad input or usage, 3 internal error,
130 / 143 interrupted by SIGINT / SIGTERM (the one line says whether the output was written).

Every command that writes files records them in a :class:`surgery.writeplan.WritePlan` kept on
``args.write_plan``; an interrupted run reports from it whether its files were committed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from surgery.errors import SurgeryError, one_line

__all__ = ["COMMANDS", "captured_warnings", "main"]

logger = logging.getLogger("surgery.cli")

#: Library warnings (onnx-ir, onnxruntime, numpy) caught during this command, for the report.
_CAPTURED: list[str] = []

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
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"surgery: error: {message} (see '{self.prog} --help')\n")


def captured_warnings() -> list[str]:
    """The library warnings caught so far in this command (one line each), for the JSON report."""
    return list(_CAPTURED)


@contextlib.contextmanager
def _capture_warnings() -> Iterator[None]:
    """Send Python warnings to the log (shown with -v) and the report, never to stderr as extra lines."""

    def show(message, category, filename, lineno, file=None, line=None):
        text = f"{category.__name__}: {str(message).splitlines()[0] if str(message) else ''} ({filename}:{lineno})"
        _CAPTURED.append(text)
        logger.info("library warning: %s", text)

    _CAPTURED.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _library_records(record: logging.LogRecord) -> bool:
    """Keep other libraries' log warnings off stderr (unless -v): into the report's warnings instead."""
    if record.name == "surgery" or record.name.startswith("surgery."):
        return True
    _CAPTURED.append(
        f"{record.name}: {record.getMessage().splitlines()[0] if record.getMessage() else ''}"
    )
    return False


def build_parser() -> argparse.ArgumentParser:
    from surgery import __version__

    parser = _Parser(
        prog="surgery",
        description="Verified, pass-by-pass rewriting of ONNX models for NPU compilers.",
    )
    parser.add_argument("--version", action="version", version=f"onnx-surgery {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-vv for debug)"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False,
        help="print less (the atc command lines are always printed)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    # -v and -q work before or after the subcommand: each subcommand accepts them too, with no
    # default of its own, so a flag given before the subcommand is not reset by the subparser
    for subparser in {id(p): p for p in sub.choices.values()}.values():
        _add_global_flags(subparser)
    return parser


class Interrupted(KeyboardInterrupt):
    """Raised by the SIGINT/SIGTERM handler so that staged files are cleaned up on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _signal_handlers() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` while a command runs (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _interrupted_line(exc: KeyboardInterrupt, args: argparse.Namespace) -> tuple[str, int]:
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    plan = getattr(args, "write_plan", None)
    if plan is not None and plan.committed:
        written = ", ".join(str(p) for p in plan.transaction.written)
        status = f"the output was written ({written})"
    else:
        status = "no output was written" + (" (inputs untouched)" if plan is not None else "")
    return f"surgery: interrupted by {signal.Signals(signum).name}: {status}", 128 + int(signum)


def _add_global_flags(subparser: argparse.ArgumentParser) -> None:
    taken = {s for action in subparser._actions for s in action.option_strings}
    if "-v" not in taken:
        subparser.add_argument(
            "-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    if "-q" not in taken:
        subparser.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    for action in subparser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in {id(p): p for p in action.choices.values()}.values():
                _add_global_flags(nested)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.write_plan = None
    level = (
        logging.WARNING
        if args.verbose == 0
        else logging.INFO
        if args.verbose == 1
        else logging.DEBUG
    )
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.verbose == 0:
        for handler in logging.getLogger().handlers:
            if _library_records not in handler.filters:
                handler.addFilter(_library_records)
    try:
        with _signal_handlers(), _capture_warnings():
            return int(args.func(args) or 0)
    except SurgeryError as exc:
        print(f"surgery: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except (
        SystemExit
    ) as exc:  # only user code (a plug-in or rule module) exits from inside a command
        print(
            f"surgery: error: code run by the pipeline called sys.exit({exc.code!r}), which is an error",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:  # `surgery ... | head`: the reader left; not an error of ours
        try:
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except KeyboardInterrupt as exc:
        line, code = _interrupted_line(exc, args)
        print(line, file=sys.stderr)
        return code
    except Exception as exc:  # a bug: one line, the traceback only with -vv
        logging.getLogger("surgery").debug("internal error", exc_info=True)
        print(
            f"surgery: internal error: {type(exc).__name__}: {one_line(str(exc))} (run with -vv for the traceback)",
            file=sys.stderr,
        )
        return 3
    finally:
        if args.write_plan is not None and not args.write_plan.committed:
            args.write_plan.abort()  # the staged files of a run that did not finish


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
