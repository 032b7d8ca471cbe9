"""Check: dynamic dims. ATC compiles one static shape per model (or fixed gears)."""

from __future__ import annotations

from surgery.doctor.checks._util import severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding, Severity

NAME = "dynamic-dims"


def _fmt(dims: tuple[int | str | None, ...] | None) -> str:
    if dims is None:
        return "unknown rank"
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def check_dynamic_dims(ctx: Context) -> list[Finding]:
    """Graph inputs with symbolic or unknown dims; symbolic dims left inside an otherwise static model."""
    rule = ctx.facts.rule("dynamic")
    graph = ctx.model.graph
    dynamic_inputs = {}
    for value in graph.inputs:
        if value.const_value is not None:
            continue
        dims = ctx.shape(value)
        if dims is None or not all(isinstance(d, int) for d in dims):
            dynamic_inputs[value.name] = dims
    findings = []
    if dynamic_inputs:
        names = sorted({str(d) for dims in dynamic_inputs.values() if dims for d in dims if isinstance(d, str)})
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=f"{len(dynamic_inputs)} input(s) with dynamic dims",
                nodes=[f"{name} {_fmt(dims)}" for name, dims in dynamic_inputs.items()],
                why=(
                    "ATC needs every input dim fixed (or given by --input_shape / gear options); a dynamic "
                    f"input stops it with {rule['error']}. Shape arithmetic on dynamic dims also runs on the "
                    "device until it is folded."
                ),
                fix=["fix-shapes", "make-static", "assert-static"],
                fix_note="fix-shapes sets the input shapes (a decision: batch defaults to 1), make-static folds "
                "the shape arithmetic and re-infers every tensor, assert-static checks nothing dynamic is left",
                source="ATC error reference",
                details={"inputs": {k: _fmt(v) for k, v in dynamic_inputs.items()}, "dim_names": names},
            )
        )
        return findings
    # Inputs are static: symbolic dims still written inside the model are stale annotations or
    # data-dependent shapes.
    stale = []
    for value in list(graph.outputs) + [o for e in ctx.entries if not e.in_function for o in e.node.outputs]:
        if value is None or value.shape is None:
            continue
        if not all(isinstance(d, int) for d in value.shape):
            stale.append(value.name or "?")
    if stale:
        stale = list(dict.fromkeys(stale))
        findings.append(
            Finding(
                check=NAME,
                severity=Severity.INFO,
                title=f"{len(stale)} tensor(s) keep symbolic dims although every input is static",
                nodes=stale,
                why=(
                    "The inputs are static, so these dims are stale annotations or come from data-dependent "
                    "ops. ATC re-infers shapes, but stale annotations mislead other tools."
                ),
                fix=["make-static"],
                fix_note="make-static re-infers every tensor and rewrites value_info",
                source="model annotations",
            )
        )
    return findings
