"""Check: every op is registered by ATC's parser at the model's opset (exact match, no fallback)."""

from __future__ import annotations

from surgery.doctor.checks._util import grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.facts import normalize_domain
from surgery.doctor.finding import Finding

NAME = "opset"


def check_opset(ctx: Context) -> list[Finding]:
    """Ops ATC registers, but not at the opset the model imports for their domain."""
    rule = ctx.facts.rule("opset")
    pairs = []
    for entry in ctx.entries:
        node = entry.node
        if ctx.calls_function(node):
            continue
        fact = ctx.facts.lookup(node.domain, node.op_type)
        if fact is None or fact.registered_at(ctx.opset(node.domain)):
            continue
        pairs.append(((normalize_domain(node.domain), node.op_type), entry.label))
    findings = []
    for (domain, op), labels in grouped(pairs).items():
        fact = ctx.facts.lookup(domain, op)
        assert fact is not None
        version = ctx.opset(domain)
        below = sorted(v for v in (fact.opsets or ()) if version is None or v < version)
        if version is None:
            title = f"{op}: the model imports no opset for domain {domain}"
        else:
            title = f"{op} is not registered at {domain} opset {version}"
        fixable = domain == "ai.onnx" and bool(fact.opsets)
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=title,
                nodes=labels,
                why=(
                    f"ATC looks ops up as '{domain}::<opset>::{op}' with the model's opset and no fallback; "
                    f"it registers {op} at opsets {fact.opsets_text} only. ATC stops with {rule['error']}."
                ),
                fix=["convert-opset"] if fixable else [],
                fix_note=(
                    f"convert-opset to an opset ATC registers for every op in the model (highest for {op}: "
                    f"{max(fact.opsets)})" if fixable else "no opset conversion reaches a registered version"
                ),
                source="atc_onnx_ops.csv (msit-map, hicann-plugin); ge-parser lookup key",
                details={"op": op, "domain": domain, "model_opset": version, "registered": fact.opsets_text,
                         "registered_below_model": below},
            )
        )
    return findings
