"""Check: ops whose CANN kernels run only on AICPU (slow), per SoC."""

from __future__ import annotations

from surgery.doctor.checks._util import grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.facts import normalize_domain
from surgery.doctor.finding import Finding
from surgery.doctor.fixes import FIX_BY_OP, FIX_NOTES

NAME = "aicpu-only"


def check_aicpu(ctx: Context) -> list[Finding]:
    """Ops mapped to a CANN op with only an AICPU kernel on the chosen SoC (all SoCs by default).

    When the SoC's AI Core list has a related op (``TopKD``, ``StridedSliceD``), GE can pick it once
    the op's extra inputs are constant: such nodes are reported only when those inputs are not.
    """
    rule = ctx.facts.rule("aicpu")
    known_socs = ctx.facts.socs
    if ctx.soc is not None and ctx.soc_family is not None:
        socs = [ctx.soc_family]
        scope = f"on {ctx.soc_family} (from --soc {ctx.soc})"
    elif ctx.soc is not None:
        socs = known_socs
        scope = (
            f"on {', '.join(known_socs)} (no AICPU list for {ctx.soc}; all listed SoCs are shown)"
        )
    else:
        socs = known_socs
        scope = f"on {', '.join(known_socs)} (no --soc given)"

    pairs = []
    hits: dict[tuple[str, str], dict] = {}
    for entry in ctx.entries:
        node = entry.node
        fact = ctx.facts.lookup(node.domain, node.op_type)
        if fact is None or not fact.aicpu or ctx.folds(node):
            continue
        relevant = [(a, [s for s in a.socs if s in socs]) for a in fact.aicpu]
        relevant = [(a, s) for a, s in relevant if s]
        if not relevant:
            continue
        extras = [v for v in node.inputs[1:] if v is not None]
        extras_const = all(ctx.const(v) is not None for v in extras)
        extras_foldable = all(ctx.is_shape_arithmetic(v) for v in extras)
        if all(a.aicore_related for a, _ in relevant) and extras_const:
            continue  # GE may pick the AI Core variant (constant-to-attribute passes)
        key = (normalize_domain(node.domain), node.op_type)
        info = hits.setdefault(key, {"kernels": {}, "foldable": True, "related": set()})
        for a, s in relevant:
            info["kernels"].setdefault(a.cann_op, set()).update(s)
            info["related"].update(a.aicore_related)
        if info["related"]:
            info["foldable"] = info["foldable"] and extras_foldable
        pairs.append((key, entry.label))

    findings = []
    for (domain, op), labels in grouped(pairs).items():
        info = hits[(domain, op)]
        kernels = "; ".join(
            f"{k}@{'/'.join(sorted(s))}" for k, s in sorted(info["kernels"].items())
        )
        fix = list(FIX_BY_OP.get(op, ()))
        note = ""
        if info["related"]:
            related = "/".join(sorted(info["related"]))
            if info["foldable"]:
                fix = ["make-static", *fix]
                note = (
                    f"its extra inputs are shape arithmetic: make-static folds them, then GE can pick the "
                    f"AI Core {related}"
                )
            else:
                note = f"GE picks the AI Core {related} only when the extra inputs are constant; here they are not"
        elif fix:
            note = FIX_NOTES.get(op, "")
        else:
            note = "no pass replaces this op"
        why = f"{op} maps to {kernels}: no AI Core kernel {scope}. {rule['note']}"
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=f"{op} runs on AICPU",
                nodes=labels,
                why=why,
                fix=fix,
                fix_note=note,
                source=rule["source"],
                details={
                    "op": op,
                    "domain": domain,
                    "cann_kernels": {k: sorted(s) for k, s in info["kernels"].items()},
                    "socs_checked": socs,
                },
            )
        )
    return findings
