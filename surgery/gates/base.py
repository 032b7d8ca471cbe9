"""The gate interface: what every verification gate declares and returns.

Modelled on MLIR's pass instrumentation and Polygraphy's comparators: a gate is an object with a
``name``, a default ``schedule`` (run after each pass, once at the end, or never), a ``when``
method that may refine the schedule for one step (from ``[verify]`` and ``[pass.verify]``), a
``start`` hook called once before the first pass, and ``check(state) -> Outcome``. The runner
loops passes × gates over one :class:`~surgery.gates.state.RunState` and decides only from the
``Outcome.status`` enum, never from message text, so a gate written outside the core is added by
passing it in ``gates=`` (``surgery.apply(..., gates=[MyGate()])``) without touching the runner.

Instruments (progress, timing, the reproducer) are the other half of the interface: they watch
passes (``before_pass`` / ``after_pass``) and failures, and never decide anything.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from surgery.verify.compare import ArrayDiff

if TYPE_CHECKING:  # pragma: no cover
    from surgery.gates.state import RunState
    from surgery.pipeline import Step

__all__ = ["BaseGate", "BaseInstrument", "Gate", "Instrument", "Outcome", "Schedule", "Status"]


class Status(str, enum.Enum):
    """What a gate found: the only thing the runner reads to decide."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not run for this step (off, or the pass changed nothing)."""
    DEFERRED = "deferred"
    """Scheduled at the end of the run instead of after this pass."""


class Schedule(str, enum.Enum):
    EACH = "each"
    END = "end"
    OFF = "off"


@dataclasses.dataclass
class Outcome:
    """One gate's verdict on one step (or on the final model).

    ``label`` is the short text shown in the report table (e.g. ``ok``, ``FAILED``, ``at end``,
    ``no kernel (as the original)``); ``message`` the one line a failure prints; ``numbers`` the
    figures behind the verdict; ``tensor`` the output or branch it is about; ``samples`` the
    parity samples used; ``branches`` which ``If`` branches those samples executed.
    """

    gate: str
    status: Status
    label: str = ""
    message: str = ""
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)
    tensor: str | None = None
    seconds: float = 0.0
    samples: list[str] = dataclasses.field(default_factory=list)
    branches: dict[str, Any] = dataclasses.field(default_factory=dict)
    diffs: list[ArrayDiff] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = _LABELS[self.status]

    @classmethod
    def passed(cls, gate: str, label: str = "ok", **kwargs: Any) -> Outcome:
        return cls(gate, Status.PASSED, label, **kwargs)

    @classmethod
    def failed(cls, gate: str, message: str, **kwargs: Any) -> Outcome:
        return cls(gate, Status.FAILED, "FAILED", message, **kwargs)

    @classmethod
    def skipped(cls, gate: str, label: str = "off", **kwargs: Any) -> Outcome:
        return cls(gate, Status.SKIPPED, label, **kwargs)

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED

    def to_dict(self) -> dict[str, Any]:
        from surgery.report import jsonable

        return {
            "gate": self.gate,
            "status": self.status.value,
            "label": self.label,
            "message": self.message or None,
            "numbers": jsonable(self.numbers),
            "tensor": self.tensor,
            "seconds": round(self.seconds, 4),
            "samples": list(self.samples),
            "branches": jsonable(self.branches),
            "diffs": [d.to_dict() for d in self.diffs],
            "notes": list(self.notes),
        }


_LABELS = {
    Status.PASSED: "ok",
    Status.FAILED: "FAILED",
    Status.SKIPPED: "off",
    Status.DEFERRED: "at end",
}


@runtime_checkable
class Gate(Protocol):
    """A verification gate (see the module docstring)."""

    @property
    def name(self) -> str: ...  # read-only: a class attribute (BaseGate.name) satisfies it

    schedule: Schedule

    def when(self, run: RunState, step: Step | None) -> Schedule:
        """The schedule for ``step`` (None: asked before the run, "does this gate run at all?")."""
        ...

    def start(self, run: RunState) -> None:
        """Called once with the original model, before the first pass (compute references here)."""
        ...

    def check(self, state: RunState) -> Outcome:
        """Check ``state.model`` after ``state.step`` (``state.step`` is None at the end of the run)."""
        ...


class BaseGate:
    """Convenience base for gates: a fixed schedule and a no-op ``start``."""

    name: ClassVar[str] = ""
    schedule: Schedule = Schedule.EACH

    def when(self, run: RunState, step: Step | None) -> Schedule:
        del run, step
        return self.schedule

    def start(self, run: RunState) -> None:
        del run

    def check(self, state: RunState) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError


class Instrument(Protocol):
    """Watches the run: called around every pass and when a gate fails; decides nothing."""

    def start(self, run: RunState) -> None: ...

    def before_pass(self, run: RunState) -> None: ...

    def after_pass(self, run: RunState) -> None:
        """Right after the pass returned, before any gate."""
        ...

    def after_gates(self, run: RunState) -> None:
        """After the step's gates passed."""
        ...

    def on_failure(self, run: RunState, outcome: Outcome, message: str) -> str | None:
        """Return a reproducer folder if this instrument wrote one."""
        ...


class BaseInstrument:
    def start(self, run: RunState) -> None:
        del run

    def before_pass(self, run: RunState) -> None:
        del run

    def after_pass(self, run: RunState) -> None:
        del run

    def after_gates(self, run: RunState) -> None:
        del run

    def on_failure(self, run: RunState, outcome: Outcome, message: str) -> str | None:
        del run, outcome, message
        return None
