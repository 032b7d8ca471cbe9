"""What each tensor's value and shape depend on, and where data-dependent shapes start.

Two facts are propagated through a graph in topological order, for every value:

- ``data``: its *value* depends on the values of graph inputs (not only on their shapes). The output
  of ``Shape``/``Size`` depends only on its input's shape, so it is data-dependent only when that
  shape is.
- ``dynamic``: its *shape* depends on input values, so no choice of input shapes makes it static.
  It starts at ops whose output size is decided by data (``NonZero``, ``NonMaxSuppression``,
  ``Unique``, ``Compress``) and at ops whose shape-deciding input (``TopK``'s k, ``Reshape``'s
  shape, ``Slice``'s bounds, ``Range``'s limits …) is data-dependent, and it flows to consumers.

A shape computed from input *shapes* (``Shape → Gather → Min → TopK``) is not data-dependent: it
becomes a constant once the input shapes are fixed. The nodes where ``dynamic`` starts, together
with ops an NPU compiler cannot take (``Loop``, ``Scan``, sequences, ``If`` on a data-dependent
condition), are the *hostile* nodes: everything downstream of them belongs to the CPU side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

import onnx_ir as ir

from surgery.analysis.dataflow import Dataflow
from surgery.graph import is_onnx_domain, nested_nodes

__all__ = [
    "DATA_DEPENDENT_SHAPE_OPS",
    "NPU_HOSTILE_OPS",
    "SHAPE_INPUTS",
    "Dependence",
    "FunctionMap",
    "Hostile",
    "analyse",
]

#: Ops whose output shape is decided by input values, whatever those are.
DATA_DEPENDENT_SHAPE_OPS = frozenset(
    {"NonZero", "NonMaxSuppression", "Unique", "Compress", "StringSplit"}
)

#: Ops an NPU graph compiler does not take (ATC registers no Loop, Scan or sequence op).
NPU_HOSTILE_OPS = frozenset(
    {
        "Loop",
        "Scan",
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "SequenceMap",
        "SplitToSequence",
        "ConcatFromSequence",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
    }
)

#: op type → indices of the inputs whose *values* decide the output shape.
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "TopK": (1,),
    "Resize": (2, 3),
    "Upsample": (1,),
    "Pad": (1, 3),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "OneHot": (1,),
    "Split": (1,),
    "CenterCropPad": (1,),
    "Col2Im": (1, 2),
    "MaxUnpool": (2,),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
    "ReduceL1": (1,),
    "ReduceL2": (1,),
    "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,),
    "RandomNormalLike": (),
    "STFT": (2, 3),
    "DFT": (1,),
}

_SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})


@dataclasses.dataclass(frozen=True)
class Hostile:
    """A node the NPU side must not contain, and why."""

    node: ir.Node
    reason: str

    @property
    def name(self) -> str:
        return self.node.name or f"<unnamed {self.node.op_type}>"

    def to_dict(self) -> dict[str, str]:
        return {"node": self.name, "op_type": self.node.op_type, "reason": self.reason}


@dataclasses.dataclass
class Dependence:
    """The result of :func:`analyse` for one graph."""

    flow: Dataflow
    data: set[ir.Value]
    """Values whose value depends on graph input values."""
    dynamic: set[ir.Value]
    """Values whose shape depends on graph input values."""
    hostile: list[Hostile]
    """Hostile nodes in graph order."""

    def is_static_shape_capable(self, value: ir.Value) -> bool:
        return value not in self.dynamic


FunctionMap = Mapping[tuple[str, str, str], ir.Function]


class _Contents:
    """Finds hostile ops inside subgraphs and model-local function bodies (memoized per function)."""

    def __init__(self, ops: Collection[str], functions: FunctionMap | None) -> None:
        self.ops = frozenset(ops)
        self.functions = functions or {}
        self._memo: dict[tuple[str, str, str], ir.Node | None] = {}

    def _scan(self, nodes: Iterable[ir.Node]) -> ir.Node | None:
        for node in nodes:
            if is_onnx_domain(node.domain) and node.op_type in self.ops:
                return node
            found = self.find(node)
            if found is not None:
                return found
        return None

    def _function(self, key: tuple[str, str, str]) -> ir.Node | None:
        if key not in self._memo:
            self._memo[key] = None  # a recursive call terminates here
            self._memo[key] = self._scan(self.functions[key])
        return self._memo[key]

    def find(self, node: ir.Node) -> ir.Node | None:
        """A hostile op inside ``node``'s subgraphs or its function body, or None."""
        key = node.op_identifier()
        if key in self.functions:
            found = self._function(key)
            if found is not None:
                return found
        for _, inner in nested_nodes(node):
            if is_onnx_domain(inner.domain) and inner.op_type in self.ops:
                return inner
            if inner.op_identifier() in self.functions:
                found = self._function(inner.op_identifier())
                if found is not None:
                    return found
        return None


