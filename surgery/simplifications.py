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
  - ``x * 1``, ``1 * x``, ``x / 1``, ``x + 0``, ``0 + x``, ``x - 0`` → ``x`` when the output has ``x``'s
    shape and type (no broadcast grows it);
  - ``Concat`` of one input, ``Expand``/``Reshape`` to ``x``'s own static shape → ``x``;

- and, in the main graph, fusions that reorder float math (outputs equal to rounding, the
  ``exact`` tolerance; ATC performs the same fusions itself):

  - ``Conv``/``ConvTranspose`` (group 1) ``→ BatchNormalization`` (inference form) → one node with
    scaled weights and bias;
  - ``Conv``/``ConvTranspose ⟶ Add(per-channel constant)`` → the constant folded into the bias;
  - ``MatMul(2-D, constant 2-D) → Add(constant row)`` → ``Gemm``.

Fused weights are new initializers (a weight shared with another node is never modified).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TypeGuard

import numpy as np
import onnx_ir as ir

from surgery.graph import GraphLike, NameAllocator, const_value, forward_value

__all__ = ["SimplifyStats", "constants_to_initializers", "simplify_graph"]

logger = logging.getLogger(__name__)

_ONNX = ("", "ai.onnx")


@dataclasses.dataclass
class SimplifyStats:
    constants_folded: int = 0
    simplified: int = 0
    fused: int = 0


def _std(node: ir.Node | None, *ops: str) -> TypeGuard[ir.Node]:
    return node is not None and node.domain in _ONNX and node.op_type in ops


def _only_reader(value: ir.Value | None) -> ir.Node | None:
    if value is None or value.is_graph_output():
        return None
    uses = list(value.uses())
    return uses[0].node if len(uses) == 1 else None


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
        if out.is_graph_output() or not out.name or next(iter(node.attributes), None) == "sparse_value":
            continue
        array = const_value(out)
        if array is None:
            continue
        attr = next(iter(node.attributes.values()))
        tensor = attr.as_tensor() if attr.name == "value" else ir.Tensor(np.ascontiguousarray(array))
        name = out.name
        value = ir.Value(name=None, type=ir.TensorType(tensor.dtype), shape=ir.Shape(array.shape),
                         const_value=tensor)
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
    return array is not None and array.size > 0 and bool(np.all(array == number)) and not np.issubdtype(
        array.dtype, np.bool_
    )


