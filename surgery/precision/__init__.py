"""What ATC's float16 precision modes will compute, found before the device: diagnosis and a keep-list.

ATC's default on the inference SoCs is float16 (``--precision_mode=force_fp16``, ``--precision_mode_v2=fp16``):
every gate that compares float32 with float32 says nothing about it. :func:`check_precision` emulates
the mode node by node beside the float32 reference (:mod:`surgery.precision.emulate`), names the
tensors that overflow, flush to zero or first break tolerance, and, when the mode breaks tolerance,
plans the nodes to keep in float32 (:mod:`surgery.precision.plan`) and re-checks the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.pass_base import FeedHints, Tolerance
from surgery.precision.emulate import (
    DEFAULT_TOLERANCE,
    FP16_MAX,
    Emulation,
    Emulator,
    Mode,
    TensorStats,
)
from surgery.precision.plan import (
    PrecisionPlan,
    fusion_risks,
    is_listable,
    keep_dtype_lines,
    keep_dtype_text,
    make_plan,
    write_keep_dtype,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "FP16_MAX",
    "Emulation",
    "Emulator",
    "Mode",
    "PrecisionPlan",
    "PrecisionReport",
    "check_precision",
    "keep_dtype_text",
    "make_samples",
    "write_keep_dtype",
]


@dataclasses.dataclass
class PrecisionReport:
    """The emulation of one mode and, when it breaks tolerance, the plan that fixes it."""

    emulation: Emulation
    plan: PrecisionPlan | None
    keep_dtype: list[str]
    """The ``--keep_dtype`` file's lines (empty when nothing needs float32)."""
    node_count: int

    @property
    def ok(self) -> bool:
        """The mode as asked (no keep-list) meets tolerance."""
        return self.emulation.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "node_count": self.node_count,
            "emulation": self.emulation.to_dict(),
            "plan": None
            if self.plan is None
            else {**self.plan.to_dict(), "after": self.plan.after.to_dict()},
            "keep_dtype": list(self.keep_dtype),
        }

    def lines(self) -> list[str]:
        """The human-readable diagnosis, one finding a line."""
        em, tol = self.emulation, self.emulation.tolerance
        head = (
            f"precision: mode {em.mode.value} (--precision_mode={em.mode.v1}), {em.samples} sample(s), "
            f"{em.fp16_nodes} of {self.node_count} nodes in float16, tolerance rtol={tol.rtol:g} atol={tol.atol:g}"
        )
        out = [head]
        for name, s in em.outputs.items():
            verdict = "BREAKS tolerance" if s.breaks(tol) else "ok"
            extra = f", {s.nonfinite} non-finite value(s)" if s.nonfinite else ""
            if s.mismatched:
                out.append(
                    f"output {name}: {s.mismatched} element(s) differ from float32 (a non-float output): {verdict}"
                )
                continue
            err = "inf" if s.nonfinite else f"{s.max_abs_err:.3g}"
            out.append(
                f"output {name}: float16 max abs err {err} (allowed {s.allowed(tol):.3g}, "
                f"{_times(s.how_far(tol))} the tolerance){extra}: {verdict}"
            )
        for s in em.overflows:
            out.append("overflow: " + _overflow_text(s))
        for s in em.flushes:
            if s.input_flush:
                out.append(
                    f"flush to zero: tensor '{s.input_flush}' becomes all 0 in float16 when {s.op} '{s.node}' "
                    f"reads it (|x| < {2.0**-24:.2g})"
                )
                continue
            out.append(
                f"flush to zero: tensor '{s.name}' ({s.op} '{s.node}'): {s.flushed} of {s.nonzero} nonzero "
                f"values ({100 * s.flush_fraction:.1f}%) become 0 in float16"
            )
        if em.overflows and em.outputs_ok:
            out.append(
                f"verdict: BREAKS: {len(em.overflows)} tensor(s) overflow float16 although the outputs "
                "stay within tolerance on these samples (the overflow is hidden, not harmless)"
            )
        if em.first_break is not None:
            s = em.first_break
            err = "inf" if s.nonfinite else f"{s.max_abs_err:.3g}"
            out.append(
                f"first past tolerance: tensor '{s.name}' ({s.op} '{s.node}'): max abs err "
                f"{err}, {_times(s.how_far(tol))} the tolerance"
            )
        if self.plan is not None:
            plan = self.plan
            out.append(
                f"plan: keep {len(plan.keep)} node(s) in float32: {', '.join(plan.keep) or '(none)'}"
            )
            after = plan.after
            worst = max((s.how_far(tol) for s in after.outputs.values()), default=0.0)
            out.append(
                f"plan check: re-emulated with the plan, outputs "
                f"{'meet' if after.ok else 'still break'} tolerance (worst {_times(worst)} the tolerance)"
            )
            unnamed = [label for label in plan.keep if not is_listable(label)]
            if unnamed:
                out.append(
                    f"warning: {len(unnamed)} node(s) to keep have no name --keep_dtype can list "
                    f"({', '.join(unnamed)}): name the model's nodes, or the plan is incomplete on the device"
                )
            norms = [label for label in plan.keep if plan.op_types[label] == "LayerNormalization"]
            if norms:
                out.append(
                    f"warning: ATC's LayerNormalization takes float16 only: --keep_dtype cannot hold "
                    f"{', '.join(norms)} in float32; decompose it (convert-opset target = 16) and re-plan"
                )
            risks = fusion_risks(plan)
            if risks:
                listed = "; ".join(
                    f"'{label}' ({plan.op_types[label]}: {why})" for label, why in risks.items()
                )
                out.append(
                    "warning: ATC's fusions can rename or absorb nodes, and a --keep_dtype name that no longer "
                    f"exists has no effect; at risk here: {listed}"
                )
        return out


