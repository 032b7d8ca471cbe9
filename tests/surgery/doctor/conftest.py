"""Helpers for the doctor tests: run one check on a small model and pick findings."""

from __future__ import annotations

from collections.abc import Callable

import onnx
import onnx_ir as ir
import pytest

from surgery.doctor.context import Context
from surgery.doctor.facts import load_facts
from surgery.doctor.finding import Finding


def _run(
    check: Callable[[Context], list[Finding]],
    model: onnx.ModelProto | ir.Model,
    soc: str | None = None,
) -> list[Finding]:
    ir_model = model if isinstance(model, ir.Model) else ir.from_proto(model)
    return check(Context(ir_model, load_facts(), soc))


@pytest.fixture
def run_check():
    """``run_check(check_fn, model, soc=None)`` → the findings of that one check."""
    return _run
