"""Flag groups shared by the subcommands, so one concept has one spelling everywhere.

``--soc`` names the target SoC, ``--report FILE`` writes JSON (``-`` prints it), ``--data NPZ`` gives
parity inputs, ``--inputs``/``--outputs`` name tensors, ``--verify each|end|off`` schedules the gates.
Old spellings stay as hidden aliases that print a one-line deprecation note (Polygraphy's shared
argument groups are the model).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "VERIFY_CHOICES",
    "add_data",
    "add_html",
    "add_pipeline_inputs",
    "add_progress",
    "add_report",
    "add_soc",
    "add_verify",
    "deprecated_alias",
    "progress_printer",
    "tolerance",
]

#: The one vocabulary of ``--verify``: gates after each pass, once at the end, or not at all.
VERIFY_CHOICES: tuple[str, ...] = ("each", "end", "off")


class _Deprecated(argparse.Action):
    """Stores like the new flag, after one line on stderr saying which flag to use."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"surgery: note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def deprecated_alias(
    parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: Any
) -> None:
    """Accept ``old`` as a hidden synonym of ``new`` (same ``dest``), with a deprecation note.

    A switch (``--no-verify``) is ``nargs=0`` with the ``const`` it stands for (``"off"``).
    """
    parser.add_argument(
        old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS, **kwargs
    )


def add_report(
    parser: argparse.ArgumentParser, *, what: str = "the report", old: str | None = None
) -> None:
    """``--report FILE``: JSON (``-`` prints it to stdout, the text then goes to stderr)."""
    parser.add_argument(
        "--report",
        metavar="FILE",
        type=_report_arg,
        help=f"write {what} as JSON ('-' prints it on stdout)",
    )
    if old:
        deprecated_alias(parser, old, "--report", "report", type=_report_arg)


def _report_arg(text: str) -> str:
    """argparse type of ``--report``: '-' or a usable file name (checked as ``-o`` is), kept as text."""
    from surgery.writeplan import output_arg

    return text if text == "-" else str(output_arg(text))


def add_soc(
    parser: argparse.ArgumentParser, *, what: str = "the atc command lines", old: str | None = None
) -> None:
    """``--soc SOC``: the target Ascend SoC."""
    parser.add_argument(
        "--soc", metavar="SOC", help=f"target Ascend SoC (e.g. Ascend310P3) for {what}"
    )
    if old:
        deprecated_alias(parser, old, "--soc", "soc")


def add_verify(
    parser: argparse.ArgumentParser, *, default: str | None = None, old_off: str | None = None
) -> None:
    """``--verify each|end|off``: when the gates run; ``old_off`` is a deprecated switch meaning ``off``."""
    parser.add_argument(
        "--verify",
        choices=VERIFY_CHOICES,
        default=default,
        help="when the gates run: after each pass, once at the end, or not at all"
        + (f" (default {default})" if default else ""),
    )
    if old_off:
        deprecated_alias(parser, old_off, "--verify off", "verify", nargs=0, const="off")


def add_html(parser: argparse.ArgumentParser) -> None:
    """``--html FILE``: a self-contained page of the run (tables, error histograms, graph diff)."""
    from surgery.writeplan import output_arg

    parser.add_argument(
        "--html",
        metavar="FILE",
        type=output_arg,
        help="also write the run as one self-contained HTML page (no network): passes, gate times, "
        "error histograms, dynamic dims, graph diff",
    )


def add_data(parser: argparse.ArgumentParser, *, old: str | None = None) -> None:
    """``--data NPZ``: arrays for the parity / comparison runs."""
    parser.add_argument(
        "--data", type=Path, metavar="NPZ", help="input arrays (.npz) to feed the runs"
    )
    if old:
        deprecated_alias(parser, old, "--data", "data", type=Path)


def add_pipeline_inputs(parser: argparse.ArgumentParser) -> None:
    """``--pipeline PASSES.toml``: plan inputs as ``surgery apply`` would with that pipeline."""
    parser.add_argument(
        "--pipeline",
        type=Path,
        metavar="PASSES.toml",
        help="plan inputs as apply does with this pipeline: its [inputs] and the values its "
        "passes pin (e.g. the OUT.passes.toml that prepare wrote)",
    )


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--progress auto|always|never``: one line per step on stderr (auto: when stderr is a terminal)."""
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="one progress line per step on stderr: auto (when stderr is a terminal), always "
        "(also in CI logs and pipes), never",
    )


def progress_printer(args: argparse.Namespace) -> Any:
    """The progress callback ``--progress`` (and ``-q``) ask for, or None for silence."""
    mode = getattr(args, "progress", "auto")
    if mode == "never" or (
        mode == "auto" and (getattr(args, "quiet", False) or not sys.stderr.isatty())
    ):
        return None

    def say(message: str) -> None:
        print(f"surgery: {message}", file=sys.stderr, flush=True)

    return say


def tolerance(text: str) -> float:
    """argparse type of ``--rtol``/``--atol``: a finite, non-negative number (a NaN tolerance fails every check)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite, non-negative number, got {text!r}")
    return value


def tensor_names(text: str) -> list[str]:
    """argparse type of ``--inputs A,B`` / ``--outputs C,D``: comma-separated tensor names."""
    return [t.strip() for t in text.split(",") if t.strip()]


def add_tolerance(
    parser: argparse.ArgumentParser, *, rtol: float = 0.0, atol: float = 0.0, what: str
) -> None:
    """``--rtol`` / ``--atol`` of ``what`` (finite, non-negative; default 0 is exact)."""
    for flag, default, kind in (("--rtol", rtol, "relative"), ("--atol", atol, "absolute")):
        shown = "0: exact" if default == 0 else f"{default:g}"
        parser.add_argument(
            flag,
            type=tolerance,
            default=default,
            help=f"{kind} tolerance of {what} (default {shown})",
        )


def gate_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[verify]`` table of ``--verify`` and ``--rtol``/``--atol``: every gate on that schedule."""
    return {
        "checker": args.verify,
        "ort": args.verify,
        "parity": args.verify,
        "rtol": args.rtol,
        "atol": args.atol,
    }
