"""Check: NonMaxSuppression — 3 or 4 inputs crash ATC; ATC's output is padded, not data-sized."""

from __future__ import annotations

from surgery.doctor.checks._util import cited, present_inputs, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "nms"


def check_nms(ctx: Context) -> list[Finding]:
    """NMS with fewer than all five inputs; every NMS's padded output (precision risk)."""
    rule = ctx.facts.rule("nms")
    short, all_nms, big = [], [], []
    for entry in ctx.nodes("NonMaxSuppression"):
        node = entry.node
        all_nms.append(entry.label)
        if present_inputs(node) < rule["min_inputs"] or len(node.inputs) < rule["min_inputs"]:
            short.append(entry.label)
        limit = ctx.const(ctx.input(node, 2))
        if limit is not None and limit.size and int(limit.reshape(-1)[0]) > rule["max_output_boxes_per_class"]:
            big.append(entry.label)
    findings = []
    if short:
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=f"{len(short)} NonMaxSuppression(s) with fewer than {rule['min_inputs']} inputs",
                nodes=short,
                why="NonMaxSuppression with 3 or 4 inputs crashes ATC 9.0.1 (a segfault, no error message); "
                "it must be given all five." + cited(ctx.facts, "NonMaxSuppression"),
                fix=["complete-nms-inputs"],
                fix_note="complete-nms-inputs adds the missing inputs with values that keep ONNX semantics",
                source="atc_onnx_ops.csv constraints (field report, ATC 9.0.1)",
            )
        )
    if all_nms:
        extra = (f" {len(big)} of them ask for more than {rule['max_output_boxes_per_class']} boxes per class, "
                 "which may exhaust resources." if big else "")
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule, "padded_output_severity"),
                title=f"{len(all_nms)} NonMaxSuppression(s): ATC's output is fixed-size and padded with -1",
                nodes=all_nms,
                why="ATC maps NMS to NonMaxSuppressionV6, whose output is [max_out*batch*classes, 3] padded with "
                "-1 (8.0.RC docs), while ONNX returns only the selected boxes. Post-processing that gathers with "
                "these rows reads index -1." + extra,
                fix=["split-postprocess"],
                fix_note="split-postprocess moves NMS and what follows to a CPU tail model (a deployment decision)",
                source="atc_onnx_ops.csv constraints (CANN NMS page)",
                details={"max_output_boxes_over_limit": big},
            )
        )
    return findings
