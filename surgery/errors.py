"""The error hierarchy: every failure the CLI turns into one line and an exit code.

``SurgeryError`` is the root. Its children say who is at fault:

- :class:`InputError` (exit 2): the user gave something unusable: a missing, corrupt or truncated
  model file, missing external data, a wrong tensor name, an output path equal to the input.
- :class:`PipelineError` (exit 2): the pipeline description is wrong: bad TOML, an unknown pass or
  option, a value of the wrong type.
- :class:`PassError` (exit 2): a pass refused the model it was given, with a reason (e.g. an op it
  cannot rewrite). The model is left as it was before the pass. It is also an
  ``onnx_ir.passes.PassError`` (our passes are onnx-ir passes), so code that catches onnx-ir's
  catches ours: one name, one meaning.
- :class:`GateError` (exit 1): a verification gate failed after a pass: the checker rejected the
  model, ONNX Runtime could not load it, or its outputs no longer match the original.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "GateError",
    "InputError",
    "OriginalCrash",
    "PassError",
    "PipelineError",
    "SurgeryError",
    "one_line",
]


def one_line(text: object) -> str:
    """``text`` as one printable line: control characters (a newline in a tensor name, a terminal
    escape) and undecodable bytes shown as escapes. Messages and tables carry names from the model,
    which may come from anywhere; what the tool prints must not be steered by them."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    return "".join(
        c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else repr(c)[1:-1]
        for c in str(text)
    )


class SurgeryError(Exception):
    """Base class of every error onnx-surgery raises on purpose."""

    exit_code: int = 2


class InputError(SurgeryError):
    """A model file, tensor name or path given by the user cannot be used."""

    exit_code = 2


class OriginalCrash(InputError):
    """The ORIGINAL model crashes ONNX Runtime (a signal in the worker): bad input, exit 2.

    Carries the inputs it crashed on, so that the run can write a reproducer folder (the original
    model, those inputs and the pipeline); ``reproducer`` is that folder once written.
    """

    def __init__(self, message: str, *, feeds: Any = None) -> None:
        super().__init__(message)
        self.feeds = dict(feeds or {})
        self.reproducer: str | None = None

    def __str__(self) -> str:
        text = super().__str__()
        if self.reproducer:
            text += f" (reproducer: {self.reproducer})"
        return text


class PipelineError(SurgeryError):
    """A pipeline description (TOML or Python) is invalid."""

    exit_code = 2


class _PassErrorBase(SurgeryError):
    """What :class:`PassError` adds to its two bases (kept apart so the class is built lazily)."""

    exit_code = 2

    def __init__(self, message: str, *, pass_name: str | None = None) -> None:
        if pass_name and not message.startswith(pass_name):
            message = f"{pass_name}: {message}"
        super().__init__(message)
        self.pass_name = pass_name


_PASS_ERROR_DOC = """A pass refused to transform the model, with a reason.

    A subclass of both :class:`SurgeryError` and ``onnx_ir.passes.PassError``: ``except
    onnx_ir.passes.PassError`` (e.g. around onnx-ir's ``PassManager``) catches it too. The class is
    built on first use (``from surgery.errors import PassError``), because importing onnx-ir takes
    a second that ``surgery --help`` and ``surgery passes list`` must not pay.
    """

if TYPE_CHECKING:
    from onnx_ir.passes import PassError as _IrPassError

    class PassError(_PassErrorBase, _IrPassError):
        __doc__ = _PASS_ERROR_DOC

else:

    def __getattr__(name: str) -> Any:
        if name != "PassError":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from onnx_ir.passes import PassError as _IrPassError

        cls = type(
            "PassError",
            (_PassErrorBase, _IrPassError),
            {"__doc__": _PASS_ERROR_DOC, "__module__": __name__},
        )
        return globals().setdefault("PassError", cls)  # one class even if two threads race


class GateError(SurgeryError):
    """A verification gate (checker, ORT load, parity) failed after a pass."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        pass_name: str | None = None,
        gate: str | None = None,
        reproducer: str | None = None,
    ) -> None:
        super().__init__(message)
        self.pass_name = pass_name
        self.gate = gate
        self.reproducer = reproducer
        self.report: Any = None
        """The run's report up to the failure (set by the runner)."""

    def __str__(self) -> str:
        text = super().__str__()
        if self.reproducer:
            text += f" (reproducer: {self.reproducer})"
        return text
