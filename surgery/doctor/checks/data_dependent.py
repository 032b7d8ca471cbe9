"""Check: ops with data-dependent output shapes (forbidden with ATC's gear options)."""

from __future__ import annotations

from surgery.doctor.checks._util import cited, grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding
from surgery.doctor.fixes import FIX_BY_OP

NAME = "data-dependent"


def check_data_dependent(ctx: Context) -> list[Finding]:
    """NonZero, Unique (the ops the shipped table marks data-dependent)."""
    rule = ctx.facts.rule("data_dependent")
    pairs = [(e.node.op_type, e.label) for e in ctx.nodes(*rule["ops"])]
    return [
        Finding(
            check=NAME,
            severity=severity(rule),
            title=f"{op}: output shape depends on the data",
            nodes=labels,
            why=f"ATC accepts {op} in a single static-shape model, but not together with --dynamic_batch_size, "
            "--dynamic_image_size or --dynamic_dims." + cited(ctx.facts, op),
            fix=list(FIX_BY_OP.get(op, ())),
            fix_note="split-postprocess moves it to a CPU tail model when gears are needed (a deployment decision)",
            source="atc_onnx_ops.csv constraints",
        )
        for op, labels in grouped(pairs).items()
    ]