def _reshape_of_reshape(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    inner = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
    if not _std(inner, "Reshape") or _only_reader(node.inputs[0]) is not node or len(node.inputs) < 2:
        return False
    target = const_value(node.inputs[1])
    if target is None or np.any(target == 0) or inner.inputs[0] is None:  # 0 copies the middle tensor's dim
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
    if node.op_type == "Unsqueeze":  # Unsqueeze(Squeeze(x, a), a) = x only if x had 1s there (it must)
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


def _shape_constant(graph: GraphLike, names: NameAllocator, before: ir.Node, dims: tuple[int, ...]) -> ir.Value:
    """An int64 shape constant usable by ``before``: an initializer in a graph, a Constant node in a function."""
    name = names.derive(before.name or before.op_type, "shape")
    tensor = ir.Tensor(np.asarray(dims, dtype=np.int64), name=name)
    if isinstance(graph, ir.Graph):
        value = ir.Value(name=name, type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([len(dims)]),
                         const_value=tensor)
        graph.initializers.add(value)
        return value
    const = ir.node("Constant", [], {"value": tensor}, name=name,
                    outputs=[ir.val(names.derive(name, "out"), ir.DataType.INT64, shape=ir.Shape([len(dims)]))])
    const.outputs[0].const_value = tensor
    graph.insert_before(before, const)
    return const.outputs[0]


_MERGE_RESHAPE_THEN_TRANSPOSE = False


def _transpose_as_reshape(node: ir.Node, perm: list[int], x: ir.Value, names: NameAllocator) -> bool:
    """A Transpose that only moves 1-sized dims, next to a Reshape, merges into that Reshape."""
    shape, out_shape = _static(x.shape), _static(node.outputs[0].shape)
    if shape is None or out_shape is None or len(shape) != len(perm) or not _moves_only_ones(perm, shape):
        return False
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
    # T(Reshape(y)) = Reshape(y) is switched off: on real exports (Swin, SegFormer, MobileViT from
    # transformers) it produced Reshapes whose annotation contradicts inference, which the checker gate
    # refused after cleanup (bench/zoo rows); re-enable with a test once the cause is found.
    if _MERGE_RESHAPE_THEN_TRANSPOSE and _std(producer, "Reshape") and _only_reader(x) is node and producer.graph is graph:
        if not forward_value(node.outputs[0], x):
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


_LOCAL: dict[str, Callable[[ir.Node, int, NameAllocator], bool]] = {
    "Squeeze": _squeeze_pair,
    "Unsqueeze": _squeeze_pair,
    "Transpose": _transpose,
    "Mul": _neutral,
    "Div": _neutral,
    "Add": _neutral,
    "Sub": _neutral,
    "Concat": _concat_of_one,
}


# -- fusions (main graph) -----------------------------------------------------------------------


def _new_initializer(graph: ir.Graph, names: NameAllocator, base: str, suffix: str, array: np.ndarray) -> ir.Value:
    name = names.derive(base, suffix)
    tensor = ir.Tensor(np.ascontiguousarray(array), name=name)
    value = ir.Value(name=name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(array.shape), const_value=tensor)
    graph.initializers.add(value)
    return value


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


def _set_conv_params(conv: ir.Node, graph: ir.Graph, names: NameAllocator, weight: np.ndarray | None,
                     bias: np.ndarray) -> None:
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
    if len(add.inputs) != 2 or any(v is None for v in add.inputs):
        return False
    for y, other in (add.inputs, add.inputs[::-1]):
        if y is None or other is None:
            continue
        conv = y.producer()
        if not _std(conv, *_CONVS) or _only_reader(y) is not add or conv.graph is not graph:
            continue
        parts = _conv_parts(conv)
        constant = const_value(other)
        out_shape = _static(y.shape)
        if parts is None or constant is None or out_shape is None or constant.dtype != parts[0].dtype:
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
        _set_conv_params(conv, graph, names, None, (parts[1].astype(np.float64) + per_channel).astype(parts[0].dtype))
        _drop(add)
        return True
    return False


def _fuse_matmul_add(add: ir.Node, graph: ir.Graph, names: NameAllocator) -> bool:
    if len(add.inputs) != 2 or any(v is None for v in add.inputs):
        return False
    for y, other in (add.inputs, add.inputs[::-1]):
        if y is None or other is None:
            continue
        matmul = y.producer()
        if not _std(matmul, "MatMul") or _only_reader(y) is not add or matmul.graph is not graph:
            continue
        a, w = matmul.inputs
        a_shape = _static(a.shape) if a is not None else None
        weight, bias = const_value(w), const_value(other)
        if a_shape is None or len(a_shape) != 2 or weight is None or weight.ndim != 2 or bias is None:
            continue
        if weight.dtype.kind != "f":
            continue
        if bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1) or bias.dtype != weight.dtype:
            continue
        if not _same_signature(add.outputs[0], y):
            continue
        gemm = ir.node("Gemm", [a, w, other], name=names.derive(matmul.name or "MatMul", "gemm"),
                       outputs=[ir.val(names.derive(y.name or "gemm", "gemm"), y.dtype, shape=y.shape)])
        graph.insert_before(matmul, gemm)
        if not forward_value(add.outputs[0], gemm.outputs[0]):  # cannot happen: produced in this graph
            graph.remove(gemm, safe=True)
            continue
        _drop(add)
        _drop(matmul)
        return True
    return False


def _local(node: ir.Node, opset: int, names: NameAllocator) -> bool:
    op = node.op_type
    if op == "Reshape":
        return _reshape_of_reshape(node, opset, names) or _noop_reshape(node, opset, names)
    if op == "Expand":
        return _noop_reshape(node, opset, names)
    rewrite = _LOCAL.get(op)
    return rewrite is not None and rewrite(node, opset, names)


def _fusion(node: ir.Node, graph: ir.Graph, names: NameAllocator) -> bool:
    if node.op_type == "BatchNormalization":
        return _fuse_conv_bn(node, graph, names)
    if node.op_type == "Add":
        return _fuse_conv_add(node, graph, names) or _fuse_matmul_add(node, graph, names)
    return False


def simplify_graph(
    graph: GraphLike, opset: int, names: NameAllocator, *, local: bool = True, fuse: bool = False
) -> SimplifyStats:
    """One sweep of the local rewrites (``local``) and the fusions (``fuse``; give it for the main
    graph only, where new initializers go) over ``graph``."""
    stats = SimplifyStats()
    for node in list(graph):
        if node.graph is not graph or node.domain not in _ONNX:
            continue
        if local and _local(node, opset, names):
            stats.simplified += 1
        elif fuse and isinstance(graph, ir.Graph) and _fusion(node, graph, names):
            stats.fused += 1
    return stats
