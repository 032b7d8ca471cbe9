"""The human-readable doctor report: a table of findings, then why and how to fix each."""

from __future__ import annotations

import textwrap

from surgery.doctor.facts import load_facts
from surgery.doctor.finding import DoctorReport
from surgery.errors import one_line

__all__ = ["render_table"]

_MAX_NODES = 3
_WIDTH = 100


def _nodes(labels: list[str]) -> str:
    shown = ", ".join(labels[:_MAX_NODES])
    if len(labels) > _MAX_NODES:
        shown += f" (+{len(labels) - _MAX_NODES})"
    return shown if len(shown) <= 48 else shown[:45] + "..."


def _soc_line(report: DoctorReport) -> str:
    socs = ", ".join(load_facts().socs)
    if report.soc is None:
        return f"SoC: not given (AICPU lists of {socs})"
    if report.soc_family is None:
        return f"SoC: {report.soc} (no AICPU list for it; AICPU findings cover {socs})"
    return f"SoC: {report.soc} (AICPU list of {report.soc_family})"


def render_table(report: DoctorReport) -> str:
    opsets = ", ".join(f"{d} {v}" for d, v in report.opsets.items()) or "none"
    out = [
        f"surgery doctor: {report.model or 'model'}",
        f"  opsets: {opsets} | {report.node_count} nodes | {_soc_line(report)}",
        "",
    ]
    if not report.findings:
        out.append("No findings: nothing in the shipped ATC data flags this model.")
    else:
        rows = [("#", "SEVERITY", "CHECK", "FINDING", "NODES", "FIX")]
        for i, f in enumerate(report.findings, 1):
            rows.append(
                (
                    str(i),
                    f.severity.value,
                    f.check,
                    f.title,
                    _nodes(f.nodes),
                    ", ".join(f.fix) or "-",
                )
            )
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        for r in rows:
            out.append("  ".join(r[c].ljust(widths[c]) for c in range(5)) + "  " + r[5])
        out.append("")
        for i, f in enumerate(report.findings, 1):
            out.append(f"{i}. [{f.severity.value}] {f.title}")
            out += textwrap.wrap(
                f"why: {f.why}", _WIDTH, initial_indent="   ", subsequent_indent="        "
            )
            fix = ", ".join(f.fix) if f.fix else "no pass"
            note = f" ({f.fix_note})" if f.fix_note else ""
            out += textwrap.wrap(
                f"fix: {fix}{note}", _WIDTH, initial_indent="   ", subsequent_indent="        "
            )
            if len(f.nodes) > _MAX_NODES:
                out += textwrap.wrap(
                    "nodes: " + ", ".join(f.nodes[:20]) + (" ..." if len(f.nodes) > 20 else ""),
                    _WIDTH,
                    initial_indent="   ",
                    subsequent_indent="        ",
                )
    counts = report.counts()
    out.append("")
    verdict = (
        "ATC will fail on this model (exit 1)"
        if report.will_fail
        else "nothing here is known to make ATC fail (exit 0)"
    )
    out.append("Summary: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f". {verdict}.")
    if any(f.fix for f in report.findings):
        out.append(
            "Fix: surgery doctor MODEL --emit-pipeline passes.toml, then surgery apply passes.toml MODEL -o OUT"
        )
    # every line may carry model text (node names, the model path): one printable line each
    return "\n".join(one_line(line) for line in out) + "\n"
