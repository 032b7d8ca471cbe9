"""Check: pooling attributes outside ATC's limits (big kernels and strides fall back to AICPU)."""

from __future__ import annotations

import math

from surgery.doctor.checks._util import attr, cited, grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "pool-limits"


def check_pool_limits(ctx: Context) -> list[Finding]:
    """MaxPool storage_order/dilations/kernel/stride limits; AveragePool kernel limit."""
    mp = ctx.facts.rule("maxpool")
    ap = ctx.facts.rule("averagepool")
    pairs = []
    for entry in ctx.nodes("MaxPool"):
        node = entry.node
        kernel = attr(node, "kernel_shape", []) or []
        strides = attr(node, "strides", []) or []
        dilations = attr(node, "dilations", []) or []
        if attr(node, "storage_order", 0) == 1:
            pairs.append(
                (
                    (
                        "storage_order",
                        "MaxPool storage_order=1 (column-major indices) is unsupported",
                        severity(mp, "storage_order_severity"),
                    ),
                    entry.label,
                )
            )
        if len(kernel) == 2 and any(d != 1 for d in dilations):
            pairs.append(
                (
                    (
                        "dilations",
                        "2-D MaxPool with dilations is unsupported",
                        severity(mp, "dilations_2d_severity"),
                    ),
                    entry.label,
                )
            )
        if (
            any(k < 1 or k > mp["max_kernel_dim"] for k in kernel)
            or math.prod(kernel) > mp["max_kernel_area"]
            or any(s > mp["max_stride"] for s in strides)
        ):
            pairs.append(
                (
                    (
                        "limits",
                        f"MaxPool kernel/stride beyond AI Core limits (kernel dims 1..{mp['max_kernel_dim']}, "
                        f"area <= {mp['max_kernel_area']}, stride <= {mp['max_stride']})",
                        severity(mp, "limits_severity"),
                    ),
                    entry.label,
                )
            )
    for entry in ctx.nodes("AveragePool"):
        kernel = attr(entry.node, "kernel_shape", []) or []
        if any(k > ap["max_kernel_dim"] for k in kernel):
            pairs.append(
                (
                    (
                        "avg_kernel",
                        f"AveragePool kernel dim above {ap['max_kernel_dim']}",
                        severity(ap),
                    ),
                    entry.label,
                )
            )
    findings = []
    for (kind, title, sev), labels in grouped(pairs).items():
        slow = kind == "limits"
        op = "AveragePool" if kind == "avg_kernel" else "MaxPool"
        findings.append(
            Finding(
                check=NAME,
                severity=sev,
                title=title,
                nodes=labels,
                why=(
                    "The MaxPool kernel falls back to AICPU beyond these limits"
                    if slow
                    else "The CANN ONNX op page does not support it"
                )
                + "."
                + cited(ctx.facts, op),
                fix=[],
                fix_note="maxpool-to-avgpool can replace a MaxPool when average pooling is acceptable (changes results)"
                if kind in ("limits", "dilations")
                else "no pass rewrites this pooling",
                source="atc_onnx_ops.csv constraints",
                details={"kind": kind},
            )
        )
    return findings
