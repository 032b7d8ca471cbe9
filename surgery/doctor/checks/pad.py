"""Check: Pad modes and constant values ATC does not support."""

from __future__ import annotations

from surgery.doctor.checks._util import attr, cited, grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "pad"


def check_pad(ctx: Context) -> list[Finding]:
    """Pad with an unsupported mode, or constant mode with a non-zero (or unknown) pad value."""
    rule = ctx.facts.rule("pad")
    opset = ctx.opset("") or 0
    pairs = []
    for entry in ctx.nodes("Pad"):
        node = entry.node
        mode = attr(node, "mode", "constant")
        if mode not in rule["modes"]:
            pairs.append((("mode", mode), entry.label))
            continue
        if mode != "constant":
            continue
        if opset < 11:
            value = float(attr(node, "value", 0.0))
            if value != rule["constant_value"]:
                pairs.append((("value", repr(value)), entry.label))
            continue
        given = ctx.input(node, 2)
        if given is None:
            continue
        array = ctx.const(given)
        if array is None:
            pairs.append((("value", "not constant"), entry.label))
        elif array.size and float(array.reshape(-1)[0]) != rule["constant_value"]:
            pairs.append((("value", repr(array.reshape(-1)[0].item())), entry.label))
    findings = []
    for (kind, value), labels in grouped(pairs).items():
        if kind == "mode":
            title = f"Pad mode '{value}' is not supported"
            why = f"ATC's Pad supports modes {', '.join(rule['modes'])} only."
        else:
            title = f"Pad with constant value {value}"
            why = "ATC's Pad requires constant_value 0."
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=title,
                nodes=labels,
                why=why + cited(ctx.facts, "Pad"),
                fix=[],
                fix_note="no pass rewrites this Pad",
                source="atc_onnx_ops.csv constraints (CANN Pad page)",
                details={"kind": kind, "value": value},
            )
        )
    return findings
