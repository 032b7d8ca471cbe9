"""Check: Slice with a step other than 1 on the last axis, or on a rank-1 tensor."""

from __future__ import annotations

import onnx_ir as ir

from surgery.doctor.checks._util import cited, grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding
from surgery.idioms import match_focus

NAME = "slice"


def _last_axis_step(ctx: Context, node: ir.Node) -> int | str:
    """The step on the last axis (1 when not sliced), ``"unknown"`` when it cannot be told."""
    if (ctx.opset("") or 0) < 10:
        return 1  # Slice-1 has no steps
    steps_v = ctx.input(node, 4)
    if steps_v is None:
        return 1
    steps = ctx.const(steps_v)
    if steps is None:
        return "unknown"
    axes_v = ctx.input(node, 3)
    if axes_v is None:
        axes = list(range(steps.size))
    else:
        axes_array = ctx.const(axes_v)
        if axes_array is None:
            return "unknown"
        axes = [int(a) for a in axes_array.reshape(-1)]
    rank = ctx.rank(ctx.input(node, 0))
    for axis, step in zip(axes, steps.reshape(-1).tolist(), strict=False):
        if axis == -1 or (rank is not None and axis % rank == rank - 1):
            return int(step)
        if rank is None and axis >= 0 and step != 1:
            return "unknown"
    return 1


def _focus_slices(ctx: Context) -> set[ir.Node]:
    """Slices that belong to a Focus (space-to-depth) idiom, which rewrite-focus removes."""
    found: set[ir.Node] = set()
    for entry in ctx.nodes("Concat"):
        idiom = match_focus(entry.node, ctx.shape, require_static=False)
        if idiom is not None:
            found.update(idiom.slices)
    return found


def check_slice(ctx: Context) -> list[Finding]:
    """Runtime Slices ATC's StridedSlice mapping cannot take."""
    rule = ctx.facts.rule("slice")
    pairs = []
    focus = _focus_slices(ctx)
    for entry in ctx.nodes("Slice"):
        node = entry.node
        if ctx.folds(node):
            continue  # shape arithmetic: folded before any kernel runs
        step = _last_axis_step(ctx, node)
        if node in focus and step != rule["last_axis_step"]:
            pairs.append((("focus", f"step {step}"), entry.label))
        elif step != rule["last_axis_step"] and step != "unknown":
            pairs.append((("step", f"step {step}"), entry.label))
        rank = ctx.rank(ctx.input(node, 0))
        if rank is not None and rank < rule["min_rank"]:
            pairs.append((("rank", f"rank {rank}"), entry.label))
    findings = []
    for (kind, value), labels in grouped(pairs).items():
        if kind == "focus":
            findings.append(
                Finding(
                    check=NAME,
                    severity=severity(rule),
                    title=f"Focus (space-to-depth) slicing with {value} on the last axis",
                    nodes=labels,
                    why="ATC's Slice requires step 1 on the last axis; these Slices sample every other row and "
                    "column and are concatenated on the channel axis (YOLOv5's Focus)."
                    + cited(ctx.facts, "Slice"),
                    fix=["rewrite-focus"],
                    fix_note="rewrite-focus turns the four Slices and the Concat into Reshape + Transpose + Reshape "
                    "(bit-exact); it needs static shapes, so it runs after make-static",
                    source="atc_onnx_ops.csv constraints (CANN Slice page)",
                    details={"kind": kind},
                )
            )
            continue
        if kind == "step":
            title = f"Slice with {value} on the last axis"
            why = "ATC's Slice requires step 1 on the last axis (reversals like torch.flip on the last dim hit this)."
        else:
            title = f"Slice of a {value} tensor at run time"
            why = "ATC's Slice requires an input rank of at least 2."
        findings.append(
            Finding(
                check=NAME,
                severity=severity(rule),
                title=title,
                nodes=labels,
                why=why + cited(ctx.facts, "Slice"),
                fix=["slice-step-to-gather"],
                fix_note="slice-step-to-gather rewrites it as a Gather with constant, non-negative positions "
                "(bit-exact; needs constant starts/ends/steps and a static last dim, so it runs after make-static)",
                source="atc_onnx_ops.csv constraints (CANN Slice page)",
                details={"kind": kind},
            )
        )
    return findings
