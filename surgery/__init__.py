"""onnx-surgery: verified, pass-by-pass rewriting of ONNX models for static-shape NPU compilers.

The public API::

    import surgery
    model, report = surgery.apply("model.onnx", "passes.toml")
    model, report = surgery.apply(model_proto, [RemoveDropout(), Cleanup()])
"""

from __future__ import annotations

from typing import Any

from surgery.errors import GateError, InputError, PassError, PipelineError, SurgeryError
from surgery.pass_base import FeedHints, Numerics, SurgeryPass, SurgeryResult, Tolerance
from surgery.registry import register

__version__ = "0.1.0"

__all__ = [
    "apply",
    "load",
    "save",
    "register",
    "SurgeryPass",
    "SurgeryResult",
    "Numerics",
    "Tolerance",
    "FeedHints",
    "SurgeryError",
    "InputError",
    "PipelineError",
    "PassError",
    "GateError",
]


def __getattr__(name: str) -> Any:
    # Heavy modules (onnxruntime) are imported on first use, so `surgery passes list` stays fast.
    if name == "apply":
        from surgery.api import apply

        return apply
    if name in ("load", "save"):
        from surgery import model_io

        return getattr(model_io, name)
    raise AttributeError(f"module 'surgery' has no attribute {name!r}")