def analyse(
    graph: ir.Graph,
    *,
    hostile_ops: Collection[str] = (),
    flow: Dataflow | None = None,
    functions: FunctionMap | None = None,
) -> Dependence:
    """Propagate value and shape data-dependence through ``graph`` and list its hostile nodes.

    ``hostile_ops`` adds op types (of the default domain) to treat as hostile wherever they are.
    ``functions`` (``model.functions``) lets a call of a model-local function that contains a
    hostile op count as hostile. Linear in the size of the graph, its subgraphs and functions.
    """
    flow = flow or Dataflow(graph)
    extra = frozenset(hostile_ops)
    contents = _Contents(DATA_DEPENDENT_SHAPE_OPS | NPU_HOSTILE_OPS | extra, functions)
    data: set[ir.Value] = set()
    dynamic: set[ir.Value] = set()
    hostile: list[Hostile] = []
    for value in graph.inputs:
        data.add(value)  # an input with an initializer is still overridable by the caller
    for node in flow.nodes:
        inputs = flow.inputs_of(node)
        explicit = node.inputs
        std = is_onnx_domain(node.domain)
        op = node.op_type
        in_dynamic = any(v in dynamic for v in inputs)
        if std and op in _SHAPE_ONLY_OPS:
            out_data = bool(explicit and explicit[0] is not None and explicit[0] in dynamic)
        else:
            out_data = any(v in data for v in inputs)
        reason: str | None = None
        starts_dynamic = False
        if std and op in DATA_DEPENDENT_SHAPE_OPS:
            reason = f"{op}: output shape depends on input values"
            starts_dynamic = True
        elif std and op in SHAPE_INPUTS:
            deciders = [
                explicit[i]
                for i in SHAPE_INPUTS[op]
                if i < len(explicit) and explicit[i] is not None
            ]
            culprit = next((v for v in deciders if v in data), None)
            if culprit is not None:
                role = "k" if op == "TopK" else f"input '{culprit.name}'"
                reason = f"{op}: {role} is computed from input values, so the output shape is data-dependent"
                starts_dynamic = True
        if reason is None and std and op in NPU_HOSTILE_OPS:
            reason = f"{op}: not supported by the NPU compiler"
        if reason is None and std and op in extra:
            reason = f"{op}: listed in hostile_ops"
        if reason is None:
            inner = contents.find(node)
            if inner is not None:
                where = (
                    "function body" if node.op_identifier() in contents.functions else "subgraph"
                )
                reason = f"{op}: its {where} contains {inner.op_type} ('{inner.name}')"
                starts_dynamic = True
        if reason is None and not std and op in extra:
            reason = f"{node.domain}::{op}: listed as hostile"
        if reason is None and std and op == "If":
            cond = explicit[0] if explicit else None
            if cond is not None and cond in data:
                reason = "If: the branch taken depends on input values"
                starts_dynamic = True
        if reason is not None:
            hostile.append(Hostile(node, reason))
        # Shape/Size outputs have a static shape (the rank / a scalar) even of a dynamic input.
        out_dynamic = starts_dynamic or (in_dynamic and not (std and op in _SHAPE_ONLY_OPS))
        for out in node.outputs:
            if out_data:
                data.add(out)
            if out_dynamic:
                dynamic.add(out)
    return Dependence(flow=flow, data=data, dynamic=dynamic, hostile=hostile)
