"""What a check reports: :class:`Finding` (one problem, with its nodes and fix) and :class:`DoctorReport`."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

__all__ = ["DoctorReport", "Finding", "Severity"]


class Severity(str, enum.Enum):
    """How bad a finding is for ATC, worst first."""

    WILL_FAIL = "will-fail"
    """ATC stops on it, or the compiled model cannot compute what ONNX defines (documented as unsupported)."""
    SLOW = "slow"
    """ATC compiles it, but onto slow kernels (AICPU) or with a documented fallback."""
    PRECISION_RISK = "precision-risk"
    """ATC compiles it, but documents a behaviour that can differ from ONNX semantics."""
    INFO = "info"
    """Worth knowing; nothing to fix unless the deployment needs it."""

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls(text)
        except ValueError:
            raise ValueError(
                f"unknown severity {text!r}; expected one of {', '.join(s.value for s in cls)}"
            ) from None


_RANK = {Severity.WILL_FAIL: 0, Severity.SLOW: 1, Severity.PRECISION_RISK: 2, Severity.INFO: 3}


@dataclasses.dataclass
class Finding:
    """One problem found by one check.

    Attributes:
        check: the check's name (``opset``, ``maxpool-indices`` …).
        severity: see :class:`Severity`.
        title: one line saying what is wrong (``Conv is not registered at opset 20``).
        nodes: the nodes (or tensors, for graph-level findings) concerned, as labels.
        why: what ATC does with it and what the fact rests on.
        fix: the passes that fix it, in pipeline order (empty: no pass does).
        fix_note: how the fix applies, or why nothing fixes it.
        source: where the fact comes from (a shipped-data source name).
        details: machine-readable extras for ``--json`` (op type, opset, SoCs …).
    """

    check: str
    severity: Severity
    title: str
    nodes: list[str]
    why: str
    fix: list[str] = dataclasses.field(default_factory=list)
    fix_note: str = ""
    source: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity.value,
            "title": self.title,
            "nodes": list(self.nodes),
            "why": self.why,
            "fix": list(self.fix),
            "fix_note": self.fix_note,
            "source": self.source,
            "details": self.details,
        }


@dataclasses.dataclass
class DoctorReport:
    """All findings on one model, worst first, plus what the run looked at."""

    findings: list[Finding]
    model: str = ""
    soc: str | None = None
    soc_family: str | None = None
    opsets: dict[str, int] = dataclasses.field(default_factory=dict)
    node_count: int = 0
    data_sources: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Library warnings caught while diagnosing (see :mod:`surgery.libwarnings`)."""

    def __post_init__(self) -> None:
        self.findings.sort(key=lambda f: (f.severity.rank, f.check, f.title))

    def by_severity(self, severity: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity is severity]

    @property
    def will_fail(self) -> bool:
        return any(f.severity is Severity.WILL_FAIL for f in self.findings)

    @property
    def exit_code(self) -> int:
        """0 when nothing will fail, 1 when something will."""
        return 1 if self.will_fail else 0

    def counts(self) -> dict[str, int]:
        return {s.value: len(self.by_severity(s)) for s in Severity}

    def checks(self) -> set[str]:
        return {f.check for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "soc": self.soc,
            "soc_family": self.soc_family,
            "opsets": self.opsets,
            "node_count": self.node_count,
            "summary": self.counts(),
            "will_fail": self.will_fail,
            "findings": [f.to_dict() for f in self.findings],
            "data_sources": self.data_sources,
            "warnings": self.warnings,
        }
