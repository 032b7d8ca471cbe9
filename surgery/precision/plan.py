"""A float32 keep-list for ATC: the smallest set of nodes found greedily, as a ``--keep_dtype`` file.

Greedy from the first offender: emulate the mode; while it breaks tolerance, keep in float32 the
first node (topological order) that overflows float16 — in its own result or in the rounding of an
input a kept producer hands it — else the first float16 node whose result breaks tolerance, else the
nearest float16 node upstream of a breaking float32 one; then re-emulate. Each round keeps twice as
many of those offenders as the last (1, 2, 4 … up to :data:`MAX_BATCH`), so that error spread over
hundreds of nodes needs a few dozen re-emulations, not hundreds. A final sweep then drops, one at a
time, any node whose removal still meets tolerance (one re-check each, at most :data:`MAX_PRUNE`). A plan that runs out of candidates is reported as
not meeting tolerance rather than returned as a fix.

ATC reads ``--keep_dtype`` by node name, and its graph fusions rename or absorb nodes (Conv+BN+ReLU,
MatMul+Add, LayerNorm and Softmax sub-graphs become single kernels); a listed name that no longer
exists after fusion is silently ignored. :func:`fusion_risks` names the kept op types at risk, and
where every node of an op type must stay, the file says ``OpType::<Ascend type>`` instead, which
survives renaming.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path

from surgery.errors import InputError
from surgery.precision.emulate import Emulation, Emulator, Mode

__all__ = [
    "FUSED_OPS",
    "PrecisionPlan",
    "fusion_risks",
    "is_listable",
    "keep_dtype_lines",
    "keep_dtype_text",
    "make_plan",
    "write_keep_dtype",
]

#: ONNX op types ATC commonly fuses into a bigger kernel (the listed node's name may not survive).
FUSED_OPS: dict[str, str] = {
    "BatchNormalization": "folded into Conv (Conv+BN[+ReLU] fusion)",
    "Relu": "fused into the preceding Conv/MatMul",
    "Add": "fused as the bias of a MatMul/Conv, or into a LayerNorm",
    "Mul": "fused into LayerNorm/Gelu/Swish patterns",
    "MatMul": "fused with a following Add into a biased MatMul (MatMulV2/BatchMatMulV2)",
    "ReduceMean": "fused with Sub/Pow/Sqrt/Div into LayerNorm",
    "Pow": "fused into LayerNorm",
    "Sqrt": "fused into LayerNorm",
    "Div": "fused into LayerNorm or Softmax",
    "Sub": "fused into LayerNorm",
    "Exp": "fused with ReduceSum/Div into Softmax",
    "ReduceSum": "fused with Exp/Div into Softmax",
    "Erf": "fused into Gelu",
    "Sigmoid": "fused into Swish/SiLU",
    "Transpose": "fused into a neighbouring MatMul (transpose flags) or TransData",
    "Reshape": "removed or merged by shape fusion",
}


@dataclasses.dataclass
class PrecisionPlan:
    """What to keep in float32 and what the emulation said before and after."""

    mode: Mode
    keep: list[str]
    """Node labels in the order they were added."""
    op_types: dict[str, str]
    """Label → ONNX op type, for the kept nodes."""
    before: Emulation
    after: Emulation

    @property
    def meets_tolerance(self) -> bool:
        return self.after.ok

    def to_dict(self) -> dict:
        return {
            "mode": self.mode.value,
            "keep": list(self.keep),
            "meets_tolerance": self.meets_tolerance,
            "fusion_risks": fusion_risks(self),
        }


def make_plan(
    emulator: Emulator, *, first: Emulation | None = None, max_steps: int | None = None
) -> PrecisionPlan:
    """Greedy keep-list for ``emulator``'s mode (see the module docstring); ``first`` is its run without one."""
    before = first if first is not None else emulator.run()
    keep: list[str] = []
    run = before
    steps = max_steps if max_steps is not None else len(emulator.nodes)
    batch = 1  # offenders kept per re-emulation: 1, 2, 4 … while the mode still breaks tolerance
    while not run.ok and len(keep) < steps:
        lowered = emulator.fp16_set(keep)
        labels = {label for label, low in zip(emulator.labels, lowered, strict=True) if low}
        offenders = _offenders(emulator, run, set(keep), labels, min(batch, steps - len(keep)))
        if not offenders:
            break
        keep.extend(offenders)
        run = emulator.run(keep)
        batch = min(batch * 2, MAX_BATCH)
    if run.ok and len(keep) > 1:
        # prune: drop any node the others make unnecessary (one re-check each; latest additions first,
        # as the batches took more than the first offender each time)
        for label in list(reversed(keep))[:MAX_PRUNE]:
            trial = [k for k in keep if k != label]
            trial_run = emulator.run(trial)
            if trial_run.ok:
                keep, run = trial, trial_run
    types = {
        label: node.op_type for label, node in zip(emulator.labels, emulator.nodes, strict=True)
    }
    return PrecisionPlan(
        mode=emulator.mode,
        keep=keep,
        op_types={k: types[k] for k in keep},
        before=before,
        after=run,
    )


