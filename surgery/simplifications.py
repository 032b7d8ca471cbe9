"""Local graph simplifications that keep a model's values: the node-count half of ``cleanup``.

Every node is a kernel launch on an NPU and compile time in ATC; onnxsim and onnxslim remove
these, so a tool that leaves them gives models with two or three times the nodes. Each
simplification reroutes readers with :func:`surgery.graph.forward_value` (graph-output names are
kept; a rewrite whose output name cannot be kept is skipped) and leaves the dead producers to the
dead-node sweep.

- :func:`constants_to_initializers`: ``Constant`` nodes of the main graph become initializers
  (hundreds of them in Paddle exports; ONNX Runtime and ATC read both the same);
- :func:`simplify_graph`, one sweep of local rewrites, each bit-exact:

  - ``Reshape(Reshape(x, s1), s2)`` → ``Reshape(x, s2)`` (``s2`` constant with no ``0``);
  - ``Squeeze(Unsqueeze(x, a), a)`` and ``Unsqueeze(Squeeze(x, a), a)`` → ``x`` (same explicit axes);
  - ``Transpose(Transpose(x, p), q)`` → one Transpose (or ``x`` when the perms cancel); an identity
    ``Transpose`` → ``x``; a Transpose that only moves 1-sized dims, read by or reading a Reshape,
    merges into that Reshape;
  - ``Reshape(f(Reshape(x)))`` back to ``x``'s shape, ``f`` element-wise ops with scalar constants → ``f(x)``;
  - ``Pad`` by 0 and a ``Slice`` that keeps its input whole → ``x``; Slices of a Slice along other
    axes → one Slice each of the source (when every reader of the inner Slice merges);
  - ``x * 1``, ``1 * x``, ``x / 1``, ``x + 0``, ``0 + x``, ``x - 0`` → ``x`` when the output has ``x``'s
    shape and type (no broadcast grows it);
  - ``Concat`` of one input, ``Expand``/``Reshape`` to ``x``'s own static shape → ``x``;

- and, in the main graph, fusions that reorder float math (outputs equal to rounding, the
  ``exact`` tolerance; ATC performs the same fusions itself):

  - ``Conv``/``ConvTranspose`` (group 1) ``→ BatchNormalization`` (inference form) → one node with
    scaled weights and bias;
  - ``Conv``/``ConvTranspose ⟶ Add(per-channel constant)`` → the constant folded into the bias;
  - ``MatMul(2-D, constant 2-D) → Add(constant row)`` → ``Gemm``;
  - ``MatMul(x * s, W)`` (``s`` a constant scalar, ``W`` a constant only it reads) →
    ``MatMul(x, W * s)`` (the 0.5 ending an Erf-form Gelu, before the next Linear);
  - ``MatMul(x, W) * g`` (``g`` constant over the last axis) → ``MatMul(x, W * g)`` (layer scale);
  - ``MatMul(q * a, k * b)`` (constant scalars) → ``MatMul(q * (a*b), k)`` (dynamo's attention);
  - three or more ``MatMul(x, W_i)`` (+ bias ``Add``) of one ``x`` (attention's Q, K, V) → one
    MatMul (+ Add) of the concatenated weights and a ``Split``.

Fused weights are new initializers (a weight shared with another node is never modified).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import TypeGuard

import numpy as np
import onnx_ir as ir

from surgery.graph import ONNX_DOMAINS, GraphLike, NameAllocator, const_value, forward_value
from surgery.model_io import FileRangesTensor
from surgery.shapes.infer import CONTRADICTED_KEY, OBSERVED_KEY

__all__ = ["SimplifyStats", "constants_to_initializers", "simplify_graph"]


@dataclasses.dataclass
class SimplifyStats:
    constants_folded: int = 0
    simplified: int = 0
    fused: int = 0


def _std(node: ir.Node | None, *ops: str) -> TypeGuard[ir.Node]:
    return node is not None and node.domain in ONNX_DOMAINS and node.op_type in ops


def _only_reader(value: ir.Value | None) -> ir.Node | None:
    if value is None or value.is_graph_output():
        return None
    uses = list(value.uses())
    return uses[0].node if len(uses) == 1 else None


def _fusable_operands(
    node: ir.Node, graph: ir.Graph, *ops: str
) -> Iterator[tuple[ir.Node, ir.Value, ir.Value]]:
    """(producer, operand, other operand) for each operand of the binary ``node``, first one
    first, made by a standard ``ops`` node of ``graph`` that nothing but ``node`` reads: where
    ``node`` (an Add or Mul by a constant) can be folded into its producer's weights."""
    if len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return
    first, second = node.inputs
    assert first is not None and second is not None  # checked above
    for y, other in ((first, second), (second, first)):
        producer = y.producer()
        if _std(producer, *ops) and _only_reader(y) is node and producer.graph is graph:
            yield producer, y, other


def _static(shape: ir.Shape | None) -> tuple[int, ...] | None:
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return tuple(int(d) for d in shape)  # type: ignore[arg-type]


def _int_attr_list(node: ir.Node, name: str) -> list[int] | None:
    attr = node.attributes.get(name)
    if attr is None or attr.is_ref():
        return None
    return [int(v) for v in attr.value]


def _axes(node: ir.Node, opset: int) -> list[int] | None:
    """The explicit axes of a Squeeze/Unsqueeze (attribute before opset 13, input from 13)."""
    if opset >= 13:
        if len(node.inputs) < 2 or node.inputs[1] is None:
            return None
        array = const_value(node.inputs[1])
        return None if array is None else [int(a) for a in array.reshape(-1)]
    return _int_attr_list(node, "axes")


# -- Constant nodes → initializers ------------------------------------------------------------


