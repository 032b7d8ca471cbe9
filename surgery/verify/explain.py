"""Why the ORIGINAL model does not run, in one line, with advice that matches the cause.

A failing original used to be reported as "does not run on generated inputs… declare its inputs"
whatever ONNX Runtime said: an unsupported opset, a custom op, a missing external-data file or a
float8 input all sent the user to ``[inputs]``. Here ORT's message is classified: the line names
what ORT said (opset, op, domain, dtype, file, signal) and suggests ``[inputs]`` only when the
failure is about input values or shapes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import numpy as np

__all__ = [
    "OrtFailure",
    "classify_ort_failure",
    "clean_ort_message",
    "explain_ort_failure",
    "is_input_failure",
]

_INPUTS_ADVICE = (
    'declare its inputs in [inputs] (shape, range or value) or give data = "inputs.npz"'
)
_ORT_PREFIX = re.compile(
    r"^\s*(?:running failed:\s*)?(?:\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*)?"
)
_SOURCE = re.compile(r"/onnxruntime_src/\S+:\d+\s+")


def clean_ort_message(text: str) -> str:
    """ORT's message without its error-code prefix, source path and C++ signature."""
    text = " ".join(text.split())
    text = _ORT_PREFIX.sub("", text, count=1)
    while True:
        match = _SOURCE.search(text)
        if match is None:
            break
        text = text[: match.start()] + _strip_signature(text[match.end() :])
    return text.strip()


def _strip_signature(text: str) -> str:
    """Drop a leading C++ function signature (``void ns::f(args) const [with T = float]``)."""
    head = text.split("(", 1)[0]
    if "::" not in head and not head.strip().endswith("operator"):
        return text
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                rest = text[i + 1 :].lstrip()
                rest = re.sub(r"^(?:const\s*)?(?:\[with [^\]]*\]\s*)?", "", rest)
                return rest
    return text


@dataclasses.dataclass(frozen=True)
class OrtFailure:
    """A failing original, classified."""

    cause: str
    """One of: crash, opset, ir-version, custom-op, unknown-op, domain, no-kernel, file,
    input-dtype, input-shape, input-values, load, run, size."""
    detail: str
    """What ORT said, cleaned (one line)."""
    about_inputs: bool


def _domain_detail(found: re.Match[str]) -> str:
    op = re.search(r'\("[^"]*", (\w+), "', found.string)
    name = f"op '{op.group(1)}' of " if op else ""
    return f"{name}domain '{found.group(1)}' has no opset import in the model"


_Pattern = tuple[re.Pattern[str], str, bool, Callable[[re.Match[str]], str]]
"""A message ORT's cleaned text is searched for: (pattern, cause, about_inputs, the detail line
from the match; ``match.string`` is the whole cleaned text)."""

#: Tried in order (the first match wins), before the reference evaluator's own messages.
_BY_PATTERN: tuple[_Pattern, ...] = (
    (
        re.compile(r"onnxruntime crashed \((SIG\w+|signal \d+|exit status -?\d+)\)"),
        "crash",
        True,
        lambda m: m.string,
    ),
    (
        re.compile(r"Opset (\d+) is under development.*?domain (\S+?) is till opset (\d+)"),
        "opset",
        False,
        lambda m: (
            f"opset {m[1]} of domain '{m[2]}' is newer than onnxruntime supports (up to {m[3]})"
        ),
    ),
    (
        re.compile(r"(?:Opset|opset) (\d+) (?:for|of) domain '?([\w.]*)'? is not supported"),
        "opset",
        False,
        lambda m: f"opset {m[1]} of domain '{m[2]}' is not supported by onnxruntime",
    ),
    (
        re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)"),
        "ir-version",
        False,
        lambda m: f"IR version {m[1]} is newer than onnxruntime supports (up to {m[2]})",
    ),
    (
        re.compile(r"([\w.]+):(\w+)\((-?\d+)\) is not a registered function/op"),
        "custom-op",
        False,
        lambda m: (
            f"op '{m[2]}' of domain '{m[1]}' is not an operator onnxruntime knows "
            "(a custom op: register its library or replace it)"
        ),
    ),
    (re.compile(r"No opset import for domain '([^']*)'"), "domain", False, _domain_detail),
    (
        re.compile(r"No Op registered for (\w+) with domain_version of (\d+)"),
        "unknown-op",
        False,
        lambda m: f"no operator '{m[1]}' exists at opset {m[2]}",
    ),
    (
        re.compile(r"Could not find an implementation for (\w+)\((\d+)\)"),
        "no-kernel",
        False,
        lambda m: (
            f"onnxruntime has no CPU kernel for {m[1]}-{m[2]} with these "
            "element types, and the reference evaluator could not run it either"
        ),
    ),
)
_BY_PATTERN_AFTER_EVALUATOR: tuple[_Pattern, ...] = (
    (
        re.compile(
            r"Unexpected input data type\. Actual: \((tensor\(\w+\))\) , expected: \((tensor\(\w+\))\)"
        ),
        "input-dtype",
        True,
        lambda m: f"an input is fed as {m[1]} where the model declares {m[2]}",
    ),
)


