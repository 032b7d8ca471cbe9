"""Check: model-local functions and opset domains ATC does not know (torch dynamo writes both)."""

from __future__ import annotations

from surgery.doctor.checks._util import severity
from surgery.doctor.context import Context
from surgery.doctor.facts import normalize_domain
from surgery.doctor.finding import Finding

NAME = "domains"


def check_domains(ctx: Context) -> list[Finding]:
    """Functions ATC cannot expand, and imported domains in which ATC registers no op."""
    rule = ctx.facts.rule("domains")
    findings = []
    calls = [e.label for e in ctx.entries if ctx.calls_function(e.node)]
    if ctx.model.functions:
        names = sorted(f"{f.domain}::{f.name}" for f in ctx.model.functions.values())
        domains = sorted({f.domain for f in ctx.model.functions.values()})
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=f"{len(names)} model-local function(s), called by {len(calls)} node(s)",
                nodes=calls or names,
                why=(
                    "ATC parses graph nodes only: a call to a model-local function is an op of the function's "
                    f"domain ({', '.join(domains)}), and ATC registers none. ATC stops on it ({rule['error']}; "
                    "or no parser for the call)."
                ),
                fix=["inline-functions"],
                fix_note="inline-functions replaces each call by the function body and drops unused domains",
                source="ge-parser lookup key",
                details={"functions": names, "domains": domains},
            )
        )
    known = ctx.facts.domains()
    used: dict[str, list[str]] = {}
    for entry in ctx.entries:
        if entry.in_function:
            continue
        used.setdefault(normalize_domain(entry.node.domain), []).append(entry.label)
    for domain, version in sorted(ctx.opsets.items()):
        if domain in known:
            continue
        users = used.get(domain, [])
        custom_ops = [
            e.label
            for e in ctx.entries
            if normalize_domain(e.node.domain) == domain and not ctx.calls_function(e.node)
        ]
        if custom_ops:
            fix: list[str] = []
            note = (
                "nodes of this domain are custom ops ATC does not register: no pass replaces them"
            )
        elif users:
            continue  # only function calls use it: the functions finding above covers it
        else:
            fix, note = (
                ["inline-functions"],
                "inline-functions drops opset imports that no node uses",
            )
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=f"opset domain '{domain}' (version {version}) is unknown to ATC"
                + ("" if users or custom_ops else " and unused"),
                nodes=custom_ops or users or [domain],
                why=(
                    f"ATC registers no op in domain '{domain}'; extra opset domains make it stop "
                    f"({rule['error']})."
                ),
                fix=fix,
                fix_note=note,
                source="atc_onnx_ops.csv domains; ge-parser",
                details={
                    "domain": domain,
                    "version": version,
                    "nodes_using_it": len(users),
                    "custom_ops": len(custom_ops),
                },
            )
        )
    return findings
