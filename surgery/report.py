"""The run report: per pass, what changed and what each gate found; printed as a table or JSON.

Each step keeps one :class:`~surgery.gates.base.Outcome` per gate (status, numbers, samples,
branches, time); the ``checker`` / ``ort`` / ``parity_status`` strings are views of them. The JSON
carries ``schema_version`` (2: per-gate data), the tool and dependency versions and a timestamp.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from surgery.errors import one_line
from surgery.verify.compare import ArrayDiff

if TYPE_CHECKING:  # pragma: no cover
    from surgery.gates.base import Outcome

__all__ = ["REPORT_SCHEMA_VERSION", "ModelStats", "Report", "StepReport", "envelope", "jsonable"]

REPORT_SCHEMA_VERSION = 3
"""3: every report (single run, bucket run, prepare) has the same top-level keys (:func:`envelope`),
described by ``surgery/data/report.schema.json``."""


def envelope(
    kind: str,
    *,
    source: str,
    ok: bool,
    error: str | None,
    outputs: list[str],
    seconds: float,
    steps: list[dict[str, Any]],
    buckets: list[dict[str, Any]],
) -> dict[str, Any]:
    """The top-level keys every JSON report starts with, whatever made it.

    ``kind`` is ``single`` (one apply run: ``steps`` are its passes, ``buckets`` is empty),
    ``buckets`` (one run per size: ``steps`` is empty, each of ``buckets`` holds its own report) or
    ``prepare`` (doctor, apply, doctor: either of the two shapes inside).
    """
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": kind,
        "tool": _versions(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "ok": ok,
        "error": error,
        "outputs": outputs,
        "seconds": round(seconds, 4),
        "steps": steps,
        "buckets": buckets,
    }


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
    """The pass's own time."""
    gates: dict[str, Outcome] = dataclasses.field(default_factory=dict)
    """Gate name → its outcome after this pass, in the order the gates ran."""
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds by phase: ``pass`` and one entry per gate that ran."""
    signature_changes: dict[str, str] = dataclasses.field(default_factory=dict)
    """Changes to the graph inputs/outputs the pass declared."""
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def _label(self, gate: str) -> str:
        outcome = self.gates.get(gate)
        return outcome.label if outcome is not None else "not run"

    @property
    def checker(self) -> str:
        return self._label("checker")

    @property
    def ort(self) -> str:
        return self._label("ort")

    @property
    def parity_status(self) -> str:
        return self._label("parity")

    @property
    def signature(self) -> str:
        return self._label("signature")

    @property
    def parity(self) -> list[ArrayDiff]:
        outcome = self.gates.get("parity")
        return outcome.diffs if outcome is not None else []

    def worst(self) -> ArrayDiff | None:
        finite = list(self.parity)
        if not finite:
            return None
        return max(
            finite, key=lambda d: (not d.ok, d.max_abs if math.isfinite(d.max_abs) else 1e300)
        )

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
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "checker": self.checker,
            "ort": self.ort,
            "parity_status": self.parity_status,
            "parity": [d.to_dict() for d in self.parity],
            "gates": {name: o.to_dict() for name, o in self.gates.items()},
            "signature_changes": dict(self.signature_changes),
            "stats": _jsonable(self.stats),
            "notes": self.notes,
        }


def jsonable(obj: Any) -> Any:
    """``obj`` with every value JSON can hold (non-finite floats and arrays made plain)."""
    return _jsonable(obj)


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
    final: list[Outcome] = dataclasses.field(default_factory=list)
    """Outcomes of the gates deferred to the end of the run."""
    gate_setup: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds each gate spent before the first pass (e.g. parity's reference runs)."""
    outputs: list[str] = dataclasses.field(default_factory=list)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    """Paths of the files written besides the main model (``outputs``), by name: the models a
    pass produced (``OUT.<key>.onnx``), the split manifest, the keep_dtype file. JSON key
    ``artifacts``; the products themselves, before they are written, are in ``models``."""
    notes: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Library warnings caught during the run (onnx-ir, onnxruntime, numpy; see :mod:`surgery.libwarnings`)."""
    models: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Models (and other products) a pass returned besides the main one: chained parts and its
    ``SurgeryResult.artifacts``; saved by the API (paths in ``files``), not in JSON."""
    chained: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Sections other features add (e.g. ``atc`` commands, ``buckets``)."""
    seconds: float = 0.0
    ok: bool = True
    error: str | None = None

    @property
    def artifacts(self) -> dict[str, str]:
        """Deprecated alias of :attr:`files` (its old name; a pass's ``SurgeryResult.artifacts``
        are the products, kept in :attr:`models`). The JSON key is still ``artifacts``."""
        return self.files

    @artifacts.setter
    def artifacts(self, value: dict[str, str]) -> None:
        self.files = value

    @property
    def final_checks(self) -> list[str]:
        """One line per end-of-run gate, e.g. ``final parity: ok (1 outputs)``."""
        lines = []
        for o in self.final:
            extra = f" ({len(o.diffs)} outputs)" if o.diffs else ""
            lines.append(f"final {o.gate}: {o.label}{extra}")
        return lines

    @property
    def modified(self) -> bool:
        return any(s.modified for s in self.steps)

    def step(self, name: str) -> StepReport:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        head = envelope(
            "single",
            source=self.source,
            ok=self.ok,
            error=self.error,
            outputs=list(self.outputs),
            seconds=self.seconds,
            steps=[s.to_dict() for s in self.steps],
            buckets=[],
        )
        return {
            **head,
            "oracle": self.oracle,
            "inputs": self.inputs,
            "initial": self.initial.to_dict() if self.initial else None,
            "final_checks": self.final_checks,
            "final": [o.to_dict() for o in self.final],
            "gate_setup": {k: round(v, 4) for k, v in self.gate_setup.items()},
            "artifacts": self.files,
            "notes": self.notes,
            "warnings": self.warnings,
            **{k: v for k, v in _jsonable(self.extra).items() if k not in head and k != "warnings"},
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def table(self) -> str:
        """A fixed-width table, one row a pass, then inputs and notes."""
        gate_names: list[str] = []
        for s in self.steps:
            gate_names.extend(g for g in s.gates if g not in gate_names)
        head = (
            "#",
            "pass",
            "changed",
            "nodes",
            "inits",
            "weights",
            "dyn dims",
            "time",
            *gate_names,
        )
        rows = [head]
        if self.initial:
            i = self.initial
            rows.append(
                (
                    "0",
                    "(input)",
                    "",
                    str(i.nodes),
                    str(i.initializers),
                    _size(i.initializer_bytes),
                    str(i.dynamic_dims),
                    "",
                    *([""] * len(gate_names)),
                )
            )
        for s in self.steps:
            a = s.after or s.before
            cells = []
            for g in gate_names:
                o = s.gates.get(g)
                cell = o.label if o is not None else ""
                if g == "parity" and o is not None:
                    worst = s.worst()
                    if worst is not None and worst.problem is None and o.diffs:
                        cell = f"{cell} (max abs {worst.max_abs:.2g}) [{len(o.samples)} samples]"
                    if o.numbers.get("branches_covered"):
                        cell = f"{cell} [changed branches run {o.numbers['branches_covered']}]"
                cells.append(cell)
            gate_time = sum(v for k, v in s.timings.items() if k != "pass")
            rows.append(
                (
                    str(s.index),
                    s.name,
                    "yes" if s.modified else "no",
                    _delta(s.before.nodes if s.before else None, a.nodes if a else None),
                    _delta(
                        s.before.initializers if s.before else None, a.initializers if a else None
                    ),
                    _size(a.initializer_bytes) if a else "",
                    str(a.dynamic_dims) if a else "",
                    f"{s.seconds:.2f}s+{gate_time:.2f}s" if gate_time else f"{s.seconds:.2f}s",
                    *cells,
                )
            )
        widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        lines.append(f"parity oracle: {self.oracle}")
        for name, how in self.inputs.items():
            lines.append(f"input {name}: {how}")
        samples = self.extra.get("samples") or []
        if len(samples) > 1:
            lines.append("parity samples: " + ", ".join(str(s["name"]) for s in samples))
        for s in self.steps:
            for note in s.notes:
                lines.append(f"{s.name}: {note}")
            for text in s.signature_changes.values():
                lines.append(f"{s.name}: declared signature change: {text}")
            for gate in s.gates.values():
                for branch, taken in gate.branches.items():
                    if not taken.get("changed"):
                        continue  # unchanged branches: listed once, from the original, below
                    lines.append(
                        f"{s.name}: changed {branch} executed by: {', '.join(taken['new']) or 'no sample'}"
                        f" (original: {', '.join(taken['original']) or 'no sample'})"
                    )
            timed = ", ".join(f"{k} {v:.2f}s" for k, v in s.timings.items())
            if timed:
                lines.append(f"{s.name}: time {timed}")
        for branch, taken in (self.extra.get("branches_original") or {}).items():
            lines.append(f"original: {branch} executed by: {', '.join(taken) or 'no sample'}")
        for check in self.final_checks:
            lines.append(check)
        for note in self.notes:
            lines.append(note)
        for out in self.outputs:
            lines.append(f"wrote {out}")
        for name, path in self.files.items():
            lines.append(f"wrote {name}: {path}")
        # input names and notes come from the model: one printable line each
        return "\n".join(one_line(line) for line in lines)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("onnx-surgery", "onnx", "onnx-ir", "onnxruntime", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _delta(before: int | None, after: int | None) -> str:
    if after is None:
        return ""
    if before is None or before == after:
        return str(after)
    return f"{after} ({after - before:+d})"