def _first_match(patterns: tuple[_Pattern, ...], text: str) -> OrtFailure | None:
    for pattern, cause, about_inputs, detail in patterns:
        found = pattern.search(text)
        if found:
            return OrtFailure(cause, detail(found), about_inputs)
    return None


def classify_ort_failure(exc: BaseException | str) -> OrtFailure:
    """Sort ORT's (or the reference evaluator's) message into a cause."""
    raw = getattr(exc, "detail", None) or str(
        exc
    )  # a one-line wrapper keeps ORT's full text in .detail
    text = clean_ort_message(raw)
    running = (
        raw.lstrip().startswith("running failed")
        or "Non-zero status code returned while running" in raw
    )
    low = text.lower()

    def of(cause: str, about_inputs: bool, detail: str = text) -> OrtFailure:
        return OrtFailure(cause, detail, about_inputs)

    matched = _first_match(_BY_PATTERN, text)
    if matched is not None:
        return matched
    if "reference evaluator" in low and ("cannot run" in low or "gib of weights" in low):
        return of("reference", False)
    matched = _first_match(_BY_PATTERN_AFTER_EVALUATOR, text)
    if matched is not None:
        return matched
    if any(
        k in low
        for k in (
            "external data",
            "external_data",
            "no such file",
            "failed to open",
            "hard link",
            "data file",
        )
    ) or (type(exc).__name__ == "NoSuchFile"):
        file = re.search(r"""['"]?([\w./\\-]+\.(?:data|bin|onnx|pb|weight|weights))['"]?""", text)
        where = f" (file {file.group(1)})" if file else ""
        return of("file", False, f"onnxruntime cannot read the model's data{where}: {text}")
    if "got invalid dimensions for input" in low or "invalid rank for input" in low:
        return of("input-shape", True)
    if running:
        values = any(
            k in low
            for k in (
                "out of data bounds",
                "out of bounds",
                "must be within",
                "division by zero",
                "modulo by zero",
                "nan",
                "indices",
            )
        )
        return of("input-values" if values else "input-shape", True)
    if isinstance(exc, MemoryError) or ("bytes" in low and "input" in low and "too large" in low):
        return of("size", True)
    return of("load", False)


def is_input_failure(exc: BaseException | str) -> bool:
    """Whether other input shapes or values could make the original run (worth a retry or ``[inputs]``)."""
    return classify_ort_failure(exc).about_inputs


def _shapes(feeds: Mapping[str, np.ndarray] | None) -> str:
    if not feeds:
        return ""
    return ", ".join(
        f"{k}{list(np.shape(v))} {getattr(v, 'dtype', '')}".rstrip() for k, v in feeds.items()
    )


def explain_ort_failure(
    exc: BaseException | str,
    feeds: Mapping[str, np.ndarray] | None = None,
    provenance: Mapping[str, str] | None = None,
) -> str:
    """The one-line message for an original model that does not run.

    ``feeds``/``provenance`` (the parity plan) say which inputs were tried and whether they were
    generated; the ``[inputs]`` advice is given only when the failure is about them.
    """
    failure = classify_ort_failure(exc)
    generated = any(str(how).startswith("generated") for how in (provenance or {}).values())
    tried = _shapes(feeds)
    inputs_text = (
        f" on {'generated ' if generated else 'the parity '}inputs {tried}" if tried else ""
    )
    if failure.cause == "crash":  # the worker's message already names the inputs
        message = f"the original model crashes onnxruntime{'' if ' on inputs ' in failure.detail else inputs_text}: {failure.detail}"
    elif failure.about_inputs:
        message = f"the original model does not run{inputs_text}: {failure.detail}"
    else:
        message = f"the original model does not run in onnxruntime: {failure.detail}"
    if failure.about_inputs:
        message += (
            f"; {_INPUTS_ADVICE}" if generated else "; check the inputs given in [inputs] or data"
        )
    elif failure.cause in ("opset", "ir-version"):
        message += "; onnxruntime must run the original to verify passes: use a newer onnxruntime, or run with --verify off"
    elif failure.cause in ("custom-op", "domain", "unknown-op"):
        message += "; onnxruntime must run the original to verify passes (run with --verify off to skip the gates)"
    return message[:800]
