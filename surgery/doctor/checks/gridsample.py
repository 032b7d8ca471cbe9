"""Check: GridSample modes and ranks ATC's GridSampler2D cannot take."""

from __future__ import annotations

from surgery.doctor.checks._util import attr, cited, grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "gridsample"


def check_gridsample(ctx: Context) -> list[Finding]:
    """GridSample that is not 4-D, or uses bicubic/cubic interpolation."""
    rule = ctx.facts.rule("gridsample")
    opset = ctx.opset("") or 0
    pairs = []
    for entry in ctx.nodes("GridSample"):
        node = entry.node
        mode = attr(node, "mode", "linear" if opset >= 20 else "bilinear")
        rank = ctx.rank(ctx.input(node, 0))
        if mode not in rule["modes"]:
            pairs.append((("mode", mode), entry.label))
        if rank is not None and rank != rule["rank"]:
            pairs.append((("rank", str(rank)), entry.label))
    findings = []
    for (kind, value), labels in grouped(pairs).items():
        if kind == "mode":
            title = f"GridSample mode '{value}' is not supported"
            why = "ATC's GridSample supports bilinear and nearest only (no bicubic)."
            fix: list[str] = []
            note = "decompose-gridsample handles bilinear and nearest only"
        else:
            title = f"{value}-D GridSample is not supported"
            why = "ATC's GridSample is 4-D only."
            fix, note = [], "decompose-gridsample handles 4-D GridSample only"
        findings.append(
            Finding(check=NAME, severity=severity(rule), title=title, nodes=labels,
                    why=why + cited(ctx.facts, "GridSample"), fix=fix, fix_note=note,
                    source="atc_onnx_ops.csv constraints (CANN GridSample page, ops-cv README)",
                    details={"kind": kind, "value": value})
        )
    return findings