def _times(x: float) -> str:
    return "inf x" if not np.isfinite(x) else f"{x:.3g}x"


def _overflow_text(s: TensorStats) -> str:
    if s.overflow_absmax:
        return (
            f"tensor '{s.name}' ({s.op} '{s.node}'): |x| up to {s.overflow_absmax:.4g} > {FP16_MAX:g} "
            f"({s.overflow_absmax / FP16_MAX:.3g}x the float16 range)"
        )
    return f"tensor '{s.input_overflow}' overflows float16 when {s.op} '{s.node}' reads it (|x| > {FP16_MAX:g})"


def make_samples(
    model: ir.Model,
    *,
    data: str | None = None,
    samples: int = 2,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Input samples: the arrays of ``data`` (one sample), else ``samples`` generated ones (seeds 0..n-1)."""
    from pathlib import Path

    from surgery.errors import InputError
    from surgery.verify.inputs import InputsConfig, plan_inputs

    try:
        if data is not None or arrays:
            config = InputsConfig(
                data=Path(data) if data is not None else None, arrays=dict(arrays or {})
            )
            return [plan_inputs(model, config, FeedHints()).feeds]
        return [
            plan_inputs(model, InputsConfig(), FeedHints(), seed=seed).feeds
            for seed in range(max(samples, 1))
        ]
    except ValueError as exc:  # e.g. a literal -1 dim the generator cannot size
        raise InputError(
            f"precision: cannot generate inputs for the model ({exc}): give real ones with --data "
            "(they also show float16 problems that random inputs hide)"
        ) from None


def check_precision(
    model: ir.Model,
    samples: Sequence[Mapping[str, np.ndarray]],
    *,
    mode: Mode | str = Mode.FP16,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    plan: bool = True,
) -> PrecisionReport:
    """Emulate ``mode`` on ``samples``; when it breaks tolerance (and ``plan``), plan a keep-list."""
    from surgery.doctor.facts import load_facts

    mode = mode if isinstance(mode, Mode) else Mode.parse(mode)
    emulator = Emulator(model, samples, mode=mode, tolerance=tolerance)
    first = emulator.run()
    if first.ok or not plan or mode is Mode.ORIGIN:
        return PrecisionReport(first, None, [], len(emulator.nodes))
    made = make_plan(emulator, first=first)
    facts = load_facts()
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
    cann = {}
    for op in set(made.op_types.values()):
        fact = facts.lookup("ai.onnx", op)
        ascend = _ascend_type(fact.cann_op, opset) if fact is not None else None
        if ascend:
            cann[op] = ascend
    lines = keep_dtype_lines(made, emulator, cann_types=cann)
    return PrecisionReport(first, made, lines, len(emulator.nodes))


def _ascend_type(cann_op: str, opset: int) -> str | None:
    """The Ascend IR type an ONNX op maps to at ``opset`` (``A[8-12];B[13-18]`` forms resolved), or None
    when it has none to name (a ``PartitionedCall`` subgraph, or two registrations ``A|B``)."""
    from surgery.doctor.facts import parse_opsets

    chosen = None
    for part in filter(None, (p.strip() for p in cann_op.split(";"))):
        if "[" in part:
            name, _, versions = part.partition("[")
            allowed = parse_opsets(versions.rstrip("]"))
            if allowed is not None and opset not in allowed:
                continue
            part = name
        chosen = part
        break
    if not chosen or "|" in chosen or chosen == "PartitionedCall":
        return None
    return chosen
