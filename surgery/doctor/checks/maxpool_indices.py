"""Check: MaxPool with an Indices output (ATC's MaxPool mapping rejects it)."""

from __future__ import annotations

from surgery.doctor.checks._util import cited, is_used, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "maxpool-indices"


def check_maxpool_indices(ctx: Context) -> list[Finding]:
    """MaxPool nodes that declare a second (Indices) output, split by whether anything reads it."""
    rule = ctx.facts.rule("maxpool")
    unused, used = [], []
    consumers: list[str] = []
    for entry in ctx.nodes("MaxPool"):
        node = entry.node
        if len(node.outputs) < 2 or node.outputs[1] is None or not node.outputs[1].name:
            continue
        indices = node.outputs[1]
        if is_used(indices):
            used.append(entry.label)
            consumers += [u.node.name or u.node.op_type for u in indices.uses()]
            if indices.is_graph_output():
                consumers.append(f"graph output {indices.name}")
        else:
            unused.append(entry.label)
    why = "ATC's MaxPool mapping rejects the Indices output." + cited(ctx.facts, "MaxPool")
    findings = []
    if unused:
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule, "indices_severity"),
                title=f"{len(unused)} MaxPool(s) declare an Indices output nothing reads",
                nodes=unused,
                why=why,
                fix=["drop-maxpool-indices"],
                fix_note="drop-maxpool-indices removes the unused output (exact)",
                source="atc_onnx_ops.csv constraints (2022 plugin)",
            )
        )
    if used:
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule, "indices_severity"),
                title=f"{len(used)} MaxPool(s) whose Indices output is used",
                nodes=used,
                why=why + f" Here the indices are read by {', '.join(dict.fromkeys(consumers))}.",
                fix=[],
                fix_note="no pass can remove indices that are read (maxpool-to-avgpool refuses); "
                "move the MaxUnpool-style part out of the NPU model (extract/split-postprocess)",
                source="atc_onnx_ops.csv constraints (2022 plugin)",
            )
        )
    return findings
