"""The run report: per pass, what changed and what the gates found; printed as a table or JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from surgery.errors import one_line
from surgery.verify.compare import ArrayDiff

__all__ = ["ModelStats", "StepReport", "Report"]


@dataclasses.dataclass
class ModelStats:
    nodes: int
    initializers: int
    initializer_bytes: int
    dynamic_dims: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class StepReport:
    """What one pass did and what the gates found after it."""

    index: int
    name: str
    numerics: str
    options: dict[str, Any]
    modified: bool = False
    before: ModelStats | None = None
    after: ModelStats | None = None
    seconds: float = 0.0
    checker: str = "not run"
    ort: str = "not run"
    parity: list[ArrayDiff] = dataclasses.field(default_factory=list)
    parity_status: str = "not run"
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def worst(self) -> ArrayDiff | None:
        finite = [d for d in self.parity]
        if not finite:
            return None
        return max(finite, key=lambda d: (not d.ok, d.max_abs if math.isfinite(d.max_abs) else 1e300))

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "numerics": self.numerics,
            "options": _jsonable(self.options),
            "modified": self.modified,
            "before": self.before.to_dict() if self.before else None,
            "after": self.after.to_dict() if self.after else None,
            "seconds": round(self.seconds, 4),
            "checker": self.checker,
            "ort": self.ort,
            "parity_status": self.parity_status,
            "parity": [d.to_dict() for d in self.parity],
            "stats": _jsonable(self.stats),
            "notes": self.notes,
        }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        if isinstance(obj, float) and not math.isfinite(obj):
            return str(obj)
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@dataclasses.dataclass
class Report:
    """The whole run: inputs used, the oracle, each step, the files written."""

    source: str = ""
    oracle: str = "not run"
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)
    initial: ModelStats | None = None
    steps: list[StepReport] = dataclasses.field(default_factory=list)
    final_checks: list[str] = dataclasses.field(default_factory=list)
    outputs: list[str] = dataclasses.field(default_factory=list)
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    models: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Models produced besides the main one (chained parts, artifacts); saved by the API, not in JSON."""
    chained: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Sections other features add (e.g. ``atc`` commands, ``buckets``)."""
    seconds: float = 0.0
    ok: bool = True
    error: str | None = None

    @property
    def modified(self) -> bool:
        return any(s.modified for s in self.steps)

    def step(self, name: str) -> StepReport:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "error": self.error,
            "oracle": self.oracle,
            "inputs": self.inputs,
            "initial": self.initial.to_dict() if self.initial else None,
            "steps": [s.to_dict() for s in self.steps],
            "final_checks": self.final_checks,
            "outputs": self.outputs,
            "artifacts": self.artifacts,
            "notes": self.notes,
            "seconds": round(self.seconds, 4),
            **_jsonable(self.extra),
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def table(self) -> str:
        """A fixed-width table, one row a pass, then inputs and notes."""
        head = ("#", "pass", "changed", "nodes", "inits", "weights", "dyn dims", "time", "checker", "ort", "parity")
        rows = [head]
        if self.initial:
            i = self.initial
            rows.append(("0", "(input)", "", str(i.nodes), str(i.initializers), _size(i.initializer_bytes),
                         str(i.dynamic_dims), "", "", "", ""))
        for s in self.steps:
            a = s.after or s.before
            parity = s.parity_status
            worst = s.worst()
            if worst is not None and worst.problem is None and parity not in ("not run", "off"):
                parity = f"{parity} (max abs {worst.max_abs:.2g})"
            rows.append((
                str(s.index), s.name, "yes" if s.modified else "no",
                _delta(s.before.nodes if s.before else None, a.nodes if a else None),
                _delta(s.before.initializers if s.before else None, a.initializers if a else None),
                _size(a.initializer_bytes) if a else "",
                str(a.dynamic_dims) if a else "",
                f"{s.seconds:.2f}s", s.checker, s.ort, parity,
            ))
        widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        lines.append(f"parity oracle: {self.oracle}")
        for name, how in self.inputs.items():
            lines.append(f"input {name}: {how}")
        for s in self.steps:
            for note in s.notes:
                lines.append(f"{s.name}: {note}")
        for check in self.final_checks:
            lines.append(check)
        for note in self.notes:
            lines.append(note)
        for out in self.outputs:
            lines.append(f"wrote {out}")
        for name, path in self.artifacts.items():
            lines.append(f"wrote {name}: {path}")
        # input names and notes come from the model: one printable line each
        return "\n".join(one_line(line) for line in lines)


def _delta(before: int | None, after: int | None) -> str:
    if after is None:
        return ""
    if before is None or before == after:
        return str(after)
    return f"{after} ({after - before:+d})"
