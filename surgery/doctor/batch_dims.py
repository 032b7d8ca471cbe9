"""Which dynamic input dims are the batch: found by following dims through the graph.

The emitted pipeline must give every dynamic dim a size. Dim 0 is the batch of an image or token
input, but a recurrent state ``[2, batch, 128]`` has its batch at dim 1, and a placeholder of 128
there makes ONNX Runtime fail (the state must match the signal's batch). This module ties dims
together and reports those that equal the batch (dim 0) of an input whose dim 0 is dynamic:

- dims of the same name are the same dim;
- every unknown input dim gets a unique symbol and onnx shape inference (data propagation on,
  large weights left out) carries the symbols through the graph;
- then, node by node, dims that must be equal are unified: aligned dims of broadcasting
  elementwise ops (where neither is 1), the non-axis dims of Concat, MatMul's batch dims and
  contraction, and the batch of RNN/GRU/LSTM's ``X`` with their initial states' batch.

It is a best effort: a dim nothing ties to a batch keeps the placeholder (and its DECIDE note).
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

__all__ = ["batch_dims"]


_PREFIX = "__surgery_dim"
_BROADCAST = frozenset(
    [
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Where",
        "Equal",
        "Greater",
        "Less",
        "GreaterOrEqual",
        "LessOrEqual",
        "And",
        "Or",
        "Xor",
        "BitShift",
        "Mod",
        "PRelu",
    ]
)
_RNN = frozenset({"RNN", "GRU", "LSTM"})


class _Union:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        root = key
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(key, key) != root:  # path compression
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def _symbols(model: ir.Model) -> dict[tuple[str, int], str]:
    """A symbol for every dynamic input dim: its name if it has one, else a unique one."""
    out: dict[tuple[str, int], str] = {}
    for value in model.graph.inputs:
        if value.const_value is not None or value.shape is None or not value.name:
            continue
        for axis, dim in enumerate(value.shape):
            if isinstance(dim, int) and dim >= 0:
                continue
            name = getattr(dim, "value", None)
            out[(value.name, axis)] = name if name else f"{_PREFIX}_{value.name}_{axis}"
    return out


def _inferred(model: ir.Model, symbols: dict[tuple[str, int], str]) -> onnx.ModelProto | None:
    from surgery.model_io import LightProto
    from surgery.shapes.infer import onnx_inference

    proto = LightProto(model).for_checker()
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            symbol = symbols.get((value.name, axis))
            if symbol is not None:
                dim.Clear()
                dim.dim_param = symbol
    # a best effort: without inference only names tie dims together
    return onnx_inference(proto, quiet=True)


def _tie_node(
    node: onnx.NodeProto, table: dict[str, list[str | int | None]], union: _Union
) -> None:
    def dims(i: int) -> list[str | int | None] | None:
        return table.get(node.input[i]) if i < len(node.input) and node.input[i] else None

    def tie(a: str | int | None, b: str | int | None) -> None:
        if isinstance(a, str) and isinstance(b, str):
            union.union(a, b)

    op = node.op_type
    if op in _BROADCAST:
        shapes = [d for i in range(len(node.input)) if (d := dims(i)) is not None]
        for left in range(len(shapes)):
            for right in range(left + 1, len(shapes)):
                for a, b in zip(reversed(shapes[left]), reversed(shapes[right]), strict=False):
                    tie(a, b)
    elif op == "Concat":
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        shapes = [d for i in range(len(node.input)) if (d := dims(i)) is not None]
        for shape in shapes[1:]:
            if len(shape) == len(shapes[0]):
                rank = len(shape)
                for k, (a, b) in enumerate(zip(shapes[0], shape, strict=True)):
                    if k != axis % rank:
                        tie(a, b)
    elif op == "MatMul":
        lhs, rhs = dims(0), dims(1)
        if lhs and rhs and len(lhs) >= 2 and len(rhs) >= 2:
            tie(lhs[-1], rhs[-2])
            for x, y in zip(reversed(lhs[:-2]), reversed(rhs[:-2]), strict=False):
                tie(x, y)
    elif op in _RNN:
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        seq = dims(0)
        if seq and len(seq) == 3:
            batch = seq[0] if layout else seq[1]
            for index in (5, 6):  # initial_h, initial_c
                state = dims(index)
                if state and len(state) == 3:
                    tie(batch, state[0] if layout else state[1])


def batch_dims(model: ir.Model) -> dict[tuple[str, int], str]:
    """``{(input, axis): why}`` for every dynamic input dim tied to the batch of another input.

    The batch dims are dim 0 of inputs whose dim 0 is dynamic; a dim tied to one of them (by name
    or through the graph) is returned with the input it was tied to, for the DECIDE note.
    """
    symbols = _symbols(model)
    if not symbols:
        return {}
    union = _Union()
    proto = _inferred(model, symbols)
    if proto is not None:
        table: dict[str, list[str | int | None]] = {}
        for info in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
            if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
                continue
            table[info.name] = [
                d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None)
                for d in info.type.tensor_type.shape.dim
            ]
        for node in proto.graph.node:
            _tie_node(node, table, union)
    roots = {union.find(symbol): name for (name, axis), symbol in symbols.items() if axis == 0}
    tied: dict[tuple[str, int], str] = {}
    for (name, axis), symbol in symbols.items():
        if axis == 0:
            continue
        batch_of = roots.get(union.find(symbol))
        if batch_of is not None:
            tied[(name, axis)] = batch_of
    return tied