def constants_to_initializers(graph: ir.Graph) -> int:
    """Turn every ``Constant`` node of ``graph`` (a main graph) into an initializer of the same name.

    A Constant whose output is a graph output stays (an initializer cannot be an output without
    also being an input in older IR versions); so do sparse constants.
    """
    count = 0
    for node in list(graph):
        if not _std(node, "Constant") or len(node.outputs) != 1:
            continue
        out = node.outputs[0]
        if (
            out.is_graph_output()
            or not out.name
            or next(iter(node.attributes), None) == "sparse_value"
        ):
            continue
        array = const_value(out)
        if array is None:
            continue
        attr = next(iter(node.attributes.values()))
        tensor = attr.as_tensor() if attr.name == "value" else ir.Tensor(np.array(array, order="C"))
        name = out.name
        value = ir.Value(
            name=None,
            type=ir.TensorType(tensor.dtype),
            shape=ir.Shape(array.shape),
            const_value=tensor,
        )
        out.replace_all_uses_with(value)
        graph.remove(node, safe=True)
        out.name = None
        value.name = name
        tensor.name = name
        graph.initializers.add(value)
        count += 1
    return count


# -- exact local rewrites ---------------------------------------------------------------------


def _drop(node: ir.Node) -> None:
    """Remove ``node`` when nothing reads its outputs any more (so single-reader checks of the
    nodes it read see the truth within the same sweep); its own producers are left to the sweep."""
    if node.graph is None or any(o.uses() or o.is_graph_output() for o in node.outputs):
        return
    graph = node.graph
    for i in range(len(node.inputs)):
        node.replace_input_with(i, None)
    graph.remove(node, safe=True)


def _replace(node: ir.Node, by: ir.Value) -> bool:
    """Readers of ``node``'s output read ``by``, and the node goes."""
    if not forward_value(node.outputs[0], by):
        return False
    _drop(node)
    return True


def _same_signature(a: ir.Value | None, b: ir.Value | None) -> bool:
    if a is None or b is None:
        return False
    shape_a, shape_b = _static(a.shape), _static(b.shape)
    return shape_a is not None and shape_a == shape_b and a.dtype is not None and a.dtype == b.dtype


def _is_all(value: ir.Value | None, number: float) -> bool:
    array = const_value(value)
    return (
        array is not None
        and array.size > 0
        and bool(np.all(array == number))
        and not np.issubdtype(array.dtype, np.bool_)
    )


