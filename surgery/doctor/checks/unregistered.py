"""Check: ops ATC has no parser for at any opset (Loop, Scan, Q/DQ, GroupNormalization, …)."""

from __future__ import annotations

from surgery.doctor.checks._util import grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.facts import normalize_domain
from surgery.doctor.finding import Finding
from surgery.doctor.fixes import FIX_BY_OP, FIX_NOTES

NAME = "unregistered-op"


def check_unregistered(ctx: Context) -> list[Finding]:
    """Ops that no ATC source registers under their domain (calls to model-local functions excepted)."""
    rule = ctx.facts.rule("unregistered")
    builtin = set(ctx.facts.ge_parser["builtin_ops"])
    pairs = []
    for entry in ctx.entries:
        node = entry.node
        if ctx.calls_function(node) or node.op_type in builtin:
            continue
        if ctx.facts.lookup(node.domain, node.op_type) is None:
            pairs.append(((normalize_domain(node.domain), node.op_type), entry.label))
    findings = []
    for (domain, op), labels in grouped(pairs).items():
        info = ctx.facts.unsupported.get(op) if domain == "ai.onnx" else None
        if info is not None:
            why = f"No ATC source registers {op} at any opset ({info['notes']})."
            if info["function_op"]:
                why += " ONNX defines it as a function of primitive ops, so it can be expanded."
        elif domain == "ai.onnx":
            why = f"{op} is neither a standard ONNX op nor an op ATC registers."
        else:
            why = f"ATC registers no op {op} in domain {domain}."
        fix = list(FIX_BY_OP.get(op, ())) if domain == "ai.onnx" else []
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=f"{op} ({domain}) has no ATC parser",
                nodes=labels,
                why=why + f" ATC stops with {rule['error']}.",
                fix=fix,
                fix_note=FIX_NOTES.get(op, "")
                if fix
                else "no pass rewrites this op; move it out of the NPU part or replace it in the model",
                source="atc_unsupported.csv / atc_onnx_ops.csv",
                details={
                    "op": op,
                    "domain": domain,
                    "function_op": bool(info and info["function_op"]),
                },
            )
        )
    return findings
