"""Check: LayerNormalization on float32 data (ATC's LayerNorm takes float16 only)."""

from __future__ import annotations

import onnx_ir as ir

from surgery.doctor.checks._util import cited
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding, Severity

NAME = "layernorm"


def check_layernorm(ctx: Context) -> list[Finding]:
    """LayerNormalization whose input ``x`` is float32: it will run in float16 whatever the mode says."""
    labels = [
        e.label
        for e in ctx.nodes("LayerNormalization")
        if ctx.dtype(ctx.input(e.node, 0)) in (ir.DataType.FLOAT, ir.DataType.DOUBLE)
    ]
    if not labels:
        return []
    where = f" on {ctx.soc}" if ctx.soc else ""
    return [
        Finding(
            check=NAME,
            severity=Severity.PRECISION_RISK,
            title=f"{len(labels)} LayerNormalization(s) on float32 data{where}: ATC computes them in float16",
            nodes=labels,
            why="The CANN LayerNormalization page (opset 17/18) takes input x in float16 only, so --keep_dtype "
            "cannot hold it in float32. Its variance is a mean of squares: activations above ~256 overflow "
            "float16 (65504) and the output becomes inf/NaN on the device while every float32 gate passes."
            + cited(ctx.facts, "LayerNormalization"),
            fix=[],
            fix_note="run 'surgery precision MODEL' to see whether it overflows on your data; if it does, "
            "convert-opset with target = 16 decomposes it into ReduceMean/Sub/Pow/Sqrt/Div, which --keep_dtype "
            "can keep in float32",
            source="CANN LayerNormalization page (canncommercial 850 atlasoxol_09_0076)",
        )
    ]
