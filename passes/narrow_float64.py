"""narrow-float64: turn every float64 in every graph into float32.

ATC has no float64 AI Core kernels, and onnxslim's ``--dtype fp32`` skips float64 entirely.
Models get float64 from ``.double()`` modules, numpy float64 constants captured by tracing, and
pre/post-processing written in float64. This pass narrows, in the main graph, every
``If``/``Loop``/``Scan`` body and every model-local function:

- initializers and ``Constant``/``ConstantOfShape`` tensors (any tensor attribute);
- dtype attributes: ``Cast.to``, ``dtype`` of ``RandomNormal``/``RandomUniform``(``Like``)/
  ``EyeLike``/``Bernoulli``/``SequenceEmpty``, ``stash_type``, ``output_datatype``;
- the types of all values (value_info), including sequence and optional element types;
- graph inputs and outputs, unless ``keep_io = true``: then the main graph keeps its float64
  inputs and outputs and Casts at the boundary convert them.

Every ONNX op that accepts float64 through a type variable also accepts float32, so narrowing
all of them at once keeps every node's type bindings consistent; casts are only retargeted,
never removed (a ``Cast(float → int64)`` stays). A finite constant outside float32's range is an
error naming the tensor; values below float32's resolution round (to 0 or a subnormal) and are
counted in the stats. ``BitCast`` from or to float64 is refused (it reinterprets bits).

Numerics are ``approx``: float32 carries ~7 significant digits. The default tolerance is
``rtol = 1e-4, atol = 1e-5``, which holds for well-conditioned pre/post-processing and networks of
moderate depth; tighten or loosen it per pipeline. Integer values carried in float64 lose
exactness above 2**24.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.errors import PassError
from surgery.graph import GraphLike, NameAllocator, is_onnx_domain, walk
from surgery.options import option
from surgery.pass_base import (
    Numerics,
    SurgeryPass,
    SurgeryResult,
    Tolerance,
    declare_interface,
    declare_stats,
    interface,
)
from surgery.registry import register

__all__ = ["NarrowFloat64", "narrow_type"]


F64 = ir.DataType.DOUBLE
F32 = ir.DataType.FLOAT
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).smallest_subnormal)

#: INT attributes of standard ops that hold an element type.
DTYPE_ATTRS = frozenset({"to", "dtype", "output_dtype", "output_datatype", "stash_type"})


def narrow_type(tp: ir.TypeProtocol | None) -> ir.TypeProtocol | None:
    """The float32 version of a (possibly nested) float64 type, or None if it has no float64."""
    if tp is None:
        return None
    if isinstance(tp, ir.TensorType):
        return ir.TensorType(F32) if tp.dtype == F64 else None
    if isinstance(tp, ir.SequenceType):
        inner = narrow_type(tp.elem_type)
        return ir.SequenceType(inner) if inner is not None else None
    if isinstance(tp, ir.OptionalType):
        inner = narrow_type(tp.elem_type)
        return ir.OptionalType(inner) if inner is not None else None
    if isinstance(tp, ir.SparseTensorType):
        return ir.SparseTensorType(F32) if tp.dtype == F64 else None
    return None


class _Narrower:
    def __init__(self, model: ir.Model, pass_name: str) -> None:
        self.model = model
        self.pass_name = pass_name
        self.stats: dict[str, int] = {
            "initializers": 0,
            "tensor_attributes": 0,
            "dtype_attributes": 0,
            "values": 0,
            "underflowed_elements": 0,
        }
        self.protected: set[ir.Node | None] = set()

    def error(self, message: str) -> PassError:
        return PassError(message, pass_name=self.pass_name)

    def tensor(self, tensor: ir.TensorProtocol, what: str) -> ir.Tensor:
        array = tensor.numpy()
        finite = np.isfinite(array)
        if finite.any():
            peak = float(np.abs(array[finite]).max())
            if peak > _F32_MAX:
                raise self.error(
                    f"{what} holds {peak:.6g}, outside float32's range (±{_F32_MAX:.6g}); it cannot be narrowed"
                )
            lost = finite & (array != 0) & (np.abs(array) < _F32_TINY)
            self.stats["underflowed_elements"] += int(lost.sum())
        return ir.Tensor(array.astype(np.float32), name=tensor.name, doc_string=tensor.doc_string)

    def value(self, value: ir.Value | None) -> bool:
        if value is None:
            return False
        narrowed = narrow_type(value.type)
        if narrowed is None:
            return False
        value.type = narrowed
        self.stats["values"] += 1
        return True

    def node(self, node: ir.Node, opset: int | None) -> None:
        del opset
        if node in self.protected:
            return
        standard = is_onnx_domain(node.domain)
        if standard and node.op_type == "BitCast":
            src = node.inputs[0].dtype if node.inputs and node.inputs[0] is not None else None
            to = node.attributes.get("to")
            if src == F64 or (to is not None and to.value == int(F64)):
                raise self.error(
                    f"BitCast '{node.name}' reinterprets float64 bits; it cannot be narrowed"
                )
        for key, attr in list(node.attributes.items()):
            if attr.is_ref():
                continue
            if attr.type == ir.AttributeType.TENSOR:
                tensor = attr.as_tensor()
                if tensor.dtype == F64:
                    node.attributes[key] = ir.AttrTensor(
                        key,
                        self.tensor(tensor, f"attribute '{key}' of {node.op_type} '{node.name}'"),
                    )
                    self.stats["tensor_attributes"] += 1
            elif attr.type == ir.AttributeType.TENSORS:
                tensors = list(attr.as_tensors())
                if any(t.dtype == F64 for t in tensors):
                    node.attributes[key] = ir.AttrTensors(
                        key,
                        [
                            self.tensor(t, f"attribute '{key}' of {node.op_type} '{node.name}'")
                            if t.dtype == F64
                            else t
                            for t in tensors
                        ],
                    )
                    self.stats["tensor_attributes"] += 1
            elif attr.type == ir.AttributeType.SPARSE_TENSOR:
                raise self.error(
                    f"{node.op_type} '{node.name}' has a sparse tensor attribute '{key}'; not supported"
                )
            elif (
                standard
                and attr.type == ir.AttributeType.INT
                and key in DTYPE_ATTRS
                and attr.as_int() == int(F64)
            ):
                node.attributes[key] = ir.AttrInt64(key, int(F32))
                self.stats["dtype_attributes"] += 1
        for out in node.outputs:
            self.value(out)

    def graph(self, graph: GraphLike, opsets: Any) -> None:
        if isinstance(graph, ir.Graph):
            for name, value in list(graph.initializers.items()):
                tensor = value.const_value
                if tensor is not None and tensor.dtype == F64:
                    value.const_value = self.tensor(tensor, f"initializer '{name}'")
                    self.stats["initializers"] += 1
                self.value(value)
        for node in graph:
            self.node(node, opsets.get("", None))


def _copy(shape: ir.Shape | None) -> ir.Shape | None:
    return ir.Shape(shape) if shape is not None else None


def _is_cast(node: ir.Node | None, to: ir.DataType) -> bool:
    if node is None or node.op_type != "Cast" or not is_onnx_domain(node.domain):
        return False
    attr = node.attributes.get("to")
    return attr is not None and attr.as_int() == int(to)


def _is_any_cast(node: ir.Node) -> bool:
    return node.op_type == "Cast" and is_onnx_domain(node.domain)


def _needs_input_cast(value: ir.Value) -> bool:
    """A float64 main input that a non-Cast node reads (a Cast may read float64 as it is)."""
    return any(not _is_any_cast(use.node) for use in value.uses())


def _needs_output_cast(value: ir.Value) -> bool:
    """A float64 main output not produced by a Cast (a Cast to float64 can simply stay)."""
    return not value.is_graph_input() and not _is_cast(value.producer(), F64)


@register
class NarrowFloat64(SurgeryPass):
    """Turn every float64 tensor, constant, cast and dtype attribute into float32 (in every graph)."""

    name = "narrow-float64"
    numerics = Numerics.APPROX
    default_tolerance = Tolerance(rtol=1e-4, atol=1e-5)
    statistics = declare_stats(
        initializers="float64 initializers narrowed to float32",
        tensor_attributes="float64 tensor attributes (Constant values, ...) narrowed",
        dtype_attributes="dtype attributes (Cast to, ...) changed from float64 to float32",
        values="float64 values retyped to float32",
        underflowed_elements="float64 constant elements below float32's resolution (see the notes)",
        boundary_casts="Casts added at the main graph's inputs and outputs (keep_io)",
    )

    @dataclasses.dataclass(frozen=True)
    class Options:
        keep_io: bool = option(
            False,
            help="keep float64 main-graph inputs/outputs and convert at the boundary with Casts",
        )

    def call(self, model: ir.Model) -> SurgeryResult:
        interface_before = interface(model)
        n = _Narrower(model, self.name)
        main = model.graph
        boundary_inputs: list[ir.Value] = []
        boundary_outputs: list[ir.Value] = []
        if self.options.keep_io:
            boundary_inputs = [
                v for v in main.inputs if narrow_type(v.type) is not None and _needs_input_cast(v)
            ]
            boundary_outputs = [
                v for v in main.outputs if narrow_type(v.type) is not None and _needs_output_cast(v)
            ]
            # Casts to float64 that produce main outputs stay as they are: they become the boundary.
            n.protected = {
                v.producer()
                for v in main.outputs
                if narrow_type(v.type) is not None and _is_cast(v.producer(), F64)
            }
        for graph, opsets in [(sc.graph, sc.opsets) for sc in walk(model)]:
            for value in list(graph.inputs):
                if graph is main and self.options.keep_io:
                    continue
                n.value(value)
            n.graph(graph, opsets)
            for value in graph.outputs:
                if (
                    graph is main
                    and self.options.keep_io
                    and (value.is_graph_input() or value.producer() in n.protected)
                ):
                    continue
                n.value(value)
        casts = 0
        if boundary_inputs or boundary_outputs:
            names = NameAllocator(model)
            first = next(iter(main), None)
            for value in boundary_inputs:
                name = value.name or "input"
                node = ir.Node(
                    "",
                    "Cast",
                    [value],
                    [ir.AttrInt64("to", int(F32))],
                    name=names.derive(name, "to_float32"),
                )
                out = node.outputs[0]
                out.name = names.derive(name, "float32")
                out.type, out.shape = ir.TensorType(F32), _copy(value.shape)
                for use in list(value.uses()):
                    if use.node is not node and not _is_any_cast(use.node):
                        use.node.replace_input_with(use.idx, out)
                if first is not None:
                    main.insert_before(first, node)
                else:
                    main.append(node)
                casts += 1
            for i, value in enumerate(list(main.outputs)):
                if value not in boundary_outputs:
                    continue
                # The narrowed value gets a fresh name; a Cast back to float64 takes the output's name.
                name = value.name or f"output_{i}"
                value.name = names.derive(name, "float32")
                node = ir.Node(
                    "",
                    "Cast",
                    [value],
                    [ir.AttrInt64("to", int(F64))],
                    name=names.derive(name, "to_float64"),
                )
                out = node.outputs[0]
                out.name = name
                out.type, out.shape = ir.TensorType(F64), _copy(value.shape)
                main.append(node)
                main.outputs[i] = out
                casts += 1
        stats = {k: v for k, v in n.stats.items() if v}
        if casts:
            stats["boundary_casts"] = casts
        modified = bool(stats)
        notes = []
        if n.stats["underflowed_elements"]:
            notes.append(
                f"{n.stats['underflowed_elements']} float64 constant elements are below float32's resolution"
            )
        return declare_interface(
            SurgeryResult(model, modified, stats=stats, notes=notes),
            interface_before,
            model,
            "narrow-float64 retypes float64 tensors",
        )
