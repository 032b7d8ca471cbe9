"""Check: Dropout. GE removes it (input → output) and never produces the mask."""

from __future__ import annotations

from surgery.doctor.checks._util import cited, is_used, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "dropout"


def check_dropout(ctx: Context) -> list[Finding]:
    """Dropout nodes; a used mask output fails, the rest are removed by GE (info)."""
    rule = ctx.facts.rule("dropout")
    mask_used, plain, training = [], [], []
    for entry in ctx.nodes("Dropout"):
        node = entry.node
        if len(node.outputs) > 1 and is_used(node.outputs[1]):
            mask_used.append(entry.label)
        else:
            plain.append(entry.label)
        mode = ctx.const(ctx.input(node, 2))
        if mode is not None and bool(mode.reshape(-1)[0]):
            training.append(entry.label)
    why = "GE's DropOutPass replaces Dropout by its input and produces no mask." + cited(
        ctx.facts, "Dropout"
    )
    findings = []
    if mask_used:
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule, "mask_severity"),
                title=f"{len(mask_used)} Dropout(s) whose mask output is used",
                nodes=mask_used,
                why=why + " The mask these nodes feed will not exist.",
                fix=["remove-dropout"],
                fix_note="remove-dropout removes the node and gives the readers an all-ones mask (its inference value)",
                source="atc_onnx_ops.csv constraints (GE DropOutPass)",
            )
        )
    if plain:
        extra = (
            (
                f" {len(training)} of them are in training mode (training_mode=true): GE's removal gives "
                "inference behaviour, which is what deployment wants."
            )
            if training
            else ""
        )
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=f"{len(plain)} Dropout(s) that ATC removes",
                nodes=plain,
                why=why + extra,
                fix=["remove-dropout"],
                fix_note="remove-dropout does the same before ATC, so the ONNX model you verify is the one ATC sees",
                source="atc_onnx_ops.csv constraints (GE DropOutPass)",
                details={"training_mode": training},
            )
        )
    return findings
