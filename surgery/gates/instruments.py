"""Instruments: progress, per-pass timing and the reproducer, called around every pass."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from surgery.gates.base import BaseInstrument, Outcome
from surgery.gates.state import RunState
from surgery.instruments.reproducer import write_reproducer

__all__ = ["ProgressInstrument", "ReproducerInstrument", "TimingInstrument"]

logger = logging.getLogger(__name__)


class ProgressInstrument(BaseInstrument):
    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress = progress

    def before_pass(self, run: RunState) -> None:
        assert run.step is not None
        self.progress(f"[{run.index}/{len(run.pipeline.steps)}] {run.step.name}")


class TimingInstrument(BaseInstrument):
    """The pass's own time (the gates time themselves: see ``StepReport.timings``)."""

    def __init__(self) -> None:
        self._t0 = 0.0

    def before_pass(self, run: RunState) -> None:
        self._t0 = time.perf_counter()

    def after_pass(self, run: RunState) -> None:
        if run.step_report is not None:
            run.step_report.timings["pass"] = time.perf_counter() - self._t0


class ReproducerInstrument(BaseInstrument):
    """Keeps the model as it was before the current pass; on a failure writes a folder that replays it.

    The folder carries the model before the failing pass (the original for an end-of-run failure),
    the inputs of the sample that failed, the pass (or passes) with their options and
    ``[pass.verify]`` overrides, and every ``[verify]`` setting that was in force, with the
    tolerance the failing check used.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def start(self, run: RunState) -> None:
        run.snapshot = run.original

    def after_gates(self, run: RunState) -> None:
        if run.step_report is not None and (run.step_report.modified or run.silent_edit):
            run.snapshot = run.light()

    def on_failure(self, run: RunState, outcome: Outcome, message: str) -> str | None:
        snapshot = run.snapshot if run.step is not None else run.original
        steps = [run.step] if run.step is not None else list(run.pipeline.steps)
        return self._write(
            run, snapshot, steps, _failing_feeds(run, outcome), outcome.numbers, message
        )

    def on_original_failure(
        self, run: RunState, feeds: dict[str, np.ndarray], message: str
    ) -> str | None:
        """The original itself fails (ORT crashed on it): the original, the inputs it crashed on, every pass."""
        return self._write(run, run.original, list(run.pipeline.steps), feeds, {}, message)

    def _write(
        self,
        run: RunState,
        snapshot: Any,
        steps: list[Any],
        feeds: dict[str, np.ndarray],
        numbers: dict[str, Any],
        message: str,
    ) -> str | None:
        if snapshot is None:
            return None
        try:
            cfg = run.pipeline.verify
            # every gate on, with the tolerance the failing check used
            verify = dataclasses.replace(
                cfg.with_mode("each"),
                rtol=numbers.get("rtol", cfg.rtol),
                atol=numbers.get("atol", cfg.atol),
            )
            replay = dataclasses.replace(run.pipeline, steps=list(steps), verify=verify)
            write_reproducer(self.folder, snapshot, feeds, replay, message)
            return str(self.folder)
        except Exception as exc:  # the reproducer must never hide the real failure
            logger.warning("could not write the reproducer: %s", exc)
            return None


def _failing_feeds(run: RunState, outcome: Outcome) -> dict[str, np.ndarray]:
    data = run.store.get("parity")
    if data is None:
        return {}
    index = run.store.get("failing_sample", 0) if outcome.gate == "parity" else 0
    index = index if index < len(data.samples) else 0
    return dict(data.samples[index].feeds)
