"""``fix-shapes``: give graph inputs concrete shapes (ATC, onnxsim, Polygraphy or TOML syntax)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import onnx_ir as ir

from surgery.errors import InputError, PassError, PipelineError
from surgery.graph import iter_graphs
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
from surgery.shapes.dims import is_known_dim, is_static_shape
from surgery.shapes.spec import MAX_DIM, parse_shapes

__all__ = ["FixShapes", "substitute_dims"]


_AXIS_KEY = re.compile(r"^(?P<name>.+)\[(?P<axis>-?\d+)\]$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNNAMED = ("", "?", None)


def _dim_name(dim: object) -> str | None:
    """The name of a symbolic dim, or None for an unnamed one (``?``, empty, ``-1``)."""
    if isinstance(dim, ir.SymbolicDim) and dim.value not in _UNNAMED:
        return dim.value
    return None


def _real_inputs(model: ir.Model) -> dict[str, ir.Value]:
    inits = model.graph.initializers
    return {v.name: v for v in model.graph.inputs if v.name and v.name not in inits}


@dataclasses.dataclass
class _Plan:
    shapes: dict[str, ir.Shape]
    bindings: dict[str, int]


_EXPR_CACHE: dict[tuple[str, tuple[tuple[str, int], ...]], object] = {}


def _eval_dim(dim: ir.SymbolicDim, bindings: Mapping[str, int]) -> int | ir.SymbolicDim:
    text = dim.value
    if text in _UNNAMED:
        return dim
    if _IDENT.match(text):
        return bindings.get(text, dim)
    key = (text, tuple(sorted(bindings.items())))
    if key not in _EXPR_CACHE:
        try:
            if dim.free_symbols() <= set(bindings):
                _EXPR_CACHE[key] = dim.evaluate(bindings)
            else:
                _EXPR_CACHE[key] = dim
        except Exception:  # not a parseable expression: leave it
            _EXPR_CACHE[key] = dim
    result = _EXPR_CACHE[key]
    return result if isinstance(result, int) else dim


def substitute_dims(model: ir.Model, bindings: Mapping[str, int]) -> int:
    """Replace bound dim names (and expressions over them, as dynamo writes) in every annotation."""
    if not bindings:
        return 0
    changed = 0
    for graph in iter_graphs(model.graph):
        values = list(graph.inputs) + [o for n in graph for o in n.outputs] + list(graph.outputs)
        for value in values:
            shape = value.shape
            if shape is None or is_static_shape(shape):
                continue
            dims = [_eval_dim(d, bindings) if isinstance(d, ir.SymbolicDim) else d for d in shape]
            if any(is_known_dim(a) != is_known_dim(b) for a, b in zip(dims, shape, strict=True)):
                value.shape = ir.Shape(dims)
                changed += 1
    return changed


@register
class FixShapes(SurgeryPass):
    """Set concrete input shapes (ATC/onnxsim/Polygraphy syntax, tables, or dim-name bindings).

    Dim names bound here (directly in ``dims``, or by fixing an input dim that carries the name)
    are replaced everywhere the model mentions them, dynamo's dim expressions included.
    ``make-static`` then propagates the shapes through the graph.
    """

    name = "fix-shapes"
    example = 'shapes = "images:1,3,640,640"'

    @dataclasses.dataclass(frozen=True)
    class Options:
        shapes: str | dict[str, list[int]] = option(
            "",
            help="input shapes: ATC 'x:1,3,224,224;s:' (scalar 's:'), onnxsim 'x:1,3,224,224', "
            "Polygraphy 'x:[1,3,224,224]', or a table {x = [1, 3, 224, 224]}; -1 keeps a dim",
        )
        dims: dict[str, int] = option(
            default_factory=dict,
            help="dim bindings: a dim name ({batch = 1}) or an input axis ({'x[0]' = 1}, reaches unnamed ?/-1 dims)",
        )

        def __post_init__(self) -> None:
            parse_shapes(self.shapes, where="fix-shapes.shapes")
            for key, value in self.dims.items():
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int)
                    or not 0 <= value <= MAX_DIM
                ):
                    raise PipelineError(
                        f"fix-shapes.dims: '{key}' must be an integer from 0 to {MAX_DIM}, got {value!r}"
                    )
            if not self.shapes and not self.dims:
                raise PipelineError("fix-shapes: give 'shapes' or 'dims' (nothing to fix)")

    numerics = Numerics.EXACT
    statistics = declare_stats(
        inputs_fixed="graph inputs given a new shape",
        dims_bound="the symbolic dims bound, as {dim: size}",
        annotations_updated="value annotations whose bound dims were substituted",
    )

    def _plan(self, model: ir.Model) -> _Plan:
        inputs = _real_inputs(model)
        known = ", ".join(inputs) or "none"
        spec = parse_shapes(self.options.shapes, where="fix-shapes.shapes")
        for name in spec:
            if name not in inputs:
                raise InputError(
                    f"fix-shapes: the model has no input '{name}'; its inputs are: {known}"
                )
        bindings: dict[str, int] = {}
        axis_bindings: dict[tuple[str, int], int] = {}
        dim_names = {
            n
            for v in inputs.values()
            if v.shape is not None
            for d in v.shape
            if (n := _dim_name(d))
        }

        def bind(dim_name: str, size: int, why: str) -> None:
            if bindings.get(dim_name, size) != size:
                raise PassError(
                    f"dim '{dim_name}' is bound to {bindings[dim_name]} and to {size} ({why})",
                    pass_name=self.name,
                )
            bindings[dim_name] = size

        for key, size in self.options.dims.items():
            m = _AXIS_KEY.match(key)
            if m and m.group("name") in inputs:
                value = inputs[m.group("name")]
                rank = len(value.shape) if value.shape is not None else None
                axis = int(m.group("axis"))
                if rank is None:
                    raise PassError(
                        f"input '{value.name}' has unknown rank; give its full shape in 'shapes'",
                        pass_name=self.name,
                    )
                if not -rank <= axis < rank:
                    raise InputError(
                        f"fix-shapes: input '{value.name}' has rank {rank}; axis {axis} does not exist"
                    )
                axis_bindings[(value.name or "", axis % rank)] = size
            elif m:
                raise InputError(
                    f"fix-shapes: the model has no input '{m.group('name')}'; its inputs are: {known}"
                )
            elif key in dim_names:
                bind(key, size, "dims")
            else:
                listed = ", ".join(sorted(dim_names)) or "none"
                raise InputError(
                    f"fix-shapes: no input has a dim named '{key}'; the inputs' dim names are: {listed}"
                )

        planned: dict[str, list[int | ir.SymbolicDim]] = {}
        for name, value in inputs.items():
            current = list(value.shape) if value.shape is not None else None
            wanted = spec.get(name)
            if wanted is not None:
                if current is None:
                    if -1 in wanted:
                        raise PassError(
                            f"input '{name}' has unknown rank: -1 cannot keep a dim",
                            pass_name=self.name,
                        )
                    current = [ir.SymbolicDim(None)] * len(wanted)
                if len(current) != len(wanted):
                    raise PassError(
                        f"input '{name}' has rank {len(current)} (shape {_fmt(current)}), the spec gives rank "
                        f"{len(wanted)} ({list(wanted)})",
                        pass_name=self.name,
                    )
                new: list[int | ir.SymbolicDim] = []
                for axis, (cur, want) in enumerate(zip(current, wanted, strict=True)):
                    if want == -1:
                        new.append(cur)
                    elif is_known_dim(cur) and cur != want:
                        raise PassError(
                            f"input '{name}' dim {axis} is fixed to {cur}; the spec asks for {want}",
                            pass_name=self.name,
                        )
                    else:
                        if (dim_name := _dim_name(cur)) is not None:
                            bind(dim_name, want, f"input '{name}' dim {axis}")
                        new.append(want)
                planned[name] = new
            elif current is not None:
                planned[name] = current
        for (name, axis), size in axis_bindings.items():
            cur = planned[name][axis]
            if is_known_dim(cur) and cur != size:
                raise PassError(
                    f"input '{name}' dim {axis} is {cur}; dims asks for {size}", pass_name=self.name
                )
            if (dim_name := _dim_name(cur)) is not None:
                bind(dim_name, size, f"'{name}[{axis}]'")
            planned[name][axis] = size
        shapes: dict[str, ir.Shape] = {}
        for name, dims in planned.items():
            resolved = [d if is_known_dim(d) else bindings.get(_dim_name(d) or "", d) for d in dims]
            shapes[name] = ir.Shape(resolved)
        return _Plan(shapes, bindings)

    def feed_hints(self, model: ir.Model) -> FeedHints:
        plan = self._plan(model)
        return FeedHints(
            shapes={n: tuple(s) for n, s in plan.shapes.items() if is_static_shape(s)},
            dims=dict(plan.bindings),
        )

    def call(self, model: ir.Model) -> SurgeryResult:
        interface_before = interface(model)
        plan = self._plan(model)
        inputs = _real_inputs(model)
        fixed = 0
        for name, shape in plan.shapes.items():
            value = inputs[name]
            if value.shape is None or list(value.shape) != list(shape):
                value.shape = shape
                fixed += 1
        updated = substitute_dims(model, plan.bindings)
        still = [
            n
            for n, v in inputs.items()
            if v.shape is None or not all(is_known_dim(d) for d in v.shape)
        ]
        notes = [f"inputs still dynamic: {', '.join(still)}"] if still else []
        return declare_interface(
            SurgeryResult(
                model,
                modified=bool(fixed or updated),
                stats={
                    "inputs_fixed": fixed,
                    "dims_bound": dict(plan.bindings),
                    "annotations_updated": updated,
                },
                notes=notes,
            ),
            interface_before,
            model,
            "fix-shapes fixes input shapes",
        )


#: The options, also importable under their former module-level name.
FixShapesOptions = FixShapes.Options


def _fmt(dims: list[int | ir.SymbolicDim]) -> str:
    return "[" + ", ".join(str(d) if is_known_dim(d) else (_dim_name(d) or "?") for d in dims) + "]"
