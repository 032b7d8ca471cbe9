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
    for entry in ctx.nodes("Resize"):
        node = entry.node
        mode = attr(node, "mode", "nearest")
        coord = attr(node, "coordinate_transformation_mode", "half_pixel" if opset >= 11 else "asymmetric")
        nearest_mode = attr(node, "nearest_mode", "round_prefer_floor")
        if mode not in rule["modes"]:
            pairs.append((("mode", mode), entry.label))
        size_inputs = [ctx.input(node, 1)] if opset < 11 else [ctx.input(node, 2), ctx.input(node, 3)]
        given = [v for v in size_inputs if v is not None and not (v.const_value is not None and v.const_value.size == 0)]
        if any(ctx.const(v) is None for v in given):
            foldable = all(ctx.is_shape_arithmetic(v) for v in given)
            pairs.append((("scales", "shape arithmetic" if foldable else "runtime"), entry.label))
        if ctx.rank(ctx.input(node, 0)) == 5 and (
            mode not in rule["rank5_modes"] or coord not in rule["rank5_coordinate_modes"]
        ):
            pairs.append((("rank5", f"{mode}/{coord}"), entry.label))
        if mode == "nearest" and nearest_mode != rule["nearest_mode_effective"]:
            pairs.append((("nearest_mode", nearest_mode), entry.label))
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
                fix, note = ["make-static"], "they are computed from shapes: make-static folds them into constants"
            else:
                note = "they depend on input values: no pass can make them constant"
        elif kind == "rank5":
            sev, title = severity(rule, "rank5_severity"), f"5-D Resize with {value}"
            why = (f"5-D Resize is supported only with mode {'/'.join(rule['rank5_modes'])} and "
                   f"coordinate_transformation_mode {' or '.join(rule['rank5_coordinate_modes'])}.")
            note = "no pass rewrites 5-D resizing"
        elif kind == "nearest_mode":
            sev, title = severity(rule, "risk_severity"), f"Resize nearest with nearest_mode '{value}'"
            why = (f"CANN 8.1+ docs say nearest rounding behaves as {rule['nearest_mode_effective']}; the 2022 "
                   "plugin ignored nearest_mode. Pixels on rounding ties may differ from ONNX: compare outputs.")
            note = "no pass changes ATC's rounding; compare outputs on device"
        else:
            sev, title = severity(rule, "risk_severity"), f"Resize linear with coordinate mode '{value}'"
            why = ("The 2022 ATC plugin treated half_pixel as asymmetric; newer releases are not documented to "
                   "differ. Outputs can shift by half a pixel: compare outputs on device.")
            note = "no pass changes ATC's coordinate mapping"
        findings.append(
            Finding(check=NAME, severity=sev, title=title, nodes=labels, why=why + cited(ctx.facts, "Resize"),
                    fix=fix, fix_note=note, source="atc_onnx_ops.csv constraints (CANN Resize page)",
                    details={"kind": kind, "value": value})
        )
    return findings
