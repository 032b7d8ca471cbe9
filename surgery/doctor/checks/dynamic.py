"""Check: dynamic dims. ATC compiles one static shape per model (or fixed gears)."""

from __future__ import annotations

from surgery.doctor.checks._util import severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding, Severity
from surgery.shapes.dims import is_static_shape, shape_text

NAME = "dynamic-dims"

# ONNX ops whose output shape depends on input values (ONNX semantics, not an ATC fact).
_DATA_DEPENDENT = frozenset(
    {"NonZero", "NonMaxSuppression", "Unique", "Compress", "Loop", "Scan", "TopK"}
)


def _fmt(dims: tuple[int | str | None, ...] | None) -> str:
    if dims is None:
        return "unknown rank"
    return shape_text(dims)


def check_dynamic_dims(ctx: Context) -> list[Finding]:
    """Graph inputs with symbolic or unknown dims; symbolic dims left inside an otherwise static model."""
    rule = ctx.facts.rule("dynamic")
    graph = ctx.model.graph
    dynamic_inputs = {}
    for value in graph.inputs:
        if value.const_value is not None:
            continue
        dims = ctx.shape(value)
        if not is_static_shape(dims):
            dynamic_inputs[value.name] = dims
    findings = []
    if dynamic_inputs:
        names = sorted(
            {str(d) for dims in dynamic_inputs.values() if dims for d in dims if isinstance(d, str)}
        )
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
                details={
                    "inputs": {k: _fmt(v) for k, v in dynamic_inputs.items()},
                    "dim_names": names,
                },
            )
        )
        return findings
    # Inputs are static: symbolic dims still written inside the model are stale annotations, unless
    # they lie downstream of an op whose output shape depends on the data (those stay dynamic).
    tainted: set[int] = set()
    stale = []
    for entry in ctx.entries:
        if entry.in_function:
            continue
        node = entry.node
        data_dependent = node.op_type in _DATA_DEPENDENT and not (
            node.op_type == "TopK" and ctx.is_shape_arithmetic(ctx.input(node, 1))
        )
        if data_dependent or any(v is not None and id(v) in tainted for v in node.inputs):
            tainted.update(id(o) for o in node.outputs)
            continue
        stale += [
            o.name or "?"
            for o in node.outputs
            if o.shape is not None and not is_static_shape(o.shape)
        ]
    stale += [
        v.name or "?"
        for v in graph.outputs
        if id(v) not in tainted and v.shape is not None and not is_static_shape(v.shape)
    ]
    if stale:
        stale = list(dict.fromkeys(stale))
        findings.append(
            Finding(
                check=NAME,
                severity=Severity.INFO,
                title=f"{len(stale)} tensor(s) keep symbolic dims although every input is static",
                nodes=stale,
                why=(
                    "The inputs are static and these tensors do not follow a data-dependent op (NonZero, NMS, "
                    "Unique, TopK with a data k …), so their symbolic dims are stale annotations. ATC re-infers "
                    "shapes, but stale annotations mislead other tools."
                ),
                fix=["make-static"],
                fix_note="make-static re-infers every tensor and rewrites value_info",
                source="model annotations",
            )
        )
    return findings
