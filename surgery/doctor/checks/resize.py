"""Check: Resize modes and inputs ATC ignores or mishandles."""

from __future__ import annotations

from surgery.doctor.checks._util import attr, cited, grouped, severity
from surgery.doctor.context import Context
from surgery.doctor.finding import Finding

NAME = "resize"


def check_resize(ctx: Context) -> list[Finding]:
    """Unsupported modes, non-constant scales/sizes, 5-D limits, and documented rounding differences."""
    rule = ctx.facts.rule("resize")
    opset = ctx.opset("") or 0
    pairs = []
    rewritable: set[str] = set()
    for entry in ctx.nodes("Resize"):
        node = entry.node
        mode = attr(node, "mode", "nearest")
        coord = attr(
            node, "coordinate_transformation_mode", "half_pixel" if opset >= 11 else "asymmetric"
        )
        nearest_mode = attr(node, "nearest_mode", "round_prefer_floor")
        if mode not in rule["modes"]:
            pairs.append((("mode", mode), entry.label))
        size_inputs = (
            [ctx.input(node, 1)] if opset < 11 else [ctx.input(node, 2), ctx.input(node, 3)]
        )
        given = [
            v
            for v in size_inputs
            if v is not None and not (v.const_value is not None and v.const_value.size == 0)
        ]
        if any(ctx.const(v) is None for v in given):
            foldable = all(ctx.is_shape_arithmetic(v) for v in given)
            pairs.append((("scales", "shape arithmetic" if foldable else "runtime"), entry.label))
        if ctx.rank(ctx.input(node, 0)) == 5 and (
            mode not in rule["rank5_modes"] or coord not in rule["rank5_coordinate_modes"]
        ):
            pairs.append((("rank5", f"{mode}/{coord}"), entry.label))
        if mode == "nearest" and nearest_mode != rule["nearest_mode_effective"]:
            pairs.append((("nearest_mode", nearest_mode), entry.label))
            if _is_integer_repeat(ctx, node, opset, coord, nearest_mode):
                rewritable.add(entry.label)
        if opset == 13:
            pairs.append((("opset13", "13"), entry.label))
        if mode == "linear" and coord in rule["half_pixel_modes_2022"]:
            pairs.append((("half_pixel", coord), entry.label))
    findings = []
    for (kind, value), labels in grouped(pairs).items():
        fix: list[str] = []
        note = ""
        if kind == "mode":
            sev, title = severity(rule, "mode_severity"), f"Resize mode '{value}' is not supported"
            why = f"ATC's Resize supports modes {' and '.join(rule['modes'])} only."
            note = "no pass rewrites cubic resizing"
        elif kind == "scales":
            sev = severity(rule, "constant_scales_severity")
            title = f"Resize scales/sizes are not constant ({value})"
            why = "ATC's Resize needs constant scales or sizes."
            if value == "shape arithmetic":
                fix, note = (
                    ["make-static"],
                    "they are computed from shapes: make-static folds them into constants",
                )
            else:
                note = "they depend on input values: no pass can make them constant"
        elif kind == "rank5":
            sev, title = severity(rule, "rank5_severity"), f"5-D Resize with {value}"
            why = (
                f"5-D Resize is supported only with mode {'/'.join(rule['rank5_modes'])} and "
                f"coordinate_transformation_mode {' or '.join(rule['rank5_coordinate_modes'])}."
            )
            note = "no pass rewrites 5-D resizing"
        elif kind == "nearest_mode":
            sev, title = (
                severity(rule, "risk_severity"),
                f"Resize nearest with nearest_mode '{value}'",
            )
            why = (
                f"From CANN 8.3.RC1 mode=nearest is implemented as {rule['nearest_mode_effective']} only (other "
                "nearest_mode values are not supported); the 2022 plugin ignored nearest_mode. PyTorch writes "
                "asymmetric + floor: pixels can land one place off on the device."
            )
            if all(label in rewritable for label in labels):
                fix = ["nearest-upsample-to-expand"]
                note = (
                    "an integer-scale nearest upsample is a plain repeat: nearest-upsample-to-expand rewrites it "
                    "as Unsqueeze/Expand/Reshape (bit-exact), so ATC's rounding never enters"
                )
            else:
                note = (
                    "nearest-upsample-to-expand rewrites integer-scale upsamples only; the others keep ATC's "
                    "rounding: compare outputs on device"
                )
        elif kind == "opset13":
            sev, title = severity(rule, "mode_severity"), "Resize at opset 13"
            why = (
                "CANN's Resize page lists opsets 10, 11, 12 and 14-18 (13 is not listed; 8.0.RC3 lists stop at 17), "
                "although the parser tables register 13: ATC may refuse the model."
            )
            fix, note = (
                ["convert-opset"],
                "convert-opset (default target 18) moves the model off opset 13",
            )
        else:
            sev, title = (
                severity(rule, "risk_severity"),
                f"Resize linear with coordinate mode '{value}'",
            )
            why = (
                "The 2022 ATC plugin treated half_pixel as asymmetric; newer releases are not documented to "
                "differ. Outputs can shift by half a pixel: compare outputs on device."
            )
            note = "no pass changes ATC's coordinate mapping"
        findings.append(
            Finding(
                check=NAME,
                severity=sev,
                title=title,
                nodes=labels,
                why=why + cited(ctx.facts, "Resize"),
                fix=fix,
                fix_note=note,
                source="atc_onnx_ops.csv constraints (CANN Resize page)",
                details={"kind": kind, "value": value},
            )
        )
    return findings


def _is_integer_repeat(ctx: Context, node, opset: int, coord: str, nearest_mode: str) -> bool:
    """Whether the exact Expand rewrite applies (the pass's own condition, read without importing it)."""
    if opset < 11 or (coord, nearest_mode) not in _REPEAT_PAIRS:
        return False
    x = ctx.input(node, 0)
    shape = ctx.shape(x) if x is not None else None
    scales = ctx.const(ctx.input(node, 2))
    if scales is None or not scales.size or shape is None or len(shape) != scales.size:
        return False
    factors = [float(f) for f in scales.reshape(-1)]
    if any(f < 1 or f != int(f) for f in factors) or all(f == 1 for f in factors):
        return False
    first = next(i for i, f in enumerate(factors) if f > 1)
    return all(isinstance(d, int) and d >= 0 for d in list(shape)[first:])


_REPEAT_PAIRS = {
    ("asymmetric", "floor"),
    ("half_pixel", "round_prefer_floor"),
    ("pytorch_half_pixel", "round_prefer_floor"),
}
