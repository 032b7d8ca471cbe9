"""Library warnings (onnx-ir, onnx, onnxruntime, numpy) go to the log and the report, never to stderr.

The Python API (:func:`surgery.apply`, :func:`surgery.doctor.diagnose`) runs inside
:func:`capture`: a Python warning (numpy's ``RuntimeWarning: overflow encountered``, a
``DeprecationWarning``) and a log record of a library logger (onnx-ir's "Initializer tensor must
have a name… Skipping") become one line each in a list the caller puts in its report, and an
INFO record of the ``surgery.libwarnings`` logger. Without this, Python's last-resort handler
prints library log warnings to stderr when the caller configured no logging, and ``warnings``
prints its own lines: extra stderr lines a user did not ask for.

While captured, the library loggers do not propagate (the caller's handlers see the INFO record
instead); their configuration is restored on exit. Captures nest: the inner one collects.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["LIBRARY_LOGGERS", "capture"]

logger = logging.getLogger(__name__)

#: Loggers of the libraries onnx-surgery drives (their children included).
LIBRARY_LOGGERS = (
    "onnx_ir",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "onnxslim",
    "onnxsim",
    "polygraphy",
)


def _first_line(text: object) -> str:
    lines = str(text).splitlines()
    return lines[0] if lines else ""


#: Active captures, innermost last: only the innermost collects a record.
_ACTIVE: list[logging.Handler] = []


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(level=logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        if not _ACTIVE or _ACTIVE[-1] is not self:
            return
        try:
            text = f"{record.name}: {_first_line(record.getMessage())}"
        except Exception:  # a library's malformed log call must not break the run
            text = f"{record.name}: {_first_line(record.msg)}"
        self.into.append(text)
        logger.info("library warning: %s", text)


@contextlib.contextmanager
def capture(into: list[str] | None = None) -> Iterator[list[str]]:
    """Collect library warnings into ``into`` (a new list when None) while the block runs."""
    caught: list[str] = [] if into is None else into

    def show(message, category, filename, lineno, file=None, line=None):
        text = f"{category.__name__}: {_first_line(message)} ({filename}:{lineno})"
        caught.append(text)
        logger.info("library warning: %s", text)

    handler = _Collect(caught)
    saved: list[tuple[logging.Logger, bool]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        _ACTIVE.append(handler)
        try:
            for name in LIBRARY_LOGGERS:
                library = logging.getLogger(name)
                saved.append((library, library.propagate))
                library.addHandler(handler)
                library.propagate = False
            yield caught
        finally:
            _ACTIVE.remove(handler)
            for library, propagate in saved:
                library.removeHandler(handler)
                library.propagate = propagate
