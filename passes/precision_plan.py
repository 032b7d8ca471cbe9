"""``precision-plan``: what ATC's float16 mode will compute, and the float32 keep-list, as a pipeline step.

The same diagnosis as ``surgery precision`` (see :mod:`surgery.precision`), run last in an ``apply``
pipeline so that the plan is made on the model ATC will actually compile. It never changes the
model: the diagnosis goes into the step's notes and the plan into the ``precision-plan`` artifact,
from which ``apply`` writes ``OUT.keep_dtype.txt`` and adds the precision flags to the atc line.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import onnx_ir as ir

from surgery.errors import PassError
from surgery.options import option
from surgery.pass_base import Numerics, SurgeryPass, SurgeryResult, Tolerance, declare_stats
from surgery.registry import register

__all__ = ["ARTIFACT", "PrecisionPlan"]

#: The artifact key ``apply`` reads (see :func:`surgery.atc.report_atc_commands`).
ARTIFACT = "precision-plan"


@register
class PrecisionPlan(SurgeryPass):
    """Emulate ATC's float16 precision mode; name overflows; plan the nodes to keep in float32.

    Runs the model node by node as the mode would (float16 weights and activations, float32
    accumulation) beside the float32 reference, and when the mode breaks tolerance plans the
    smallest keep-list greedily and re-checks it. Notes carry the diagnosis; the artifact
    ``precision-plan`` carries the keep_dtype lines that ``apply`` writes as ``OUT.keep_dtype.txt``.
    """

    name = "precision-plan"

    @dataclasses.dataclass(frozen=True)
    class Options:
        mode: Literal["fp16", "mixed_float16", "origin"] = option(
            "fp16", help="the ATC precision mode to emulate"
        )
        flag: Literal["precision_mode", "precision_mode_v2"] = option(
            "precision_mode", help="which ATC flag the atc line uses (they cannot be combined)"
        )
        data: str = option(
            "", help="an .npz of input arrays (default: generated samples)", path=True
        )
        samples: int = option(2, help="generated samples when no data is given")
        rtol: float = option(1e-2, help="relative tolerance, of each tensor's range")
        atol: float = option(1e-3, help="absolute tolerance")

    numerics = Numerics.EXACT
    statistics = declare_stats(
        fp16_ok="whether the model meets the tolerance in float16 as it is",
        keep_fp32="nodes the plan keeps in float32",
        overflows="tensors that overflow float16",
    )

    def call(self, model: ir.Model) -> SurgeryResult:
        from surgery.errors import InputError
        from surgery.precision import check_precision, make_samples

        opts = self.options
        if opts.samples < 1:
            raise PassError("samples must be at least 1", pass_name=self.name)
        try:
            samples = make_samples(model, data=opts.data or None, samples=opts.samples)
            report = check_precision(
                model, samples, mode=opts.mode, tolerance=Tolerance(opts.rtol, opts.atol)
            )
        except InputError as exc:
            raise PassError(str(exc), pass_name=self.name) from None
        plan_ok = report.ok or (report.plan is not None and report.plan.meets_tolerance)
        artifact = {
            "mode": opts.mode,
            "flag": opts.flag,
            "ok": report.ok,
            "plan_ok": plan_ok,
            "keep_dtype": list(report.keep_dtype),
        }
        stats = {
            "fp16_ok": report.ok,
            "keep_fp32": len(report.plan.keep) if report.plan else 0,
            "overflows": len(report.emulation.overflows),
        }
        return SurgeryResult(
            model, False, stats=stats, notes=report.lines(), artifacts={ARTIFACT: artifact}
        )


#: The options, also importable under their former module-level name.
PrecisionPlanOptions = PrecisionPlan.Options
