"""``diagnose(model)``: run every check and gather the findings into a :class:`DoctorReport`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from surgery import libwarnings
from surgery.doctor.checks import CHECKS, Check
from surgery.doctor.context import Context
from surgery.doctor.facts import load_facts
from surgery.doctor.finding import DoctorReport
from surgery.model_io import ModelLike, to_ir

__all__ = ["diagnose"]

logger = logging.getLogger(__name__)


def diagnose(
    model: ModelLike, *, soc: str | None = None, checks: Sequence[Check] = CHECKS
) -> DoctorReport:
    """Check ``model`` (a path, ``ModelProto`` or ``ir.Model``; never modified) for ATC.

    Args:
        soc: the target SoC (``Ascend310P3``…) for the AICPU-only check; all SoCs in the data when None.
        checks: the checks to run (all by default).

    Raises:
        InputError: an unreadable model, or a ``soc`` that is not an Ascend SoC name.
    """
    label = os.fspath(model) if isinstance(model, (str, os.PathLike)) else ""
    caught: list[str] = []
    with libwarnings.capture(caught):  # library warnings go to the log and the report, not stderr
        ir_model = to_ir(model)
        facts = load_facts()
        ctx = Context(ir_model, facts, soc)
        findings = []
        for check in checks:
            found = check(ctx)
            logger.debug("%s: %d finding(s)", check.__name__, len(found))
            findings.extend(found)
    return DoctorReport(
        warnings=caught,
        findings=findings,
        model=label or ir_model.graph.name or "",
        soc=soc,
        soc_family=ctx.soc_family,
        opsets=dict(sorted(ctx.opsets.items())),
        node_count=len(ctx.entries),
        data_sources=facts.source_summary(),
    )
