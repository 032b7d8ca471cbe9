"""Check: node names ATC cannot take — repeated names in one graph (after ATC names the unnamed
nodes and adds a Data node per input), and input names its command-line syntax cannot express."""

from __future__ import annotations

from collections import Counter

import onnx_ir as ir

from surgery.doctor.checks._util import severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding, Severity
from surgery.graph import value_names, walk

NAME = "names"


def _atc_names(
    graphs: list[ir.Graph], unnamed_fmt: str, init_fmt: str
) -> list[tuple[ir.Graph, list[str]]]:
    """The op names ATC's parser gives each graph, in its order (unnamed-node counter shared)."""
    counter = 0
    result = []
    for graph in graphs:
        names: list[str] = []
        initializers = set(graph.initializers)
        names += [n for n in value_names(graph.inputs) if n not in initializers]
        names += [init_fmt.format(name=n, index=i) for i, n in enumerate(sorted(initializers))]
        for node in graph:
            if node.name:
                names.append(node.name)
            else:
                names.append(unnamed_fmt.format(op_type=node.op_type, index=counter))
                counter += 1
        result.append((graph, names))
    return result


def check_names(ctx: Context) -> list[Finding]:
    """Repeated op names per graph (E13009), and graph input names with ATC separators."""
    rule = ctx.facts.rule("names")
    parser = ctx.facts.ge_parser
    findings = []
    # ATC parses graphs breadth first (its unnamed-node counter runs in that order)
    graphs = [
        sc.graph
        for sc in sorted(walk(ctx.model, functions=False), key=lambda sc: sc.depth)
        if isinstance(sc.graph, ir.Graph)
    ]
    repeated: list[str] = []
    for graph, names in _atc_names(
        graphs, parser["unnamed_node_name"], parser["initializer_node_name"]
    ):
        where = "" if graph is ctx.model.graph else f"{graph.name or 'subgraph'}/"
        repeated += [
            f"{where}{name} (x{count})" for name, count in Counter(names).items() if count > 1
        ]
    if repeated:
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=f"{len(repeated)} op name(s) repeated within a graph",
                nodes=repeated,
                why=(
                    "ATC names unnamed nodes '<op_type>_<n>', adds a Data node named after each graph input, "
                    f"then refuses two ops of one graph with the same name ({rule['error']})."
                ),
                fix=[],
                fix_note="give the nodes unique names (no pass renames nodes: names are kept on purpose)",
                source="ge-parser (UpdateNodeNameAndOpType, PreChecker::CheckName)",
            )
        )
    separators = rule["cmdline_separators"]
    bad = [
        v.name
        for v in ctx.model.graph.inputs
        if v.name
        and v.const_value is None
        and (any(s in v.name for s in separators) or v.name != v.name.strip() or " " in v.name)
    ]
    if bad:
        findings.append(
            Finding(
                check=NAME,
                severity=Severity.parse(rule["cmdline_severity"]),
                title=f"{len(bad)} input name(s) contain ATC command-line separators",
                nodes=bad,
                why=(
                    "ATC's --input_shape and --dynamic_dims options write 'name:dims;name:dims'; an input "
                    f"name holding any of {' '.join(repr(s) for s in separators)} or spaces cannot be written there "
                    "(it matters only when ATC must be told the input's shape)."
                ),
                fix=[],
                fix_note="rename the inputs at export (input_names=...)",
                source="ATC --input_shape syntax",
            )
        )
    return findings
