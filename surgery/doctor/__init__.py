"""``surgery doctor``: what ATC will refuse, run slowly or compute differently, and which pass fixes it.

    from surgery.doctor import diagnose, emit_pipeline
    report = diagnose("model.onnx", soc="Ascend310P3")
    report.exit_code            # 0 nothing will fail, 1 something will
    emit_pipeline(report, model).text   # a passes.toml fixing what can be fixed

Facts (registered ops and opsets, AICPU-only kernels, per-op limits) come from the table shipped in
``surgery/data/atc_facts.json``; see ``scripts/build_ascend_table.py`` for how it is built.
"""

from __future__ import annotations

from surgery.doctor.checks import CHECKS
from surgery.doctor.diagnose import diagnose
from surgery.doctor.facts import AtcFacts, load_facts
from surgery.doctor.finding import DoctorReport, Finding, Severity
from surgery.doctor.pipeline import EmittedPipeline, emit_pipeline
from surgery.doctor.render import render_table

__all__ = [
    "CHECKS",
    "AtcFacts",
    "DoctorReport",
    "EmittedPipeline",
    "Finding",
    "Severity",
    "diagnose",
    "emit_pipeline",
    "load_facts",
    "render_table",
]
