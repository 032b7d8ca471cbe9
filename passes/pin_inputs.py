"""``pin-inputs``: turn graph inputs into constants with given values (scalars or arrays)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.errors import InputError, PassError, PipelineError
from surgery.options import option
from surgery.pass_base import (
    FeedHints,
    Numerics,
    SurgeryPass,
    SurgeryResult,
    declare_interface,
    declare_stats,
    interface,
)
from surgery.registry import register
from surgery.shapes.dims import is_static_shape
from surgery.verify.inputs import read_npz

__all__ = ["PinInputs"]


def _load_npz(path: str) -> dict[str, np.ndarray]:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"pin-inputs: no such .npz file: {path}")
    try:
        return {k: np.asarray(v) for k, v in read_npz(file, what="pin-inputs values").items()}
    except InputError as exc:
        raise InputError(f"pin-inputs: {exc}") from None


@register
class PinInputs(SurgeryPass):
    """Turn graph inputs into constants (e.g. a sample rate), so conditions on them can fold.

    Values are cast to the input's declared dtype (a float for an integer input must be whole)
    and must fit its declared shape. Parity runs feed the original model the same values.
    """

    name = "pin-inputs"
    example = "values = { sr = 16000 }"

    @dataclasses.dataclass(frozen=True)
    class Options:
        values: dict[str, Any] = option(
            default_factory=dict,
            help="input values: {sr = 16000, mask = [[1, 0]]} (cast to the input's dtype)",
        )
        npz: str = option(
            "",
            help="an .npz file whose arrays pin the inputs of the same names (in a passes.toml, relative to its folder)",
            path=True,
        )

        def __post_init__(self) -> None:
            for key, value in self.values.items():
                try:
                    array = np.asarray(value)
                except Exception:
                    array = np.asarray(None)
                if array.dtype.kind not in "biuf":
                    raise PipelineError(
                        f"pin-inputs.values: '{key}' must be a number or a (nested) list of numbers, got {value!r}"
                    )
            if not self.values and not self.npz:
                raise PipelineError("pin-inputs: give 'values' or 'npz' (nothing to pin)")

    numerics = Numerics.EXACT
    statistics = declare_stats(
        pinned="the inputs turned into constants, with their values (or shape and dtype)",
    )

    def _requested(self) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {}
        if self.options.npz:
            values.update(_load_npz(self.options.npz))
        for key, value in self.options.values.items():
            values[key] = np.asarray(value)
        return values

    def _plan(self, model: ir.Model) -> dict[str, np.ndarray]:
        graph = model.graph
        inputs = {v.name: v for v in graph.inputs if v.name}
        plan: dict[str, np.ndarray] = {}
        for name, raw in self._requested().items():
            value = inputs.get(name)
            if value is None:
                init = graph.initializers.get(name)
                if init is not None and init.const_value is not None:
                    continue  # already pinned (a second run); checked in call()
                real = ", ".join(n for n in inputs if n not in graph.initializers) or "none"
                raise InputError(
                    f"pin-inputs: the model has no input '{name}'; its inputs are: {real}"
                )
            plan[name] = self._convert(value, raw)
        return plan

    def _convert(self, value: ir.Value, raw: np.ndarray) -> np.ndarray:
        dtype = value.dtype
        if dtype is None:
            raise PassError(f"input '{value.name}' has no declared type", pass_name=self.name)
        try:
            np_dtype = dtype.numpy()
        except Exception:
            raise PassError(
                f"input '{value.name}' has type {dtype}, which cannot be pinned",
                pass_name=self.name,
            ) from None
        if (
            raw.dtype.kind == "f"
            and np.dtype(np_dtype).kind in "iub"
            and not np.all(np.equal(np.mod(raw, 1), 0))
        ):
            raise PassError(
                f"input '{value.name}' is {dtype.name}; the value {raw.tolist()} is not whole",
                pass_name=self.name,
            )
        array = raw.astype(np_dtype)
        if np.dtype(np_dtype).kind in "iu" and not np.array_equal(array.astype(raw.dtype), raw):
            raise PassError(
                f"the value {raw.tolist()} does not fit input '{value.name}' ({dtype.name})",
                pass_name=self.name,
            )
        shape = value.shape
        if shape is not None:
            if len(shape) != array.ndim:
                if is_static_shape(shape) and array.size == math.prod(shape):
                    array = array.reshape(list(shape))
                else:
                    raise PassError(
                        f"input '{value.name}' has rank {len(shape)}; the value has shape {list(array.shape)}",
                        pass_name=self.name,
                    )
            for axis, (want, got) in enumerate(zip(shape, array.shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise PassError(
                        f"input '{value.name}' dim {axis} is {want}; the value has {got} there",
                        pass_name=self.name,
                    )
        return np.array(array, order="C", copy=True)

    def feed_hints(self, model: ir.Model) -> FeedHints:
        return FeedHints(values=self._plan(model))

    def call(self, model: ir.Model) -> SurgeryResult:
        interface_before = interface(model)
        graph = model.graph
        plan = self._plan(model)
        # a name already turned into an initializer by an earlier run must hold the same value
        for name, raw in self._requested().items():
            if name not in plan:
                init = graph.initializers[name]
                current = init.const_value.numpy()  # type: ignore[union-attr]
                flat = np.asarray(raw).reshape(-1)
                if current.size != flat.size or not np.array_equal(
                    current.reshape(-1), flat.astype(current.dtype)
                ):
                    raise PassError(
                        f"'{name}' is already a constant with another value", pass_name=self.name
                    )
        for name, array in plan.items():
            value = next(v for v in graph.inputs if v.name == name)
            graph.inputs.remove(value)
            value.const_value = ir.Tensor(array, name=name)
            value.shape = ir.Shape(array.shape)
            if name not in graph.initializers:
                graph.register_initializer(value)
        return declare_interface(
            SurgeryResult(
                model,
                modified=bool(plan),
                stats={
                    "pinned": {
                        n: (a.tolist() if a.size <= 8 else f"{list(a.shape)} {a.dtype}")
                        for n, a in plan.items()
                    }
                },
            ),
            interface_before,
            model,
            "pin-inputs turns inputs into constants",
        )


#: The options, also importable under their former module-level name.
PinInputsOptions = PinInputs.Options
