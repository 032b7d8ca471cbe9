"""Check: NonMaxSuppression — 3 or 4 inputs crash ATC; ATC's output is padded, not data-sized."""

from __future__ import annotations

import re

import onnx_ir as ir

from surgery.doctor.checks._util import cited, present_inputs, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding, Severity

NAME = "nms"

#: Atlas 200/300/500 (Ascend310) and the training products (Ascend910*) need float16 boxes/scores
#: (canncommercial 900 aolapi atlasoxol_09_0106).
_FP16_SOCS = re.compile(r"^(Ascend310|Ascend910.*)$")


def check_nms(ctx: Context) -> list[Finding]:
    """NMS with fewer than all five inputs; every NMS's padded output (precision risk)."""
    rule = ctx.facts.rule("nms")
    short, all_nms, big, fp32 = [], [], [], []
    for entry in ctx.nodes("NonMaxSuppression"):
        node = entry.node
        all_nms.append(entry.label)
        if any(ctx.dtype(ctx.input(node, i)) == ir.DataType.FLOAT for i in (0, 1)):
            fp32.append(entry.label)
        if present_inputs(node) < rule["min_inputs"] or len(node.inputs) < rule["min_inputs"]:
            short.append(entry.label)
        limit = ctx.const(ctx.input(node, 2))
        if (
            limit is not None
            and limit.size
            and int(limit.reshape(-1)[0]) > rule["max_output_boxes_per_class"]
        ):
            big.append(entry.label)
    findings = []
    reaching = _outputs_after(
        ctx, [e.node for e in ctx.nodes("NonMaxSuppression") if e.graph is ctx.model.graph]
    )
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
        extra = (
            f" {len(big)} of them ask for more than {rule['max_output_boxes_per_class']} boxes per class, "
            "which may exhaust resources."
            if big
            else ""
        )
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
                # graph outputs whose shape depends on NMS's data: no static compiler can hold them, so
                # the emitted pipeline splits NMS and what follows off to a CPU tail
                details={"max_output_boxes_over_limit": big, "data_dependent_outputs": reaching},
            )
        )
    if fp32 and ctx.soc and _FP16_SOCS.match(ctx.soc):
        findings.append(
            Finding(
                check=NAME,
                severity=Severity.PRECISION_RISK,
                title=f"{len(fp32)} NonMaxSuppression(s) with float32 boxes/scores on {ctx.soc}",
                nodes=fp32,
                why=f"On {ctx.soc} NMS takes float16 boxes and scores only: ATC rounds them (coordinates above "
                "2048 lose whole pixels, near-equal scores tie and IoU thresholds shift), and the precision mode "
                "must allow it (must_keep_origin_dtype/origin cannot compile it).",
                fix=["split-postprocess"],
                fix_note="split-postprocess moves NMS to a CPU tail, where it runs in float32 (the default fix); "
                "where NMS must stay on the NPU, check its boxes with 'surgery precision'",
                source="CANN NonMaxSuppression page (canncommercial 900 atlasoxol_09_0106)",
                details={"soc": ctx.soc},
            )
        )
    return findings


def _outputs_after(ctx: Context, nodes: list[ir.Node]) -> list[str]:
    """Names of the main graph's outputs computed downstream of ``nodes``."""
    if not nodes:
        return []
    from surgery.analysis.dataflow import Dataflow

    flow = Dataflow(ctx.model.graph)
    after = flow.descendants(nodes)
    return [v.name or "" for v in ctx.model.graph.outputs if flow.producer(v) in after]