def _reshape_of_reshape(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    inner = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
    if (
        not _std(inner, "Reshape")
        or _only_reader(node.inputs[0]) is not node
        or len(node.inputs) < 2
    ):
        return False
    target = const_value(node.inputs[1])
    if (
        target is None or np.any(target == 0) or inner.inputs[0] is None
    ):  # 0 copies the middle tensor's dim
        return False
    node.replace_input_with(0, inner.inputs[0])
    _drop(inner)
    return True


def _squeeze_pair(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    other = "Unsqueeze" if node.op_type == "Squeeze" else "Squeeze"
    x = node.inputs[0] if node.inputs else None
    inner = x.producer() if x is not None else None
    if not _std(inner, other) or inner.inputs[0] is None:
        return False
    axes, inner_axes = _axes(node, opset), _axes(inner, opset)
    if axes is None or axes != inner_axes or any(a < 0 for a in axes):
        return False
    source = inner.inputs[0]
    if (
        node.op_type == "Unsqueeze"
    ):  # Unsqueeze(Squeeze(x, a), a) = x only if x had 1s there (it must)
        shape = _static(source.shape)
        if shape is None or any(a >= len(shape) or shape[a] != 1 for a in axes):
            return False
    if not _replace(node, source):
        return False
    _drop(inner)
    return True


def _moves_only_ones(perm: list[int], shape: tuple[int, ...]) -> bool:
    """Whether Transpose(perm) keeps the order of the dims larger than 1 (so it is a Reshape)."""
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


def _shape_constant(
    graph: GraphLike, names: NameAllocator, before: ir.Node, dims: tuple[int, ...]
) -> ir.Value:
    """An int64 shape constant usable by ``before``: an initializer in a graph, a Constant node in a function."""
    name = names.derive(before.name or before.op_type, "shape")
    tensor = ir.Tensor(np.asarray(dims, dtype=np.int64), name=name)
    if isinstance(graph, ir.Graph):
        value = ir.Value(
            name=name,
            type=ir.TensorType(ir.DataType.INT64),
            shape=ir.Shape([len(dims)]),
            const_value=tensor,
        )
        graph.initializers.add(value)
        return value
    const = ir.node(
        "Constant",
        [],
        {"value": tensor},
        name=name,
        outputs=[ir.val(names.derive(name, "out"), ir.DataType.INT64, shape=ir.Shape([len(dims)]))],
    )
    const.outputs[0].const_value = tensor
    graph.insert_before(before, const)
    return const.outputs[0]


def _becomes(value: ir.Value, old: ir.Value) -> bool:
    """Readers of ``old`` read ``value``, which now holds ``old``'s tensor (another shape than it
    had): ``value`` takes ``old``'s name and metadata (:func:`forward_value` gives it the signature
    when ``old`` is a graph output). The metadata matters: the runner records on each value the
    shape ONNX Runtime computed for it on the original (:mod:`surgery.shapes.observed`) and later
    "corrects" inference back to it, so a value that kept its own observation would be annotated
    with the shape of the tensor it no longer holds and the checker gate would refuse the model
    (what made Swin, SegFormer and MobileViT exports fail after the Reshape-then-Transpose merge)."""
    name, meta = old.name, dict(old.meta)
    if not forward_value(old, value):
        return False
    if name and value.name != name:
        old.name = None
        value.name = name
    value.meta.clear()
    value.meta.update(meta)
    return True


def _transpose_as_reshape(
    node: ir.Node, perm: list[int], x: ir.Value, names: NameAllocator
) -> bool:
    """A Transpose that only moves 1-sized dims, next to a Reshape, merges into that Reshape."""
    shape = _static(x.shape)
    if shape is None or len(shape) != len(perm) or sorted(perm) != list(range(len(perm))):
        return False
    if not _moves_only_ones(perm, shape) or 0 in shape:  # a 0 in a Reshape target copies a dim
        return False
    out_shape = tuple(shape[p] for p in perm)
    graph = node.graph
    assert graph is not None
    reader = _only_reader(node.outputs[0])
    if _std(reader, "Reshape") and len(reader.inputs) > 1:  # Reshape(T(x), s) = Reshape(x, s)
        target = const_value(reader.inputs[1])
        if target is not None and not np.any(target == 0):
            reader.replace_input_with(0, x)
            _drop(node)
            return True
    producer = x.producer()
    # T(Reshape(y)) = Reshape(y, T's output shape): the Reshape's output becomes T's output (name,
    # shape and the shape ONNX Runtime observed for it, see _becomes).
    if (
        _std(producer, "Reshape")
        and _only_reader(x) is node
        and producer.graph is graph
        and len(producer.inputs) > 1
    ):
        if not _becomes(x, node.outputs[0]):
            return False
        producer.replace_input_with(1, _shape_constant(graph, names, producer, out_shape))
        x.shape = ir.Shape(list(out_shape))
        _drop(node)
        return True
    return False


def _transpose(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    perm = _int_attr_list(node, "perm")
    x = node.inputs[0] if node.inputs else None
    if perm is None or x is None:
        return False
    if perm == list(range(len(perm))):
        return _replace(node, x)
    inner = x.producer()
    if not _std(inner, "Transpose") or _only_reader(x) is not node or inner.inputs[0] is None:
        return _transpose_as_reshape(node, perm, x, names)
    inner_perm = _int_attr_list(inner, "perm")
    if inner_perm is None or len(inner_perm) != len(perm):
        return False
    combined = [inner_perm[p] for p in perm]
    if combined == list(range(len(perm))):
        source = inner.inputs[0]
        if not _replace(node, source):
            return False
        _drop(inner)
        return True
    node.replace_input_with(0, inner.inputs[0])
    node.attributes["perm"] = ir.AttrInt64s("perm", combined)
    _drop(inner)
    return True


def _neutral(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    if len(node.inputs) != 2:
        return False
    a, b = node.inputs
    if a is None or b is None:
        return False
    neutral = 1.0 if node.op_type in ("Mul", "Div") else 0.0
    candidates = [(a, b)] if node.op_type in ("Div", "Sub") else [(a, b), (b, a)]
    out = node.outputs[0]
    for x, other in candidates:
        if _is_all(other, neutral) and _same_signature(x, out):
            return _replace(node, x)
    return False


def _concat_of_one(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    if len(node.inputs) != 1 or node.inputs[0] is None:
        return False
    return _replace(node, node.inputs[0])


def _noop_reshape(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    x = node.inputs[0] if node.inputs else None
    if x is None or len(node.inputs) < 2 or not _same_signature(x, node.outputs[0]):
        return False
    if const_value(node.inputs[1]) is None:
        return False
    return _replace(node, x)


def _noop_pad(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    """``Pad`` with every pad 0 → ``x`` (any mode; Swin pads its windows by 0 at such sizes)."""
    x = node.inputs[0] if node.inputs else None
    if x is None or not _same_signature(x, node.outputs[0]):
        return False
    if opset >= 11:
        pads = const_value(node.inputs[1]) if len(node.inputs) > 1 else None
    else:
        listed = _int_attr_list(node, "pads")
        pads = None if listed is None else np.asarray(listed)
    if pads is None or pads.size == 0 or np.any(pads != 0):
        return False
    return _replace(node, x)


def _slice_params(
    node: ir.Node, rank: int | None
) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """Constant (starts, ends, axes, steps) of an opset >= 10 Slice, axes made non-negative
    (None when something is not constant, or an axis is negative and the rank unknown)."""
    if len(node.inputs) < 3 or node.inputs[0] is None:
        return None
    parts: list[list[int] | None] = []
    for index in range(1, 5):
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None:
            parts.append(None)
            continue
        array = const_value(value)
        if array is None or array.dtype.kind not in "iu":
            return None
        parts.append([int(v) for v in array.reshape(-1)])
    starts, ends, axes, steps = parts
    if starts is None or ends is None or len(starts) != len(ends):
        return None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if len(axes) != len(starts) or len(steps) != len(starts):
        return None
    if any(a < 0 for a in axes):
        if rank is None:
            return None
        axes = [a + rank if a < 0 else a for a in axes]
    if len(set(axes)) != len(axes):
        return None
    return starts, ends, axes, steps


def _int64_constant(
    graph: GraphLike, names: NameAllocator, before: ir.Node, suffix: str, values: list[int]
) -> ir.Value:
    name = names.derive(before.name or before.op_type, suffix)
    tensor = ir.Tensor(np.asarray(values, dtype=np.int64), name=name)
    value = ir.Value(
        name=name,
        type=ir.TensorType(ir.DataType.INT64),
        shape=ir.Shape([len(values)]),
        const_value=tensor,
    )
    assert isinstance(graph, ir.Graph)
    graph.initializers.add(value)
    return value


def _slice(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    """A Slice that keeps its input whole (steps 1, same static shape) → ``x``; a Slice of a Slice
    on other axes → one Slice of the source (exact: slicing along one axis leaves the others alone),
    when every reader of the inner Slice merges so (Swin's patch merging: x[:, 0::2, 1::2])."""
    x = node.inputs[0] if node.inputs else None
    if x is None or opset < 10:
        return False
    shape = _static(x.shape)
    params = _slice_params(node, None if shape is None else len(shape))
    if params is None:
        return False
    if all(step == 1 for step in params[3]) and _same_signature(x, node.outputs[0]):
        return _replace(node, x)
    inner = x.producer()
    graph = node.graph
    if (
        not _std(inner, "Slice")
        or not isinstance(graph, ir.Graph)
        or inner.graph is not graph
        or x.is_graph_output()
    ):
        return False
    source = inner.inputs[0]
    if source is None:
        return False
    source_shape = _static(source.shape)
    rank = None if source_shape is None else len(source_shape)
    inner_params = _slice_params(inner, rank)
    if inner_params is None:
        return False
    readers = [use.node for use in x.uses()]
    merged: list[tuple[ir.Node, tuple[list[int], list[int], list[int], list[int]]]] = []
    for reader in readers:
        if not _std(reader, "Slice") or reader.graph is not graph or reader.inputs[0] is not x:
            return False
        reader_params = _slice_params(reader, rank)
        if reader_params is None or set(reader_params[2]) & set(inner_params[2]):
            return False
        merged.append((reader, reader_params))
    for reader, (starts, ends, axes, steps) in merged:
        combined = (
            inner_params[0] + starts,
            inner_params[1] + ends,
            inner_params[2] + axes,
            inner_params[3] + steps,
        )
        reader.resize_inputs(5)
        reader.replace_input_with(0, source)
        for index, (suffix, values) in enumerate(
            zip(("starts", "ends", "axes", "steps"), combined, strict=True), start=1
        ):
            reader.replace_input_with(index, _int64_constant(graph, names, reader, suffix, values))
    _drop(inner)
    return True


#: Ops that map each element on its own (other inputs constant scalars): a Reshape around them commutes.
_ELEMENTWISE = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Tanh",
        "Erf",
        "Sigmoid",
        "Relu",
        "Exp",
        "Log",
        "Sqrt",
        "Neg",
        "Abs",
        "Reciprocal",
        "Clip",
        "LeakyRelu",
        "HardSigmoid",
        "HardSwish",
        "Softplus",
        "Elu",
        "Selu",
        "Cast",
        "Sin",
        "Cos",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Not",
        "IsNaN",
        "Max",
        "Min",
    }
)


def _reshape_sandwich(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    """``Reshape(f(Reshape(x, s1)), s2)`` → ``f(x)`` when ``s2`` gives ``x``'s own shape back and ``f``
    is a region of element-wise ops whose other inputs are constant scalars (GPT-2's tanh Gelu
    between its Linear's Reshapes). Every value of the region must be read inside it or by such a
    final Reshape; the region's values take ``x``'s shape (what ONNX Runtime observed for their old
    shape is forgotten)."""
    x = node.inputs[0] if node.inputs else None
    y = node.outputs[0]
    graph = node.graph
    source, middle = (_static(x.shape) if x is not None else None), _static(y.shape)
    if (
        x is None
        or source is None
        or middle is None
        or source == middle
        or y.is_graph_output()
        or graph is None
    ):
        return False
    region: list[ir.Node] = []
    exits: list[ir.Node] = []
    values = {y}
    stack = [y]
    while stack:
        value = stack.pop()
        for use in value.uses():
            reader = use.node
            if reader in region or reader in exits:
                continue
            if reader.graph is not graph or reader.domain not in ONNX_DOMAINS:
                return False
            if reader.op_type == "Reshape" and use.idx == 0 and value is not y:
                target = const_value(reader.inputs[1]) if len(reader.inputs) > 1 else None
                if (
                    target is None
                    or _static(reader.outputs[0].shape) != source
                    or len(list(value.uses())) != 1
                ):
                    return False
                exits.append(reader)
                continue
            if reader.op_type not in _ELEMENTWISE or len(reader.outputs) != 1:
                return False
            out = reader.outputs[0]
            if _static(out.shape) != middle or out.is_graph_output():
                return False
            for (
                other
            ) in reader.inputs:  # a non-constant input must be a region value (checked at the end)
                array = None if other is None or other in values else const_value(other)
                if array is not None and (array.size != 1 or array.ndim > len(source)):
                    return False
            region.append(reader)
            values.add(out)
            stack.append(out)
        if len(region) > 64:
            return False
    if not region or not exits:
        return False
    for reader in (
        region
    ):  # every region input is y, a region value or a scalar (checked above, in any order)
        if any(v is not None and v not in values and const_value(v) is None for v in reader.inputs):
            return False
    y.replace_all_uses_with(x)
    for reader in region:
        out = reader.outputs[0]
        out.shape = ir.Shape(list(source))
        for key in (OBSERVED_KEY, CONTRADICTED_KEY):
            out.meta.pop(key, None)
    for final in exits:
        inner = final.inputs[0]
        assert inner is not None
        _becomes(inner, final.outputs[0])
        _drop(final)
    _drop(node)
    return True


_LOCAL: dict[str, Callable[[ir.Node, int, NameAllocator], bool]] = {
    "Squeeze": _squeeze_pair,
    "Unsqueeze": _squeeze_pair,
    "Transpose": _transpose,
    "Mul": _neutral,
    "Div": _neutral,
    "Add": _neutral,
    "Sub": _neutral,
    "Concat": _concat_of_one,
    "Pad": _noop_pad,
    "Slice": _slice,
}


# -- fusions (main graph) -----------------------------------------------------------------------


def _new_initializer(
    graph: ir.Graph, names: NameAllocator, base: str, suffix: str, array: np.ndarray
) -> ir.Value:
    name = names.derive(base, suffix)
    tensor = ir.Tensor(
        np.array(array, order="C"), name=name
    )  # (ascontiguousarray makes a 0-d array 1-d)
    value = ir.Value(
        name=name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(array.shape), const_value=tensor
    )
    graph.initializers.add(value)
    return value


def _merged_weight(
    graph: ir.Graph, names: NameAllocator, base: str, parts: list[ir.Value]
) -> ir.Value:
    """An initializer holding the constants ``parts`` side by side (axis 1), built only when its
    bytes are read.

    The parts are usually memory-mapped weights: a concatenation made here would hold a new copy
    of every merged projection in memory until the model is saved (553 MB on the decoder of
    ``bench/bench_core.py``). When every part lies in external data, the merged weight is a
    :class:`~surgery.model_io.FileRangesTensor`: row ``r`` is row ``r`` of each part, so saving
    copies those ranges file to file in the kernel, and reading it builds it from the map.
    """
    name = names.derive(base, "merged_weight")
    tensors = [p.const_value for p in parts]
    arrays = [a for a in (const_value(p) for p in parts) if a is not None]
    shape = ir.Shape([arrays[0].shape[0], sum(a.shape[1] for a in arrays)])
    dtype = ir.DataType.from_numpy(arrays[0].dtype)

    def build() -> ir.Tensor:
        return ir.Tensor(np.concatenate(arrays, axis=1), name=name)

    ranges = _row_ranges(tensors, arrays)
    tensor: ir.LazyTensor = (
        FileRangesTensor(build, dtype=dtype, shape=shape, ranges=ranges, name=name)
        if ranges is not None
        else ir.LazyTensor(build, dtype=dtype, shape=shape, name=name)
    )
    value = ir.Value(name=name, type=ir.TensorType(dtype), shape=shape, const_value=tensor)
    graph.initializers.add(value)
    return value


def _row_ranges(
    tensors: list[ir.TensorProtocol | None], arrays: list[np.ndarray]
) -> list[tuple[str, int, int]] | None:
    """The file ranges of ``arrays`` (2-D, equal rows) put side by side, row by row; None unless
    every one is a whole-element external tensor (its bytes in the file are the array's)."""
    if len(tensors) != len(arrays):
        return None
    places: list[tuple[str, int, int]] = []
    for tensor, array in zip(tensors, arrays, strict=True):
        if (
            not isinstance(tensor, ir.ExternalTensor)
            or tensor.dtype.bitwidth != array.dtype.itemsize * 8
            or array.dtype.byteorder == ">"
        ):
            return None
        row = array.shape[1] * array.dtype.itemsize
        places.append((os.path.join(tensor.base_dir, tensor.location), tensor.offset or 0, row))
    rows = arrays[0].shape[0]
    return [(path, start + r * row, row) for r in range(rows) for path, start, row in places]


_CONVS = ("Conv", "ConvTranspose")


def _out_axis(conv: ir.Node) -> int | None:
    """The weight axis of the output channels: 0 for Conv, 1 for ConvTranspose (group 1 only)."""
    if conv.op_type == "Conv":
        return 0
    group = conv.attributes.get("group")
    return 1 if group is None or int(group.value) == 1 else None


def _conv_parts(conv: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(weight, bias) of a Conv/ConvTranspose whose weight (and bias) are constants; a missing bias is zeros."""
    if len(conv.inputs) < 2 or conv.inputs[1] is None or _out_axis(conv) is None:
        return None
    weight = const_value(conv.inputs[1])
    if weight is None or weight.dtype.kind != "f" or weight.ndim < 3:
        return None
    if len(conv.inputs) > 2 and conv.inputs[2] is not None:
        bias = const_value(conv.inputs[2])
        if bias is None:
            return None
    else:
        bias = np.zeros(weight.shape[_out_axis(conv) or 0], weight.dtype)
    return weight, bias


def _set_conv_params(
    conv: ir.Node,
    graph: ir.Graph,
    names: NameAllocator,
    weight: np.ndarray | None,
    bias: np.ndarray,
) -> None:
    base = conv.name or "Conv"
    if weight is not None:
        conv.replace_input_with(1, _new_initializer(graph, names, base, "fused_weight", weight))
    new_bias = _new_initializer(graph, names, base, "fused_bias", bias)
    if len(conv.inputs) < 3:
        conv.resize_inputs(3)
    conv.replace_input_with(2, new_bias)


def _fuse_conv_bn(bn: ir.Node, graph: ir.Graph, names: NameAllocator) -> bool:
    if len(bn.inputs) != 5 or any(v is None for v in bn.inputs):
        return False
    if len([o for o in bn.outputs if o.uses() or o.is_graph_output()]) != 1 or not (
        bn.outputs[0].uses() or bn.outputs[0].is_graph_output()
    ):
        return False
    attrs = bn.attributes
    if (a := attrs.get("training_mode")) is not None and int(a.value):
        return False
    if (a := attrs.get("spatial")) is not None and not int(a.value):
        return False
    y = bn.inputs[0]
    if y is None:
        return False
    conv = y.producer()
    if not _std(conv, *_CONVS) or _only_reader(y) is not bn or conv.graph is not graph:
        return False
    parts = _conv_parts(conv)
    params = [const_value(v) for v in bn.inputs[1:]]
    if parts is None or any(p is None for p in params):
        return False
    weight, bias = parts
    axis = _out_axis(conv) or 0
    scale, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
    if not all(p.size == weight.shape[axis] for p in (scale, beta, mean, var)):
        return False
    eps = float(attrs["epsilon"].value) if "epsilon" in attrs else 1e-5
    factor = scale / np.sqrt(var + eps)
    shape = [1] * weight.ndim
    shape[axis] = -1
    new_weight = (weight.astype(np.float64) * factor.reshape(shape)).astype(weight.dtype)
    new_bias = ((bias.astype(np.float64) - mean) * factor + beta).astype(weight.dtype)
    if not forward_value(bn.outputs[0], y):
        return False
    _set_conv_params(conv, graph, names, new_weight, new_bias)
    _drop(bn)
    return True


def _fuse_conv_add(add: ir.Node, graph: ir.Graph, names: NameAllocator) -> bool:
    for conv, y, other in _fusable_operands(add, graph, *_CONVS):
        parts = _conv_parts(conv)
        constant = const_value(other)
        out_shape = _static(y.shape)
        if (
            parts is None
            or constant is None
            or out_shape is None
            or constant.dtype != parts[0].dtype
        ):
            continue
        channels = parts[1].shape[0]
        shape = (1,) * (len(out_shape) - constant.ndim) + constant.shape
        if len(shape) != len(out_shape) or any(d != 1 for i, d in enumerate(shape) if i != 1):
            continue
        if shape[1] not in (1, channels):
            continue
        if not forward_value(add.outputs[0], y):
            continue
        per_channel = np.broadcast_to(constant.reshape(-1), (channels,))
        _set_conv_params(
            conv,
            graph,
            names,
            None,
            (parts[1].astype(np.float64) + per_channel).astype(parts[0].dtype),
        )
        _drop(add)
        return True
    return False


def _fuse_matmul_add(add: ir.Node, graph: ir.Graph, names: NameAllocator) -> bool:
    for matmul, y, other in _fusable_operands(add, graph, "MatMul"):
        a, w = matmul.inputs
        a_shape = _static(a.shape) if a is not None else None
        weight, bias = const_value(w), const_value(other)
        if (
            a_shape is None
            or len(a_shape) != 2
            or weight is None
            or weight.ndim != 2
            or bias is None
        ):
            continue
        if weight.dtype.kind != "f":
            continue
        if bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1) or bias.dtype != weight.dtype:
            continue
        if not _same_signature(add.outputs[0], y):
            continue
        gemm = ir.node(
            "Gemm",
            [a, w, other],
            name=names.derive(matmul.name or "MatMul", "gemm"),
            outputs=[ir.val(names.derive(y.name or "gemm", "gemm"), y.dtype, shape=y.shape)],
        )
        graph.insert_before(matmul, gemm)
        if not forward_value(
            add.outputs[0], gemm.outputs[0]
        ):  # cannot happen: produced in this graph
            graph.remove(gemm, safe=True)
            continue
        _drop(add)
        _drop(matmul)
        return True
    return False


def _fuse_scale_matmul(matmul: ir.Node, graph: ir.Graph, names: NameAllocator) -> bool:
    """``MatMul(x * s, W)`` (or ``x / s``), ``s`` a constant scalar, ``W`` a constant matrix only this
    MatMul reads → ``MatMul(x, W * s)``: the 0.5 that ends every Erf-form Gelu goes into the next
    Linear's weight (one node per feed-forward block)."""
    if len(matmul.inputs) != 2:
        return False
    a, w = matmul.inputs[0], matmul.inputs[1]
    if a is None or w is None:
        return False
    scale_node = a.producer()
    if (
        not _std(scale_node, "Mul", "Div")
        or _only_reader(a) is not matmul
        or scale_node.graph is not graph
    ):
        return False
    weight = const_value(w)  # after the cheap checks: a lazy weight is built when read
    if (
        weight is None
        or weight.ndim != 2
        or weight.dtype.kind != "f"
        or len(list(w.uses())) != 1
        or w.is_graph_output()
    ):
        return False
    if len(scale_node.inputs) != 2 or any(v is None for v in scale_node.inputs):
        return False
    pairs = (
        [tuple(scale_node.inputs)]
        if scale_node.op_type == "Div"
        else [tuple(scale_node.inputs), tuple(scale_node.inputs)[::-1]]
    )
    for x, factor in pairs:
        scale = const_value(factor)
        if (
            scale is None
            or scale.size != 1
            or scale.dtype != weight.dtype
            or not _same_signature(x, a)
        ):
            continue
        value = float(scale.reshape(-1)[0])
        if not np.isfinite(value) or value == 0.0:
            continue
        factor64 = 1.0 / value if scale_node.op_type == "Div" else value
        fused = (weight.astype(np.float64) * factor64).astype(weight.dtype)
        matmul.replace_input_with(0, x)
        matmul.replace_input_with(
            1, _new_initializer(graph, names, matmul.name or "MatMul", "scaled_weight", fused)
        )
        _drop(scale_node)
        return True
    return False


def _fuse_matmul_column_scale(mul: ir.Node, graph: ir.Graph, names: NameAllocator) -> bool:
    """``MatMul(x, W) * g`` (``g`` a constant over the last axis: [N], or a scalar; ``W`` a constant
    only this MatMul reads) → ``MatMul(x, W * g)``: ConvNeXt's layer scale after each block's Linear."""
    for matmul, y, other in _fusable_operands(mul, graph, "MatMul"):
        if len(matmul.inputs) != 2 or matmul.inputs[1] is None:
            continue
        w = matmul.inputs[1]
        weight, scale = const_value(w), const_value(other)
        if (
            weight is None
            or weight.ndim != 2
            or weight.dtype.kind != "f"
            or len(list(w.uses())) != 1
            or w.is_graph_output()
        ):
            continue
        if scale is None or scale.dtype != weight.dtype or not _same_signature(mul.outputs[0], y):
            continue
        if scale.size != 1 and (
            scale.shape[-1] != weight.shape[1] or any(d != 1 for d in scale.shape[:-1])
        ):
            continue
        if scale.size == 1 and scale.ndim > 0 and any(d != 1 for d in scale.shape):
            continue
        if not forward_value(mul.outputs[0], y):
            continue
        factor = (
            scale.astype(np.float64).reshape(1, -1)
            if scale.size != 1
            else float(scale.reshape(-1)[0])
        )
        fused = (weight.astype(np.float64) * factor).astype(weight.dtype)
        matmul.replace_input_with(
            1, _new_initializer(graph, names, matmul.name or "MatMul", "scaled_weight", fused)
        )
        _drop(mul)
        return True
    return False


def _scalar_scale(
    value: ir.Value, matmul: ir.Node
) -> tuple[ir.Node, ir.Value, int, np.ndarray] | None:
    """(Mul node, its other operand, the index of its constant, the constant) when ``value`` is
    ``x * s`` (``s`` a constant scalar) read only by ``matmul``."""
    mul = value.producer()
    if not _std(mul, "Mul") or _only_reader(value) is not matmul or mul.graph is not matmul.graph:
        return None
    if len(mul.inputs) != 2 or any(v is None for v in mul.inputs):
        return None
    for index in (1, 0):
        scale = const_value(mul.inputs[index])
        x = mul.inputs[1 - index]
        if (
            x is not None
            and scale is not None
            and scale.size == 1
            and scale.dtype.kind == "f"
            and _same_signature(x, value)
        ):
            return mul, x, index, scale
    return None


def _fuse_matmul_scales(matmul: ir.Node, graph: ir.Graph, names: NameAllocator) -> bool:
    """``MatMul(q * a, k * b)`` (``a``, ``b`` constant scalars) → ``MatMul(q * (a*b), k)``: the
    dynamo exporter's attention scales both Q and K by d**-0.25 (one Mul per layer less)."""
    q, k = (matmul.inputs[0], matmul.inputs[1]) if len(matmul.inputs) == 2 else (None, None)
    if q is None or k is None or q is k:
        return False
    left, right = _scalar_scale(q, matmul), _scalar_scale(k, matmul)
    if left is None or right is None or left[3].dtype != right[3].dtype:
        return False
    mul, _, index, scale = left
    product = (scale.astype(np.float64) * float(right[3].reshape(-1)[0])).astype(scale.dtype)
    mul.replace_input_with(
        index, _new_initializer(graph, names, mul.name or "Mul", "scale", product)
    )
    matmul.replace_input_with(1, right[1])
    _drop(right[0])
    return True


def _sibling_bias(
    matmul: ir.Node, columns: int, dtype: np.dtype
) -> tuple[ir.Node, np.ndarray] | None:
    """The ``Add`` of a constant bias row [columns] that alone reads ``matmul``'s output."""
    add = _only_reader(matmul.outputs[0])
    if not _std(add, "Add") or len(add.inputs) != 2 or add.outputs[0].is_graph_output():
        return None
    other = add.inputs[1] if add.inputs[0] is matmul.outputs[0] else add.inputs[0]
    bias = const_value(other)
    if bias is None or bias.shape != (columns,) or bias.dtype != dtype:
        return None
    if not _same_signature(add.outputs[0], matmul.outputs[0]):
        return None
    return add, bias


#: The largest weight :func:`_fuse_sibling_matmuls` builds by concatenation (a new tensor in memory:
#: above this, the projections stay separate rather than copy weights that are memory-mapped).
MAX_MERGED_WEIGHT_BYTES = 256 * 1024 * 1024


def _fuse_sibling_matmuls(node: ir.Node, graph: ir.Graph, names: NameAllocator, opset: int) -> bool:
    """Three or more ``MatMul(x, W_i)`` of one ``x`` (constant weights only they read; the Q, K, V
    projections of attention) → one ``MatMul(x, [W_1 .. W_n])`` and a ``Split`` of its last axis
    (with their bias ``Add`` rows too when each has one): n nodes become 2 (or 2n become 3).
    Each output element is the same dot product as before."""
    if opset < 11 or len(node.inputs) != 2 or node.inputs[0] is None:
        return False
    x = node.inputs[0]
    candidates: list[ir.Node] = []
    for use in x.uses():
        matmul = use.node
        if (
            any(matmul is c for c in candidates)
            or not _std(matmul, "MatMul")
            or matmul.graph is not graph
        ):
            continue
        if len(matmul.inputs) != 2 or matmul.inputs[0] is not x or matmul.inputs[1] is None:
            continue
        w = matmul.inputs[1]
        if len(list(w.uses())) != 1 or w.is_graph_output() or matmul.outputs[0].is_graph_output():
            continue
        candidates.append(matmul)
    if len(candidates) < 3:
        return False  # before reading any weight: a lazy one (an earlier merge) is built when read
    group: list[tuple[ir.Node, np.ndarray]] = []
    for matmul in candidates:
        weight = const_value(matmul.inputs[1])
        if weight is not None and weight.ndim == 2 and weight.dtype.kind == "f":
            group.append((matmul, weight))
    first = next((w for m, w in group if m is node), None)
    if first is None:
        return False
    group = [(m, w) for m, w in group if w.shape[0] == first.shape[0] and w.dtype == first.dtype]
    if len(group) < 3 or sum(w.nbytes for _, w in group) > MAX_MERGED_WEIGHT_BYTES:
        return False  # too few, or a merged copy too large to build in memory (weights stay memory-mapped)
    biases = [_sibling_bias(m, w.shape[1], w.dtype) for m, w in group]
    with_bias = all(b is not None for b in biases)
    base = node.name or "MatMul"
    out = node.outputs[0]
    sizes = [w.shape[1] for _, w in group]
    shape = (
        ir.Shape([*list(out.shape)[:-1], sum(sizes)])
        if out.shape is not None and len(out.shape)
        else None
    )
    weights = _merged_weight(graph, names, base, [m.inputs[1] for m, _ in group if m.inputs[1]])
    merged = ir.node(
        "MatMul",
        [x, weights],
        name=names.derive(base, "merged"),
        outputs=[ir.val(names.derive(base, "merged_out"), out.dtype, shape=shape)],
    )
    graph.insert_before(node, merged)
    last = merged.outputs[0]
    if with_bias:
        rows = [b[1] for b in biases if b is not None]  # with_bias: every one has its row
        bias = _new_initializer(graph, names, base, "merged_bias", np.concatenate(rows))
        add = ir.node(
            "Add",
            [last, bias],
            name=names.derive(base, "merged_bias_add"),
            outputs=[ir.val(names.derive(base, "merged_bias_out"), out.dtype, shape=shape)],
        )
        graph.insert_before(node, add)
        last = add.outputs[0]
    finals = [b[0].outputs[0] for b in biases] if with_bias else [m.outputs[0] for m, _ in group]  # type: ignore[index]
    outputs = [
        ir.val(
            names.derive(base, f"split_{i}"),
            v.dtype,
            shape=None if v.shape is None else ir.Shape(list(v.shape)),
        )
        for i, v in enumerate(finals)
    ]
    if opset >= 13:
        split_sizes = _new_initializer(
            graph, names, base, "split_sizes", np.asarray(sizes, dtype=np.int64)
        )
        split = ir.node(
            "Split",
            [last, split_sizes],
            {"axis": -1},
            name=names.derive(base, "split"),
            outputs=outputs,
        )
    else:
        split = ir.node(
            "Split",
            [last],
            {"axis": -1, "split": ir.AttrInt64s("split", sizes)},
            name=names.derive(base, "split"),
            outputs=outputs,
        )
    graph.insert_before(node, split)
    for new, old in zip(outputs, finals, strict=True):
        _becomes(new, old)
    for (matmul, _), found in zip(group, biases, strict=True):
        if with_bias and found is not None:
            _drop(found[0])
        _drop(matmul)
    return True


def _local(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    op = node.op_type
    if op == "Reshape":
        return (
            _reshape_of_reshape(node, opset, names)
            or _noop_reshape(node, opset, names)
            or _reshape_sandwich(node, opset, names)
        )
    if op == "Expand":
        return _noop_reshape(node, opset, names)
    rewrite = _LOCAL.get(op)
    return rewrite is not None and rewrite(node, opset, names)


def _fusion(node: ir.Node, graph: ir.Graph, names: NameAllocator, opset: int) -> bool:
    if node.op_type == "BatchNormalization":
        return _fuse_conv_bn(node, graph, names)
    if node.op_type == "Add":
        return _fuse_conv_add(node, graph, names) or _fuse_matmul_add(node, graph, names)
    if node.op_type == "Mul":
        return _fuse_matmul_column_scale(node, graph, names)
    if node.op_type == "MatMul":
        return (
            _fuse_scale_matmul(node, graph, names)
            or _fuse_matmul_scales(node, graph, names)
            or _fuse_sibling_matmuls(node, graph, names, opset)
        )
    return False


# -- common subexpressions ------------------------------------------------------------------

#: Ops whose equal-looking nodes give different values (never merged).
_RANDOM = frozenset(
    {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "Dropout",
    }
)
#: Constants up to this many elements are compared by value (larger ones by identity).
_CSE_MAX_ELEMENTS = 4096


def _attr_key(attr: ir.Attr) -> object:
    if attr.is_ref():
        return ("ref", attr.ref_attr_name)
    kind = attr.type
    if kind in (
        ir.AttributeType.GRAPH,
        ir.AttributeType.GRAPHS,
        ir.AttributeType.SPARSE_TENSOR,
        ir.AttributeType.SPARSE_TENSORS,
        ir.AttributeType.TYPE_PROTO,
        ir.AttributeType.TYPE_PROTOS,
    ):
        return None
    if kind == ir.AttributeType.TENSOR:
        array = attr.as_tensor().numpy()
        return ("tensor", str(array.dtype), array.shape, array.tobytes())
    if kind == ir.AttributeType.TENSORS:
        return None
    value = attr.value
    return (int(kind), tuple(value) if isinstance(value, (list, tuple)) else value)


def _input_key(value: ir.Value | None) -> object:
    if value is None:
        return None
    if value.const_value is not None and not value.is_graph_input() and value.producer() is None:
        tensor = value.const_value
        if tensor.size <= _CSE_MAX_ELEMENTS:
            array = tensor.numpy()
            return ("const", str(array.dtype), array.shape, array.tobytes())
    return ("value", id(value))


def _node_key(node: ir.Node) -> object:
    """What makes two nodes compute the same values: op, attributes and inputs (small constants by
    value); None for nodes never merged (random ops, subgraphs, other domains)."""
    if node.domain not in ONNX_DOMAINS or node.op_type in _RANDOM:
        return None
    attrs = []
    for name in sorted(node.attributes):
        key = _attr_key(node.attributes[name])
        if key is None:
            return None
        attrs.append((name, key))
    return (
        node.op_type,
        node.overload,
        len(node.outputs),
        tuple(attrs),
        tuple(_input_key(v) for v in node.inputs),
    )


def merge_common_subexpressions(graph: GraphLike) -> int:
    """Nodes that compute the same values as an earlier node (same op, attributes and inputs) go;
    their readers read the earlier node's outputs (exact: ONNX ops other than the random ones are
    deterministic). BERT exports build the attention mask once per layer; torch writes equal
    constants under new names. A node with a graph output keeps its outputs. Returns the count."""
    seen: dict[object, ir.Node] = {}
    merged = 0
    for node in list(graph):
        if node.graph is None:
            continue
        key = _node_key(node)
        if key is None:
            continue
        first = seen.get(key)
        if first is None:
            seen[key] = node
            continue
        if any(o.is_graph_output() for o in node.outputs) or any(
            a.dtype != b.dtype for a, b in zip(first.outputs, node.outputs, strict=True)
        ):
            continue
        for mine, theirs in zip(node.outputs, first.outputs, strict=True):
            if theirs.shape is None and mine.shape is not None:
                theirs.shape = mine.shape
            mine.replace_all_uses_with(theirs)
        _drop(node)
        merged += 1
    return merged


def simplify_graph(
    graph: GraphLike, opset: int, names: NameAllocator, *, local: bool = True, fuse: bool = False
) -> SimplifyStats:
    """One sweep of the local rewrites (``local``) and the fusions (``fuse``; give it for the main
    graph only, where new initializers go) over ``graph``."""
    stats = SimplifyStats()
    if local:
        stats.simplified += merge_common_subexpressions(graph)
    for node in list(graph):
        if node.graph is not graph or node.domain not in ONNX_DOMAINS:
            continue
        if local and _local(node, opset, names):
            stats.simplified += 1
        elif fuse and isinstance(graph, ir.Graph) and _fusion(node, graph, names, opset):
            stats.fused += 1
    return stats
