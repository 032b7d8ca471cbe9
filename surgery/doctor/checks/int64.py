"""Check: int64 (and other undocumented dtypes) reaching ops whose CANN pages list narrower types.

What backs it: only the dtype lists in the shipped table's constraints (Gather data fp16/fp32,
GatherElements fp16/fp32/int32, TopK fp16/fp32). The table has no full per-kernel dtype list, so
other int64 compute is reported as information, not as a fault. Tensors that are shape arithmetic
(constants, Shape/Size and what is computed from them) are left out: they fold once shapes are fixed.
"""

from __future__ import annotations

import onnx_ir as ir

from surgery.doctor.checks._util import grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding, Severity

NAME = "int64"


def _dtype_name(dtype: ir.DataType) -> str:
    return {ir.DataType.FLOAT: "float32", ir.DataType.DOUBLE: "float64"}.get(
        dtype, dtype.name.lower()
    )


def check_int64(ctx: Context) -> list[Finding]:
    """Documented dtype limits broken at run time, then int64 compute in general (info)."""
    rule = ctx.facts.rule("dtype_limits")
    findings = []
    covered: set[int] = set()
    pairs = []
    for limit in rule["limits"]:
        for entry in ctx.nodes(limit["op"]):
            node = entry.node
            value = ctx.input(node, limit["input"])
            dtype = ctx.dtype(value)
            if value is None or dtype is None or dtype == ir.DataType.DOUBLE:
                continue  # float64 is the float64 check's
            name = _dtype_name(dtype)
            if name in limit["allowed"] or ctx.folds(node) or ctx.is_shape_arithmetic(value):
                continue
            covered.add(id(node))
            pairs.append(
                ((limit["op"], limit["input"], name, tuple(limit["allowed"])), entry.label)
            )
    for (op, index, name, allowed), labels in grouped(pairs).items():
        fix = ["narrow-int64"] if name == "int64" else []
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=f"{op} input {index} is {name}; the CANN page lists {'/'.join(allowed)}",
                nodes=labels,
                why=(
                    f"The CANN ONNX page for {op} lists {', '.join(allowed)} for input {index}. GE runs an op "
                    f"with another dtype on AICPU where an AICPU kernel takes it ({op} has one), or stops with "
                    "EZ3002 where none does. Not checked on hardware."
                ),
                fix=fix,
                fix_note="narrow-int64 makes it int32 where the values provably fit"
                if fix
                else f"no pass changes {name} data to {'/'.join(allowed)}",
                source=rule["source"],
                details={"op": op, "input": index, "dtype": name, "allowed": list(allowed)},
            )
        )
    runtime = []
    for entry in ctx.entries:
        node = entry.node
        if id(node) in covered or ctx.folds(node):
            continue
        int64_out = any(o is not None and ctx.dtype(o) == ir.DataType.INT64 for o in node.outputs)
        int64_in = any(
            v is not None and ctx.dtype(v) == ir.DataType.INT64 and not ctx.is_shape_arithmetic(v)
            for v in node.inputs
        )
        if int64_out and int64_in:  # int64 in, int64 out: int64 arithmetic on the device
            runtime.append(entry.label)
    if runtime:
        findings.append(
            Finding(
                check=NAME,
                severity=Severity.INFO,
                title=f"{len(runtime)} node(s) compute on int64 at run time",
                nodes=runtime,
                why=(
                    "These nodes take and produce int64 tensors that are not shape arithmetic, so the work reaches "
                    "device kernels. AI Core int64 "
                    "support varies by op and SoC and the shipped data has no per-kernel dtype list; ops without "
                    "an int64 AI Core kernel run on AICPU."
                ),
                fix=["narrow-int64"],
                fix_note="narrow-int64 moves provably small int64 values to int32",
                source="model dtypes (no kernel data)",
            )
        )
    return findings
