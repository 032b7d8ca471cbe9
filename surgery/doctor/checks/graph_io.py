"""Check: the main graph has inputs and outputs (ATC refuses a graph without either)."""

from __future__ import annotations

from surgery.doctor.checks._util import severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "graph-io"


def check_graph_io(ctx: Context) -> list[Finding]:
    """A root graph with zero (non-initializer) inputs or zero outputs."""
    rule = ctx.facts.rule("graph_io")
    graph = ctx.model.graph
    findings = []
    data_inputs = [v for v in graph.inputs if v.const_value is None]
    if not data_inputs:
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title="the graph has no inputs",
                nodes=[graph.name or "main graph"],
                why=(
                    "ATC turns each graph input into a Data node and refuses a root graph with none "
                    f"({rule['error']}). Pinning every input (pin-inputs) leads here."
                ),
                fix=[],
                fix_note="keep at least one input (do not pin them all)",
                source="ge-parser (OnnxModelParser::ParseInput)",
            )
        )
    if not graph.outputs:
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title="the graph has no outputs",
                nodes=[graph.name or "main graph"],
                why=f"ATC refuses a graph with zero outputs ({rule['error']}).",
                fix=[],
                fix_note="the model computes nothing: re-export it",
                source="ge-parser (OnnxModelParser::ParseOutput)",
            )
        )
    return findings
