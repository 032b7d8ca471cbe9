"""Check: every op is registered by ATC's parser at the model's opset (exact match, no fallback)."""

from __future__ import annotations

from surgery.doctor.checks._util import grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.facts import normalize_domain
from surgery.doctor.finding import Finding

NAME = "opset"


def check_opset(ctx: Context) -> list[Finding]:
    """Ops ATC registers, but not at the opset the model imports for their domain (one finding per domain)."""
    rule = ctx.facts.rule("opset")
    pairs = []
    ops_by_domain: dict[str, dict[str, str]] = {}
    for entry in ctx.entries:
        node = entry.node
        if ctx.calls_function(node):
            continue
        fact = ctx.facts.lookup(node.domain, node.op_type)
        if fact is None or fact.registered_at(ctx.opset(node.domain)):
            continue
        domain = normalize_domain(node.domain)
        ops_by_domain.setdefault(domain, {})[node.op_type] = fact.opsets_text
        pairs.append((domain, entry.label))
    findings = []
    for domain, labels in grouped(pairs).items():
        ops = ops_by_domain[domain]
        version = ctx.opset(domain)
        registered = "; ".join(f"{op} {text}" for op, text in sorted(ops.items()))
        # convert-opset works on ai.onnx only, and helps when every listed op has some registered version.
        unreachable = [
            op
            for op in ops
            if not ((fact := ctx.facts.lookup(domain, op)) is not None and fact.opsets)
        ]
        fixable = domain == "ai.onnx" and not unreachable
        if version is None:
            title = f"{len(ops)} op type(s) in domain {domain}, which the model does not import"
        else:
            title = f"{len(ops)} op type(s) not registered at {domain} opset {version}: {', '.join(sorted(ops))}"
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=title,
                nodes=labels,
                why=(
                    f"ATC looks ops up as '{domain}::{version}::<op>' (the model's opset, exact match, no fallback). "
                    f"It registers: {registered}. ATC stops with {rule['error']}."
                ),
                fix=["convert-opset"] if fixable else [],
                fix_note=(
                    "convert-opset converts the model to the highest opset at which ATC registers all of its ops"
                    if fixable
                    else "no opset conversion reaches a registered version for: "
                    + ", ".join(unreachable or sorted(ops))
                ),
                source="atc_onnx_ops.csv (msit-map, hicann-plugin); ge-parser lookup key",
                details={"domain": domain, "model_opset": version, "registered": ops},
            )
        )
    return findings