#: Most offenders kept per re-emulation: the greedy step doubles while the mode still breaks
#: tolerance (error spread over many nodes, as in a deep Paddle model, needs many), up to this.
MAX_BATCH = 32
#: Most single-node re-checks of the final prune (each is one emulation of the whole model).
MAX_PRUNE = 16


def _offenders(
    emulator: Emulator, run: Emulation, kept: set[str], lowered: set[str], limit: int
) -> list[str]:
    """Up to ``limit`` nodes to keep next, in :func:`_first_offender`'s order of priority."""
    found: list[str] = []
    while len(found) < limit:
        label = _first_offender(emulator, run, kept | set(found), lowered - set(found))
        if label is None:
            break
        found.append(label)
    return found


def _first_offender(
    emulator: Emulator, run: Emulation, kept: set[str], lowered: set[str]
) -> str | None:
    for s in run.overflows:
        if s.node in lowered and s.node not in kept:
            return s.node
    tol = run.tolerance
    breaking = [s for s in run.ranked if s.breaks(tol)]
    for s in breaking:
        if s.node in lowered and s.node not in kept:
            return s.node
    # every breaking tensor comes from a float32 node: its error was handed to it by float16 inputs,
    # so keep the nearest float16 node upstream (e.g. the float16 logits an ArgMax reads)
    for s in breaking:
        upstream = _nearest_lowered_producer(emulator, s.index, kept, lowered)
        if upstream is not None:
            return upstream
    return None


def _nearest_lowered_producer(
    emulator: Emulator, index: int, kept: set[str], lowered: set[str]
) -> str | None:
    if index < 0:
        return None
    position = {id(node): i for i, node in enumerate(emulator.nodes)}
    frontier = [index]
    seen = {index}
    while frontier:
        nxt: list[int] = []
        for i in frontier:
            for v in emulator.nodes[i].inputs:
                producer = v.producer() if v is not None else None
                j = position.get(id(producer)) if producer is not None else None
                if j is None or j in seen:
                    continue
                seen.add(j)
                label = emulator.labels[j]
                if label in lowered and label not in kept:
                    return label
                nxt.append(j)
        frontier = sorted(nxt, reverse=True)
    return None


def keep_dtype_lines(
    plan: PrecisionPlan, emulator: Emulator, *, cann_types: dict[str, str] | None = None
) -> list[str]:
    """The ``--keep_dtype`` file's lines: node names, or ``OpType::X`` where every node of a type is kept.

    ``cann_types`` maps an ONNX op type to its Ascend IR type (from the shipped fact table); a
    whole-type line is written only when that type is known and at least two nodes of it are kept.
    """
    total = Counter(node.op_type for node in emulator.nodes)
    kept = Counter(plan.op_types.values())
    whole = {
        op for op, n in kept.items() if n >= 2 and n == total[op] and (cann_types or {}).get(op)
    }
    lines: list[str] = []
    for op in sorted(whole):
        lines.append(f"OpType::{cann_types[op]}")  # type: ignore[index]
    for label in plan.keep:
        if plan.op_types[label] in whole or not is_listable(label):
            continue
        lines.append(label)
    return lines


def is_listable(label: str) -> bool:
    """Whether ATC's ``--keep_dtype`` can name the node (it has a name, on one line)."""
    return bool(label) and not label.startswith("<") and "\n" not in label and "\r" not in label


def fusion_risks(plan: PrecisionPlan) -> dict[str, str]:
    """Kept nodes whose op type ATC may fuse away (their name then has no effect), with the fusion."""
    return {label: FUSED_OPS[op] for label, op in plan.op_types.items() if op in FUSED_OPS}


def keep_dtype_text(lines: list[str]) -> str:
    """The ``--keep_dtype`` file's text: one entry a line; a name holding a line break is refused."""
    for line in lines:
        if "\n" in line or "\r" in line:
            raise InputError(
                f"precision: node name {line!r} contains a line break; --keep_dtype cannot list it"
            )
    return "".join(f"{line}\n" for line in lines)


def write_keep_dtype(path: str | os.PathLike, lines: list[str]) -> Path:
    """Write the keep_dtype file atomically (a temporary file renamed over the target), for Python
    callers that manage their own files; the commands stage it in their write plan instead."""
    from surgery.writeplan import write_text_file

    return write_text_file(path, keep_dtype_text(lines), "keep_dtype file")
