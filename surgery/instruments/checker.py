"""The checker gate: ``onnx.checker`` full check on a proto without the large weights."""

from __future__ import annotations

from collections.abc import Collection

import onnx

from surgery.model_io import LightProto
from surgery.shapes.observed import only_tolerated_errors

__all__ = ["CheckOutcome", "check"]


class CheckOutcome:
    def __init__(self, ok: bool, message: str = "") -> None:
        self.ok = ok
        self.message = message

    def __bool__(self) -> bool:
        return self.ok


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    # onnx prefixes messages with a C++ source location; keep what follows it.
    if "] " in line and line.startswith("["):
        line = line.split("] ", 1)[1]
    return line[:400]


def check(light: LightProto, *, full: bool = True, tolerate: Collection[str] = ()) -> CheckOutcome:
    """Run the checker (with strict shape inference when ``full``) on ``light``.

    Large weights become typed graph inputs, so the check never builds a proto over 2 GB.
    ``tolerate`` names nodes whose shape inference execution proved wrong
    (:func:`surgery.shapes.observed.tolerated_nodes`): inference errors at those nodes only are
    accepted (the rest of the model passed strict inference), anything else still fails.
    """
    try:
        onnx.checker.check_model(light.for_checker(), full_check=full)
    except onnx.shape_inference.InferenceError as exc:
        if full and only_tolerated_errors(str(exc), tolerate):
            return check(light, full=False)
        return CheckOutcome(False, _first_line(exc))
    except onnx.checker.ValidationError as exc:
        return CheckOutcome(False, _first_line(exc))
    except Exception as exc:  # onnx raises plain RuntimeError/ValueError for some malformed models
        return CheckOutcome(False, f"{type(exc).__name__}: {_first_line(exc)}")
    return CheckOutcome(True)
