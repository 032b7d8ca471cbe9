"""onnx-surgery: verified, pass-by-pass rewriting of ONNX models for static-shape NPU compilers.

The public API::

    import surgery
    model, report = surgery.apply("model.onnx", "passes.toml")
    model, report = surgery.apply(model_proto, [RemoveDropout(), Cleanup()])
    result = surgery.prepare("model.onnx", "out.onnx", input_shapes="x:1,3,224,224")
    part, report = surgery.extract("model.onnx", ["/backbone/Relu_output_0"], ["scores"])
    info = surgery.check("model.onnx")          # checker + ORT load + op census (`surgery check`)
    findings = surgery.diagnose("model.onnx")   # ATC readiness findings (`surgery doctor`)
    layers = surgery.compare(a, b, feeds, tol)  # tensor by tensor (`surgery compare`)
    models, report = surgery.apply_buckets("model.onnx", "passes.toml", {"x": [1, 4]})

Only the error classes are imported eagerly (``PassError`` is built on first use: it subclasses
onnx-ir's ``PassError``): ``surgery --help`` and ``surgery passes list`` must
not pay for onnx, onnx-ir and onnxruntime. Everything else is imported on first use; type checkers
and IDEs see the real objects through the ``TYPE_CHECKING`` imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from surgery.errors import GateError, InputError, PipelineError, SurgeryError

if TYPE_CHECKING:
    from surgery.api import apply, extract
    from surgery.buckets import apply_buckets
    from surgery.doctor.diagnose import diagnose as diagnose
    from surgery.errors import PassError
    from surgery.model_info import inspect_model as check
    from surgery.model_io import load, save
    from surgery.pass_base import FeedHints, Numerics, SurgeryPass, SurgeryResult, Tolerance
    from surgery.preparation import prepare
    from surgery.registry import register
    from surgery.verify.layerwise import compare_layerwise as compare

__version__ = "0.1.0"

__all__ = [
    "FeedHints",
    "GateError",
    "InputError",
    "Numerics",
    "PassError",
    "PipelineError",
    "SurgeryError",
    "SurgeryPass",
    "SurgeryResult",
    "Tolerance",
    "apply",
    "apply_buckets",
    "check",
    "compare",
    "diagnose",
    "extract",
    "load",
    "prepare",
    "register",
    "save",
]

#: attribute → the module that defines it (imported on first use)
_LAZY = {
    "PassError": "surgery.errors",
    "apply": "surgery.api",
    "extract": "surgery.api",
    "apply_buckets": "surgery.buckets",
    "check": "surgery.model_info:inspect_model",
    "diagnose": "surgery.doctor.diagnose",
    "compare": "surgery.verify.layerwise:compare_layerwise",
    "prepare": "surgery.preparation",
    "load": "surgery.model_io",
    "save": "surgery.model_io",
    "register": "surgery.registry",
    "SurgeryPass": "surgery.pass_base",
    "SurgeryResult": "surgery.pass_base",
    "Numerics": "surgery.pass_base",
    "Tolerance": "surgery.pass_base",
    "FeedHints": "surgery.pass_base",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'surgery' has no attribute {name!r}")
    module, _, attr = module.partition(":")  # "module:function" where the public name differs
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
