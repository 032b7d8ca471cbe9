"""convert-opset: move a model to another ``ai.onnx`` opset, downwards included.

ATC looks ops up as ``ai.onnx::<model opset>::<op>`` with no fallback and registers standard ops
only for opsets 8–18, so an opset-19/20 export fails even for Conv. onnx's ``version_converter``
upgrades well but cannot go down ("No Adapter From Version $14 for Mul"). This pass:

- **upgrades** with onnx's ``version_converter`` (run on a proto without the large weights);
- **downgrades** node by node with its own adapters, in the main graph, every subgraph and every
  model-local function (each function at its own opset import):

  * ops whose newer versions only widened types or added attributes/optional inputs the node
    does not use (Mul, Add, Relu, Identity, Conv, Resize without the new attributes, …) are
    checked against the older schema (input and output element types, inputs, attributes) and
    kept; a used newer feature is an error naming it;
  * attribute↔input moves are rewritten: ``axes`` of ReduceSum (13) and the other reductions
    (18), Squeeze/Unsqueeze (13), Split (``split`` input at 13, ``num_outputs`` at 18), Pad's
    ``axes`` (18), Shape's ``start``/``end`` (15), Dropout's ``ratio`` (12), Resize's optional
    ``roi``/``scales`` (13), DFT's ``axis`` (20), Clip's ``min``/``max`` (11; constants only);
  * changed semantics are handled or refused: Softmax/LogSoftmax/Hardmax below 13 (only a last
    axis is equal), GridSample 20's mode names, Resize 19's ``half_pixel_symmetric``, Pad 19's
    ``wrap``, Scatter reductions, RoiAlign's coordinate mode (its default changed at 16),
    Reshape ``allowzero``, Cast ``saturate``, AveragePool ``dilations``;
  * ops newer than the target are decomposed into older ops (Gelu, LayerNormalization,
    GroupNormalization, Mish, HardSwish, Swish, AffineGrid, RMSNormalization, RotaryEmbedding,
    Attention, DeformConv): see ``opset_decompositions``, which lists what each handles.

:mod:`surgery.rules.opset_steps` holds ``OpsetStep`` (one node's conversion), the
``ADAPTERS``/``DECOMPOSITIONS`` tables both modules register into and the driver ``downgrade_graph``.

An op with no adapter is an error naming the op and node. Outputs are unchanged (``exact``).

Model-local functions: torch 2.13's dynamo exporter writes none at opset > 18 (its version
converter inlines every function); the TorchScript exporter's ``export_modules_as_functions`` does.
``inline-functions`` then ``convert-opset`` turns those into one ``ai.onnx`` graph at 18.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from surgery.errors import PassError
from surgery.graph import NameAllocator, is_onnx_domain, iter_graphs, walk
from surgery.options import option
from surgery.pass_base import (
    Numerics,
    SurgeryPass,
    SurgeryResult,
    declare_interface,
    declare_stats,
    interface,
)
from surgery.registry import register
from surgery.rules import schema
from surgery.rules.opset_steps import (
    ADAPTERS,
    DECOMPOSITIONS,
    OpsetStep,
    Refuse,
    adapter,
    downgrade_graph,
    generic_adapter,
)
from surgery.shapes.dims import is_known_dim

__all__ = ["ADAPTERS", "DECOMPOSITIONS", "ConvertOpset", "downgrade_graph"]

logger = logging.getLogger(__name__)

#: The newest opset ATC's ONNX parser registers standard ops for.
ATC_MAX_OPSET = 18

REDUCE_AXES_INPUT = {
    "ReduceSum": 13,
    **dict.fromkeys(
        (
            "ReduceMean",
            "ReduceMax",
            "ReduceMin",
            "ReduceProd",
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceSumSquare",
        ),
        18,
    ),
}


# ---- the generic check: newer versions that only widened types or added unused features ------

#: (op, since_version) whose semantics changed without a signature change; they need an adapter.
SEMANTIC_CHANGES = {
    ("Softmax", 13),
    ("LogSoftmax", 13),
    ("Hardmax", 13),
    ("GridSample", 20),
    ("Resize", 19),
    ("Pad", 19),
    ("ScatterElements", 18),
    ("ScatterND", 18),
    ("RoiAlign", 16),
}


def _history(op_type: str, domain: str = "") -> list[int]:
    versions = []
    v = 1000
    while True:
        s = schema.get_schema(op_type, v, domain)
        if s is None:
            break
        versions.append(s.since_version)
        v = s.since_version - 1
        if v < 1:
            break
    return versions  # newest first


@generic_adapter
def generic_check(step: OpsetStep) -> None:
    """Check ``step.node`` against the target's schema; drop new attributes left at their default.

    Refuses inputs, used outputs, non-default attributes and element types the older op lacks,
    and ops whose meaning changed between the versions (those need an adapter).
    """
    node = step.node
    low = step.tgt_since or 0
    older = schema.get_schema(node.op_type, step.target)
    assert older is not None
    for since in _history(node.op_type):
        if (
            low < since <= step.cur_since
            and (node.op_type, since) in SEMANTIC_CHANGES
            and node.op_type not in ADAPTERS
        ):
            raise Refuse(f"{node.op_type} changed meaning at opset {since} and has no adapter")
    # inputs the older op does not have
    max_in = len(older.inputs) if older.inputs and not _variadic(older.inputs[-1]) else 1 << 30
    for i, value in enumerate(node.inputs):
        if value is not None and i >= max_in:
            raise Refuse(
                f"input {i} ('{value.name}') has no equivalent before opset {_first_with(node.op_type, i)}"
            )
    max_out = len(older.outputs) if older.outputs and not _variadic(older.outputs[-1]) else 1 << 30
    for i, value in enumerate(node.outputs):
        if i >= max_out and (value.uses() or value.is_graph_output()):
            raise Refuse(f"output {i} ('{value.name}') does not exist at opset {step.target}")
    # attributes the older op does not have: fine when they hold the newer default
    for key in list(node.attributes):
        if key in older.attributes:
            continue
        default = schema.attr_default(node.op_type, key, step.current)
        got = schema.attr_value(node, key, step.current)
        if default is not None and _same(got, default):
            step.drop_attr(key)
            continue
        raise Refuse(f"attribute {key}={got!r} does not exist at opset {step.target}")
    # element types the older op does not accept
    binding = schema.type_bindings(node, step.target)
    if binding is not None:
        for kind, values, slots in (
            ("input", node.inputs, binding.inputs),
            ("output", node.outputs, binding.outputs),
        ):
            for i, value in enumerate(values):
                if value is None or i >= len(slots):
                    continue
                dtype = step.ctx.dtype(value)
                allowed = slots[i][1]
                if dtype is not None and allowed and dtype not in allowed:
                    raise Refuse(
                        f"{kind} {i} ('{value.name}') is {dtype.name}, which opset {step.target} does not accept"
                    )


def _variadic(param: Any) -> bool:
    return param.option == onnx.defs.OpSchema.FormalParameterOption.Variadic


def _first_with(op_type: str, index: int) -> int:
    for since in reversed(_history(op_type)):
        s = schema.get_schema(op_type, since)
        if s is not None and len(s.inputs) > index:
            return since
    return 0


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, float) or isinstance(b, float):
        return (
            a is not None
            and b is not None
            and abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
        )
    return a == b


# ---- attribute <-> input moves -------------------------------------------------------------


@adapter(*REDUCE_AXES_INPUT)
def _reduce(step: OpsetStep) -> None:
    moved_at = REDUCE_AXES_INPUT[step.node.op_type]
    if step.cur_since >= moved_at > step.target:
        axes = step.const_input(1, "axes")
        noop = step.attr("noop_with_empty_axes", 0)
        if (axes is None or axes.size == 0) and noop:
            raise Refuse("noop_with_empty_axes=1 with no axes (an identity) has no older form")
        step.drop_inputs_from(1)
        step.drop_attr("noop_with_empty_axes")
        if axes is not None and axes.size:
            step.set_attr("axes", [int(a) for a in axes.reshape(-1)])
    generic_check(step)


@adapter("Squeeze", "Unsqueeze")
def _squeeze(step: OpsetStep) -> None:
    if step.cur_since >= 13 > step.target:
        step.input_to_ints_attr(1, "axes")
    generic_check(step)


@adapter("Split")
def _split(step: OpsetStep) -> None:
    node = step.node
    if step.cur_since >= 18 > step.target and "num_outputs" in node.attributes:
        n = int(step.attr("num_outputs"))
        step.drop_attr("num_outputs")
        has_split = len(node.inputs) > 1 and node.inputs[1] is not None
        if not has_split:
            shape = step.ctx.shape(node.inputs[0])
            axis = int(step.attr("axis", 0))
            dim = None
            if shape is not None and -len(shape) <= axis < len(shape):
                dim = shape[axis]
            if is_known_dim(dim):
                chunk = -(-dim // n)
                sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
                if len(set(sizes)) > 1:  # uneven: opset 13 needs the sizes spelled out
                    b = step.builder()
                    split = b.ints(sizes, "split")
                    node.graph.insert_before(node, b.nodes)  # type: ignore[union-attr]
                    node.resize_inputs(2)
                    node.replace_input_with(1, split)
            else:
                logger.info(
                    "Split '%s': num_outputs=%d on a dynamic axis; opset 13 splits evenly",
                    node.name,
                    n,
                )
    if step.cur_since >= 13 > step.target:
        step.input_to_ints_attr(1, "split")
    generic_check(step)


@adapter("Pad")
def _pad(step: OpsetStep) -> None:
    node = step.node
    if step.cur_since >= 19 > step.target and step.attr("mode", "constant") == "wrap":
        raise Refuse("mode='wrap' exists only from opset 19")
    if step.cur_since >= 18 > step.target and len(node.inputs) > 3 and node.inputs[3] is not None:
        axes = step.const_input(3, "axes")
        pads = step.const_input(1, "pads")
        assert axes is not None and pads is not None
        shape = step.ctx.shape(node.inputs[0])
        if shape is None:
            raise Refuse("Pad with axes on an input of unknown rank")
        rank = len(shape)
        full = np.zeros(2 * rank, dtype=np.int64)
        k = len(axes)
        for j, a in enumerate(axes.reshape(-1)):
            a = int(a) % rank
            full[a] = pads[j]
            full[rank + a] = pads[k + j]
        b = step.builder()
        new_pads = b.ints(full.tolist(), "pads")
        node.graph.insert_before(node, b.nodes)  # type: ignore[union-attr]
        step.orphans.append(node.inputs[1])  # type: ignore[arg-type]
        node.replace_input_with(1, new_pads)
        step.drop_inputs_from(3)
    if step.cur_since >= 11 > step.target:
        pads = step.const_input(1, "pads")
        value = step.const_input(2, "constant_value")
        step.drop_inputs_from(1)
        step.set_attr("pads", [int(p) for p in pads.reshape(-1)])  # type: ignore[union-attr]
        if value is not None:
            step.set_attr("value", float(value.reshape(-1)[0]))
    generic_check(step)


@adapter("Shape")
def _shape(step: OpsetStep) -> None:
    node = step.node
    if step.cur_since >= 15 > step.target:
        start, end = int(step.attr("start", 0)), step.attr("end")
        step.drop_attr("start")
        step.drop_attr("end")
        if start != 0 or end is not None:
            b = step.builder()
            full = b.op("Shape", node.inputs[0])
            out = b.slice(
                full, [start], [int(end) if end is not None else np.iinfo(np.int64).max], [0]
            )
            step.replace(b.nodes, [out])
            return
    generic_check(step)


@adapter("Dropout")
def _dropout(step: OpsetStep) -> None:
    if step.cur_since >= 12 > step.target:
        ratio = step.const_input(1, "ratio")
        training = step.const_input(2, "training_mode")
        if training is not None and bool(training.reshape(-1)[0]):
            raise Refuse("training_mode=True has no form before opset 12")
        step.drop_inputs_from(1)
        step.drop_attr("seed")
        if ratio is not None:
            step.set_attr("ratio", float(ratio.reshape(-1)[0]))
    generic_check(step)


@adapter("Clip")
def _clip(step: OpsetStep) -> None:
    if step.cur_since >= 11 > step.target:
        bounds = {}
        for i, name in ((1, "min"), (2, "max")):
            value = step.const_input(i, name)
            if value is None:
                continue
            number = float(value.reshape(-1)[0])
            if float(np.float32(number)) != number:
                raise Refuse(
                    f"{name}={number!r} is not a float32, and opset {step.target} holds {name} in a float attribute"
                )
            bounds[name] = number
        step.drop_inputs_from(1)
        for name, number in bounds.items():
            step.set_attr(name, number)
    generic_check(step)


@adapter("Resize")
def _resize(step: OpsetStep) -> None:
    node = step.node
    if (
        step.cur_since >= 19 > step.target
        and step.attr("coordinate_transformation_mode") == "half_pixel_symmetric"
    ):
        raise Refuse(
            "coordinate_transformation_mode='half_pixel_symmetric' exists only from opset 19"
        )
    if step.cur_since >= 13 > step.target:
        # roi and scales became optional at 13; opset 11 wants them present (empty is allowed)
        b = step.builder()
        for i, what in ((1, "roi"), (2, "scales")):
            if len(node.inputs) <= i or node.inputs[i] is None:
                if len(node.inputs) <= i:
                    node.resize_inputs(i + 1)
                node.replace_input_with(i, b.const(np.zeros(0, np.float32), what))
        if b.nodes:
            node.graph.insert_before(node, b.nodes)  # type: ignore[union-attr]
    generic_check(step)


@adapter("ScatterElements", "ScatterND")
def _scatter(step: OpsetStep) -> None:
    reduction = step.attr("reduction", "none")
    if reduction in ("max", "min") and step.target < 18:
        raise Refuse(f"reduction='{reduction}' exists only from opset 18")
    if reduction != "none" and step.target < 16:
        raise Refuse(f"reduction='{reduction}' exists only from opset 16")
    if step.target < 16:
        step.drop_attr("reduction")
    generic_check(step)


@adapter("RoiAlign")
def _roialign(step: OpsetStep) -> None:
    if step.cur_since >= 16 > step.target:
        mode = step.attr("coordinate_transformation_mode", "half_pixel")
        if mode != "output_half_pixel":
            raise Refuse(
                f"coordinate_transformation_mode='{mode}'; before opset 16 RoiAlign always behaves as 'output_half_pixel'"
            )
        step.drop_attr("coordinate_transformation_mode")
    generic_check(step)


@adapter("Softmax", "LogSoftmax", "Hardmax")
def _softmax(step: OpsetStep) -> None:
    if step.cur_since >= 13 > step.target:
        axis = int(step.attr("axis", -1))
        shape = step.ctx.shape(step.node.inputs[0])
        last = axis == -1 or (shape is not None and axis == len(shape) - 1)
        if not last:
            raise Refuse(
                f"axis={axis} is not the last axis; before opset 13 the op flattens from the axis on"
            )
        step.set_attr("axis", -1 if shape is None else len(shape) - 1)
    generic_check(step)


@adapter("GridSample")
def _gridsample(step: OpsetStep) -> None:
    if step.target < 16:
        raise Refuse("GridSample exists only from opset 16; run decompose-gridsample first")
    if step.cur_since >= 20 > step.target:
        mode = step.attr("mode", "linear")
        renamed = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}.get(mode)
        if renamed is None:
            raise Refuse(f"mode={mode!r}")
        shape = step.ctx.shape(step.node.inputs[0])
        if shape is not None and len(shape) != 4:
            raise Refuse(f"a {len(shape)}-D GridSample exists only from opset 20")
        step.set_attr("mode", renamed)
    generic_check(step)


@adapter("Reshape")
def _reshape(step: OpsetStep) -> None:
    if step.cur_since >= 14 > step.target and step.attr("allowzero", 0):
        shape = step.const_input(1, "shape")
        if shape is None or (shape == 0).any():
            raise Refuse("allowzero=1 with a shape that may hold 0 has no form before opset 14")
        step.drop_attr("allowzero")
    generic_check(step)


@adapter("Cast", "CastLike")
def _cast(step: OpsetStep) -> None:
    if step.target < 19 and "saturate" in step.node.attributes:
        step.drop_attr("saturate")  # only affects float8 targets, which do not exist before 19
    generic_check(step)


@adapter("AveragePool")
def _avgpool(step: OpsetStep) -> None:
    if step.target < 19:
        dilations = step.attr("dilations")
        if dilations and any(int(d) != 1 for d in dilations):
            raise Refuse(f"dilations={list(dilations)} exist only from opset 19")
        step.drop_attr("dilations")
    generic_check(step)


@adapter("DFT")
def _dft(step: OpsetStep) -> None:
    if step.cur_since >= 20 > step.target:
        axis = step.const_input(2, "axis")
        step.drop_inputs_from(2)
        step.set_attr("axis", int(axis.reshape(-1)[0]) if axis is not None else -2)
    generic_check(step)


# ---- driving -------------------------------------------------------------------------------


#: Where another pass removes an op convert-opset cannot express at an older opset.
@register
class ConvertOpset(SurgeryPass):
    """Convert the model to another ai.onnx opset (default 18, ATC's newest), downgrades included."""

    name = "convert-opset"
    numerics = Numerics.EXACT
    statistics = declare_stats(
        upgraded_from="the ai.onnx opset the model was upgraded from (onnx's version converter)",
        downgraded_from="the ai.onnx opset the main graph was downgraded from",
        decomposed="nodes replaced by a decomposition (the op does not exist at the target opset)",
        adapted="nodes whose inputs or attributes were rewritten for the target opset",
    )

    @dataclasses.dataclass(frozen=True)
    class Options:
        target: int = option(
            ATC_MAX_OPSET, help="the ai.onnx opset to convert to (ATC parses 8-18)"
        )

        def __post_init__(self) -> None:
            if not 7 <= self.target <= onnx.defs.onnx_opset_version():
                raise ValueError(
                    f"target must be between 7 and {onnx.defs.onnx_opset_version()}, got {self.target}"
                )

    def call(self, model: ir.Model) -> SurgeryResult:
        interface_before = interface(model)
        target = self.options.target
        current = schema.opset_of(model.opset_imports, "")
        if current is None:
            raise PassError("the model imports no ai.onnx opset", pass_name=self.name)
        stats: dict[str, int] = {}
        notes: list[str] = []
        if current < target:
            self._upgrade(model, current, target)
            stats["upgraded_from"] = current
            notes.append(f"upgraded from opset {current} with onnx's version_converter")
        names = NameAllocator(model)
        from surgery.rules.engine import InferredTypes

        inferred = InferredTypes(model)
        for graph, opsets in [(sc.graph, sc.opsets) for sc in walk(model)]:
            version = schema.opset_of(opsets, "")
            if version is None or version <= target:
                continue
            downgrade_graph(
                model, graph, opsets, version, target, names, self.name, stats, inferred
            )
        changed = False
        for imports in [model.opset_imports] + [f.opset_imports for f in model.functions.values()]:
            key = "" if "" in imports else ("ai.onnx" if "ai.onnx" in imports else None)
            if key is not None and imports[key] > target:
                if imports is model.opset_imports:
                    stats["downgraded_from"] = imports[key]
                imports[key] = target
                changed = True
        modified = changed or bool(stats)
        return declare_interface(
            SurgeryResult(model, modified, stats=stats, notes=notes),
            interface_before,
            model,
            "convert-opset rewrites the graph",
        )

    def _upgrade(self, model: ir.Model, current: int, target: int) -> None:
        from surgery.model_io import LightProto

        light = LightProto(model)
        try:
            converted = onnx.version_converter.convert_version(light.proto, target)
        except Exception as exc:  # the C++ converter raises RuntimeError / ConvertError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PassError(
                f"onnx's version_converter could not upgrade opset {current} to {target}: {first}",
                pass_name=self.name,
            ) from None
        new = ir.from_proto(converted)
        for name, value in new.graph.initializers.items():
            if name in light.tensors:
                value.const_value = light.tensors[name]
        # the converter drops model-local functions: keep ours (they carry their own opset imports)
        model.graph = new.graph  # the model's opset imports live on its graph
        names = NameAllocator(model)
        for graph in iter_graphs(model):
            for node in graph:
                if node.name:
                    continue
                # nodes the converter added (axes constants …) are named after the node they feed
                user = next(
                    (u.node for out in node.outputs for u in out.uses() if u.node.name), None
                )
                node.name = names.derive(user.name if user is not None else "", node.op_type)
        for function in model.functions.values():
            version = schema.opset_of(function.opset_imports, "")
            if version is None or version >= target:
                continue
            same = all(
                schema.since_version(n.op_type, version) == schema.since_version(n.op_type, target)
                for n in function.all_nodes()
                if is_onnx_domain(n.domain)
            )
            if same:  # nothing in it changed between the versions: just move its import
                function.opset_imports["" if "" in function.opset_imports else "ai.onnx"] = target
            else:
                logger.info(
                    "function %s keeps ai.onnx %d (some of its ops differ at %d)",
                    function.name,
                    version,
                    target,
                )
