"""Check: ``If`` nodes whose condition depends on the *value* of a graph input.

Audio models branch on a sample-rate input (``if sr == 16000``), detectors on a flag: ATC compiles
both branches and keeps host-side control flow, and ``make-static`` cannot fold the condition,
because it comes from data. In a deployment that input is fixed, and pinning it (``pin-inputs``)
makes the condition a constant that ``make-static`` folds, inlining the taken branch. The finding
names the inputs and the constants the condition compares them with: those are the values to pin.
A condition computed only from shapes is not reported (it folds once the shapes are static).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from surgery.doctor.context import Context
from surgery.doctor.finding import Finding, Severity
from surgery.shapes.dims import is_static_shape

NAME = "value-dependent-if"

_COMPARE = frozenset({"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"})
_SHAPE_READERS = frozenset({"Shape", "Size"})
#: Inputs with more elements than this are data, not settings: pinning them makes no deployment.
_MAX_PIN_ELEMENTS = 16


def _sources(ctx: Context, cond: ir.Value) -> tuple[list[ir.Value], list[float | int], bool]:
    """(graph inputs the condition reads the value of, constants compared with, whether it also reads
    values that are no main-graph input, e.g. a Loop body's iteration values)."""
    inputs: list[ir.Value] = []
    compared: list[float | int] = []
    foreign = False
    main_inputs = set(ctx.model.graph.inputs)
    seen: set[ir.Value] = set()
    stack = [cond]
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        if ctx.const(value) is not None:
            continue
        producer = value.producer()
        if producer is None:
            if value in main_inputs:
                inputs.append(value)
            else:
                foreign = True
            continue
        if producer.op_type in _SHAPE_READERS:
            continue  # reads a shape only: folds once shapes are static
        if producer.op_type in _COMPARE:
            for operand in producer.inputs:
                array = ctx.const(operand)
                if array is not None and array.size <= _MAX_PIN_ELEMENTS:
                    compared.extend(np.asarray(array).reshape(-1).tolist())
        stack.extend(v for v in producer.inputs if v is not None)
    return inputs, compared, foreign


def _small(ctx: Context, value: ir.Value) -> bool:
    dims = ctx.shape(value)
    return is_static_shape(dims) and math.prod(dims) <= _MAX_PIN_ELEMENTS


def check_value_dependent_if(ctx: Context) -> list[Finding]:
    """Ifs whose condition comes from an input's value: pin-inputs with the compared values folds them."""
    findings = []
    for entry in ctx.nodes("If"):
        cond = ctx.input(entry.node, 0)
        if cond is None or ctx.is_shape_arithmetic(cond):
            continue
        inputs, compared, foreign = _sources(ctx, cond)
        if not inputs:
            continue
        names = [v.name or "?" for v in inputs]
        pinnable = [v for v in inputs if _small(ctx, v)] if not foreign else []
        values = sorted(set(compared), key=lambda v: (isinstance(v, float), v))
        shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
        compared_text = f" (compared with {shown})" if values else ""
        title = f"If '{entry.label}' branches on the value of input {', '.join(repr(n) for n in names)}{compared_text}"
        if pinnable:
            example = ", ".join(f"{v.name} = {values[0] if values else '...'}" for v in pinnable)
            fix, note = (
                ["pin-inputs"],
                (
                    f"if {', '.join(v.name or '?' for v in pinnable)} is fixed in your deployment, pin it — e.g. "
                    f"pin-inputs with values = {{ {example} }} — and make-static inlines the taken branch"
                ),
            )
        else:
            fix, note = (
                [],
                (
                    "the condition reads a data tensor (or a loop's iteration values): this is data-dependent "
                    "control flow, which no pin can fold"
                ),
            )
        findings.append(
            Finding(
                check=NAME,
                severity=Severity.INFO,
                title=title,
                nodes=[entry.label],
                why="ATC compiles both branches of an If and decides at run time; a condition computed from an "
                "input's value cannot be folded by make-static.",
                fix=fix,
                fix_note=note,
                source="ONNX If semantics; make-static folds only constant conditions",
                details={
                    "inputs": names,
                    "compared_with": values,
                    "pinnable": [v.name for v in pinnable],
                },
            )
        )
    return findings
