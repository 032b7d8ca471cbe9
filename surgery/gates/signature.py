"""The signature gate: graph inputs and outputs stay as the user's code expects them.

Parity compares outputs by name, so it misses what breaks a deployment without changing a value:
inputs or outputs swapped (an ``.om`` model and every positional consumer get them swapped), an
output retyped (a Cast to float64 appended), a dim fixed. After every pass the gate compares the
names, order, element types, ranks and static dims of the graph inputs and outputs with the
signature the run expects (the original's, updated by every change a pass declared); a difference
fails unless the pass declared it in ``SurgeryResult.signature_changes``, and every declared change
is listed in the report.

Declaration keys: ``"inputs"`` / ``"outputs"`` (the list itself: names, order, count; also covers
any change to each of them), ``"input:NAME"`` / ``"output:NAME"`` (type or shape of one of them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import onnx_ir as ir

from surgery.gates.base import BaseGate, Outcome, Schedule
from surgery.gates.state import RunState
from surgery.pipeline import Step
from surgery.shapes.dims import is_known_dim

__all__ = ["Signature", "SignatureGate", "signature", "signature_diff"]

Port = tuple[str, str, Any]  # name, element type, dims (None: unknown rank; "?" for a symbolic dim)


@dataclasses.dataclass(frozen=True)
class Signature:
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]


def _port(value: ir.Value) -> Port:
    dtype = value.dtype.name.lower() if value.dtype is not None else "?"
    dims = (
        None if value.shape is None else tuple(d if is_known_dim(d) else "?" for d in value.shape)
    )
    return (value.name or "", dtype, dims)


def signature(
    model: ir.Model,
    chained: Mapping[str, ir.Model] | None = None,
    expected: Signature | None = None,
) -> Signature:
    """The model's signature; with ``chained`` models, that of the whole chain.

    A chain's outputs are the expected outputs, each taken from the last model that produces it
    (the tensors passed between the parts are not part of the signature).
    """
    inits = model.graph.initializers
    inputs = tuple(_port(v) for v in model.graph.inputs if v.name not in inits)
    if not chained:
        return Signature(inputs, tuple(_port(v) for v in model.graph.outputs))
    produced: dict[str, Port] = {}
    for part in (model, *chained.values()):
        for v in part.graph.outputs:
            produced[v.name or ""] = _port(v)
    names = [p[0] for p in expected.outputs] if expected is not None else list(produced)
    return Signature(inputs, tuple(produced[n] for n in names if n in produced))


def _shape_text(dims: Any) -> str:
    return "unknown rank" if dims is None else "[" + ", ".join(str(d) for d in dims) + "]"


def _side(kind: str, old: tuple[Port, ...], new: tuple[Port, ...]) -> list[tuple[str, str]]:
    singular = kind[:-1]
    diffs: list[tuple[str, str]] = []
    old_names, new_names = [p[0] for p in old], [p[0] for p in new]
    if old_names != new_names:
        if sorted(old_names) == sorted(new_names):
            diffs.append((kind, f"graph {kind} reordered: {old_names} -> {new_names}"))
        else:
            removed = [n for n in old_names if n not in new_names]
            added = [n for n in new_names if n not in old_names]
            diffs.append((kind, f"graph {kind} changed: removed {removed}, added {added}"))
    before = {p[0]: p for p in old}
    for name, dtype, dims in new:
        if name not in before:
            continue
        _, old_dtype, old_dims = before[name]
        if dtype != old_dtype:
            diffs.append(
                (f"{singular}:{name}", f"{singular} '{name}': element type {old_dtype} -> {dtype}")
            )
        if old_dims is not None and (dims is None or len(dims) != len(old_dims)):
            diffs.append(
                (
                    f"{singular}:{name}",
                    f"{singular} '{name}': rank {len(old_dims)} -> "
                    f"{'unknown' if dims is None else len(dims)}",
                )
            )
        elif old_dims is not None and dims is not None and old_dims != dims:
            diffs.append(
                (
                    f"{singular}:{name}",
                    f"{singular} '{name}': shape {_shape_text(old_dims)} -> {_shape_text(dims)}",
                )
            )
    return diffs


def signature_diff(old: Signature, new: Signature) -> list[tuple[str, str]]:
    """``(declaration key, description)`` of every difference from ``old`` to ``new``."""
    return _side("inputs", old.inputs, new.inputs) + _side("outputs", old.outputs, new.outputs)


def _covered(key: str, declared: Mapping[str, str]) -> bool:
    if key in declared:
        return True
    if ":" in key:
        side = key.split(":", 1)[0] + "s"
        return side in declared
    return False


def _refines(key: str, old: Signature, new: Signature) -> bool:
    """True when ``key`` is an output whose only change is dynamic dims becoming static."""
    if not key.startswith("output:"):
        return False
    name = key.split(":", 1)[1]
    before = {p[0]: p for p in old.outputs}.get(name)
    after = {p[0]: p for p in new.outputs}.get(name)
    if (
        before is None
        or after is None
        or before[1] != after[1]
        or before[2] is None
        or after[2] is None
    ):
        return False
    if len(before[2]) != len(after[2]):
        return False
    return all(a == b or a == "?" for a, b in zip(before[2], after[2], strict=True))


def _inputs_fixed_by_the_pipeline(old: Signature, hints: Any) -> bool:
    """Every graph input with a dynamic dim is given a shape (or a value) by a pass of the pipeline
    (``fix-shapes`` later on, ``pin-inputs``): the parity samples are fed at the shapes the
    pipeline deploys, so what the original computes on them is what the deployed model must."""
    if hints is None:
        return False
    shapes, values = getattr(hints, "shapes", {}), getattr(hints, "values", {})
    dynamic = [name for name, _, dims in old.inputs if dims is None or "?" in dims]
    return bool(dynamic) and all(name in shapes or name in values for name in dynamic)


def _constant_in_the_original(key: str, old: Signature, new: Signature, parity: Any) -> bool:
    """True when ``key`` is an output whose only change is dynamic dims becoming static, at sizes
    the original computed on every parity sample, one of them at a second size of the model's
    symbolic input dims: the dim never depended on them (an STFT's bins), so fixing it is a
    refinement. A size baked in for the guessed batch differs at the second size, and is refused.
    Without a second size, the samples must be at the shapes the pipeline fixes its inputs to (a
    later ``fix-shapes``): the refinement then holds for the model as deployed."""
    if parity is None or not _refines(key, old, new):
        return False
    samples = getattr(parity, "samples", [])
    if not any(
        getattr(s, "name", "") == "second size" for s in samples
    ) and not _inputs_fixed_by_the_pipeline(old, getattr(parity, "hints", None)):
        return False
    name = key.split(":", 1)[1]
    before = {p[0]: p for p in old.outputs}[name][2]
    after = {p[0]: p for p in new.outputs}[name][2]
    arrays = [ref.get(name) for ref in getattr(parity, "references", [])]
    if len(arrays) != len(samples) or any(
        getattr(a, "shape", None) is None or len(a.shape) != len(after) for a in arrays
    ):
        return False
    return all(
        int(a.shape[axis]) == int(after[axis])
        for a in arrays
        for axis, dim in enumerate(before)
        if dim == "?" and after[axis] != "?"
    )


class SignatureGate(BaseGate):
    """Graph inputs/outputs: names, order, element types, ranks, static dims (see the module docstring)."""

    name = "signature"
    start_order = 1  # after the parity gate has corrected the original's shapes from execution

    def when(self, run: RunState, step: Step | None) -> Schedule:
        sv = step.verify.signature if step is not None else None
        return Schedule(sv or run.pipeline.verify.signature)

    def start(self, run: RunState) -> None:
        run.store[self.name] = signature(run.model)

    def check(self, state: RunState) -> Outcome:
        expected: Signature = state.store[self.name]
        now = signature(state.model, state.chained, expected)
        declared = dict(state.result.signature_changes) if state.result is not None else {}
        if state.at_end:
            for step in state.report.steps:
                declared.update(step.signature_changes)
        diffs = signature_diff(expected, now)
        # once a pass declared its inputs' shapes fixed, output dims that were dynamic may become
        # static: a refinement that follows from the declared change, not a new one
        inputs_fixed = state.store.get("signature:inputs-fixed", False) or any(
            k == "inputs" or k.startswith("input:") for k in declared
        )
        if inputs_fixed and not state.at_end:
            state.store["signature:inputs-fixed"] = True
        parity = state.store.get("parity")
        undeclared = [
            (k, text)
            for k, text in diffs
            if not _covered(k, declared)
            and not (inputs_fixed and _refines(k, expected, now))
            and not _constant_in_the_original(k, expected, now, parity)
        ]
        numbers = {"declared": declared, "changes": [text for _, text in diffs]}
        if undeclared:
            key, text = undeclared[0]
            more = (
                f"; {len(undeclared) - 1} more signature change(s)" if len(undeclared) > 1 else ""
            )
            return Outcome.failed(
                self.name,
                f"signature gate: {text}, not declared by the pass (SurgeryResult.signature_changes){more}",
                numbers=numbers,
                tensor=key.split(":", 1)[-1],
            )
        if not state.at_end:
            state.store[self.name] = now
        refined = sum(1 for k, _ in diffs if not _covered(k, declared))
        parts = [f"{len(diffs) - refined} declared"] * bool(len(diffs) - refined) + [
            f"{refined} refined"
        ] * bool(refined)
        label = "ok" if not diffs else f"ok ({', '.join(parts)})"
        notes = [f"declares signature change: {text}" for _, text in diffs]
        return Outcome.passed(self.name, label, numbers=numbers, notes=notes)
