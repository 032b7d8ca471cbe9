"""Check: GridSample modes and ranks ATC's GridSampler2D cannot take."""

from __future__ import annotations

import re

from surgery.doctor.checks._util import attr, cited, grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding, Severity

NAME = "gridsample"

#: The ops-cv GridSample kernel lists no support on Atlas inference (310P) or Atlas 200I/500 A2 (310B).
_NO_KERNEL_SOCS = re.compile(r"^Ascend310(P|B)\d*$")
#: The CANN GridSample page lists opset 16 only.
_DOCUMENTED_OPSET = 16


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
        if opset != _DOCUMENTED_OPSET:
            pairs.append((("opset", str(opset)), entry.label))
        if ctx.soc and _NO_KERNEL_SOCS.match(ctx.soc):
            pairs.append((("soc", ctx.soc), entry.label))
    findings = []
    for (kind, value), labels in grouped(pairs).items():
        fix: list[str]
        sev = severity(rule)
        if kind == "opset":
            fact = ctx.facts.lookup("ai.onnx", "GridSample")
            if fact is not None and fact.registered_at(int(value)):
                sev = Severity.PRECISION_RISK  # registered in current CANN, only not on the op page
            title = f"GridSample at opset {value}"
            why = (
                f"CANN's GridSample page lists opset {_DOCUMENTED_OPSET} only (bilinear and nearest); at another "
                "opset ATC's lookup may find no parser, or a different registration."
            )
            fix, note = (
                ["decompose-gridsample"],
                "decompose-gridsample rewrites it into ops every opset has",
            )
        elif kind == "soc":
            title = f"GridSample on {value}"
            why = (
                f"The CANN ops-cv GridSample kernel lists no support on {value} (Atlas inference 310P and "
                "Atlas 200I/500 A2 310B): there is nothing to run it on the AI Core."
            )
            fix, note = (
                ["decompose-gridsample"],
                "decompose-gridsample rewrites it into Gather/arithmetic ATC has",
            )
        elif kind == "mode":
            title = f"GridSample mode '{value}' is not supported"
            why = "ATC's GridSample supports bilinear and nearest only (no bicubic)."
            fix = []
            note = "decompose-gridsample handles bilinear and nearest only"
        else:
            title = f"{value}-D GridSample is not supported"
            why = "ATC's GridSample is 4-D only."
            fix, note = [], "decompose-gridsample handles 4-D GridSample only"
        findings.append(
            Finding(
                check=NAME,
                severity=sev,
                title=title,
                nodes=labels,
                why=why + cited(ctx.facts, "GridSample"),
                fix=fix,
                fix_note=note,
                source="atc_onnx_ops.csv constraints (CANN GridSample page, ops-cv README)",
                details={"kind": kind, "value": value},
            )
        )
    return findings
