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
  * ops newer than the target are decomposed: Gelu (20), LayerNormalization (17),
    GroupNormalization (18; and 21, whose scale/bias are per channel), Mish (18),
    HardSwish (14), Swish (24), and what torch 2.13 exports above opset 18:

    - AffineGrid (20; ``F.affine_grid`` with the TorchScript exporter): a MatMul of a constant
      base grid (from a constant ``size``; built with Range otherwise) with θᵀ, 2-D and 3-D,
      ``align_corners`` 0/1 (a 1-long axis gets ONNX Runtime's coordinate);
    - RMSNormalization (23; ``nn.RMSNorm`` with the dynamo exporter at opset 23);
    - RotaryEmbedding (23; ``torch.onnx.ops.rotary_embedding``): 3-D/4-D input, position ids or
      batched caches, halves or interleaved, partial ``rotary_embedding_dim``;
    - Attention (23/24/25; ``F.scaled_dot_product_attention`` with the dynamo exporter at 23):
      3-D/4-D Q/K/V, bool or float ``attn_mask`` (a fully masked row gives 0, as in ORT),
      ``is_causal`` (offset by a KV cache), ``scale``, GQA/MQA, ``past_key``/``past_value`` with
      the ``present_*`` outputs, ``softcap``, ``softmax_precision``, ``qk_matmul_output`` in modes 0
      (no softcap) and 3. Refused, naming what: ``nonpad_kv_seqlen`` (24), a sliding window (25),
      ``qk_matmul_output`` in modes 1/2;
    - DeformConv (19; ``torchvision.ops.deform_conv2d`` with the dynamo exporter): GridSample
      (16) sampling at the offset taps, mask, then a grouped MatMul; needs X's C/H/W static and a
      target ≥ 16 (decompose-gridsample can remove the GridSample afterwards).

    Other ops newer than 18 (ImageDecoder, the string ops, TensorScatter, CumProd, BitCast, SwiGLU,
    LinearAttention, …) are not produced by torch 2.13's exporters and stay errors.

An op with no adapter is an error naming the op and node. Outputs are unchanged (``exact``).

Model-local functions: torch 2.13's dynamo exporter writes none at opset > 18 (its version
converter inlines every function); the TorchScript exporter's ``export_modules_as_functions`` does.
``inline-functions`` then ``convert-opset`` turns those into one ``ai.onnx`` graph at 18.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from surgery.errors import PassError
from surgery.graph import GraphLike, NameAllocator, const_value
from surgery.options import option
from surgery.pass_base import Numerics, SurgeryPass, SurgeryResult
from surgery.registry import register
from surgery.rules import Builder, graphs_with_opsets, schema
from surgery.rules.engine import Rewrite, RuleContext, remove_dead_constants, splice

__all__ = ["ConvertOpset", "downgrade_graph", "ADAPTERS", "DECOMPOSITIONS"]

logger = logging.getLogger(__name__)

#: The newest opset ATC's ONNX parser registers standard ops for.
ATC_MAX_OPSET = 18

REDUCE_AXES_INPUT = {
    "ReduceSum": 13,
    **{
        op: 18
        for op in (
            "ReduceMean",
            "ReduceMax",
            "ReduceMin",
            "ReduceProd",
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceSumSquare",
        )
    },
}


class _Refuse(Exception):
    """Raised by an adapter: the node cannot be expressed at the target opset."""


@dataclasses.dataclass
class Step:
    """One node to convert: where it lives and the versions involved."""

    ctx: RuleContext
    node: ir.Node
    current: int  # the model/function opset the node lives in now
    target: int
    orphans: list[ir.Value]

    @property
    def cur_since(self) -> int:
        return schema.since_version(self.node.op_type, self.current) or 0

    @property
    def tgt_since(self) -> int | None:
        return schema.since_version(self.node.op_type, self.target)

    def attr(self, name: str, default: Any = None) -> Any:
        return schema.attr_value(self.node, name, self.current, default)

    def builder(self) -> Builder:
        return Builder(self.ctx.names, self.node.name or self.node.op_type, self.target, dtype_of=self.ctx.dtype)

    def const_input(self, index: int, what: str) -> np.ndarray | None:
        """The constant array of input ``index`` (None if absent); refuse if it is not constant."""
        if index >= len(self.node.inputs) or self.node.inputs[index] is None:
            return None
        value = self.node.inputs[index]
        array = const_value(value)
        if array is None:
            raise _Refuse(f"its {what} input '{value.name}' is computed at run time; opset {self.target} needs a constant attribute")
        return array

    def drop_inputs_from(self, index: int) -> None:
        node = self.node
        for i in range(index, len(node.inputs)):
            value = node.inputs[i]
            if value is not None:
                self.orphans.append(value)
        if len(node.inputs) > index:
            node.resize_inputs(index)

    def set_attr(self, name: str, value: Any) -> None:
        self.node.attributes[name] = ir.convenience.convert_attribute(name, value)

    def drop_attr(self, name: str) -> None:
        self.node.attributes.pop(name, None)

    def replace(self, new_nodes: Sequence[ir.Node], outputs: Sequence[ir.Value | None]) -> None:
        for value in self.node.inputs:
            if value is not None:
                self.orphans.append(value)
        splice(self.ctx, Rewrite(self.node, [self.node], list(self.node.outputs), new_nodes, outputs))


Adapter = Callable[[Step], None]
ADAPTERS: dict[str, Adapter] = {}
DECOMPOSITIONS: dict[str, Adapter] = {}


def adapter(*ops: str) -> Callable[[Adapter], Adapter]:
    def wrap(fn: Adapter) -> Adapter:
        for op in ops:
            ADAPTERS[op] = fn
        return fn

    return wrap


def decomposition(*ops: str) -> Callable[[Adapter], Adapter]:
    def wrap(fn: Adapter) -> Adapter:
        for op in ops:
            DECOMPOSITIONS[op] = fn
        return fn

    return wrap


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


def generic_check(step: Step) -> None:
    """Check ``step.node`` against the target's schema; drop new attributes left at their default.

    Refuses inputs, used outputs, non-default attributes and element types the older op lacks,
    and ops whose meaning changed between the versions (those need an adapter).
    """
    node = step.node
    low = step.tgt_since or 0
    older = schema.get_schema(node.op_type, step.target)
    assert older is not None
    for since in _history(node.op_type):
        if low < since <= step.cur_since and (node.op_type, since) in SEMANTIC_CHANGES and node.op_type not in ADAPTERS:
            raise _Refuse(f"{node.op_type} changed meaning at opset {since} and has no adapter")
    # inputs the older op does not have
    max_in = len(older.inputs) if older.inputs and not _variadic(older.inputs[-1]) else 1 << 30
    for i, value in enumerate(node.inputs):
        if value is not None and i >= max_in:
            raise _Refuse(f"input {i} ('{value.name}') has no equivalent before opset {_first_with(node.op_type, i)}")
    max_out = len(older.outputs) if older.outputs and not _variadic(older.outputs[-1]) else 1 << 30
    for i, value in enumerate(node.outputs):
        if i >= max_out and (value.uses() or value.is_graph_output()):
            raise _Refuse(f"output {i} ('{value.name}') does not exist at opset {step.target}")
    # attributes the older op does not have: fine when they hold the newer default
    for key in list(node.attributes):
        if key in older.attributes:
            continue
        default = schema.attr_default(node.op_type, key, step.current)
        got = schema.attr_value(node, key, step.current)
        if default is not None and _same(got, default):
            step.drop_attr(key)
            continue
        raise _Refuse(f"attribute {key}={got!r} does not exist at opset {step.target}")
    # element types the older op does not accept
    binding = schema.type_bindings(node, step.target)
    if binding is not None:
        for kind, values, slots in (("input", node.inputs, binding.inputs), ("output", node.outputs, binding.outputs)):
            for i, value in enumerate(values):
                if value is None or i >= len(slots):
                    continue
                dtype = step.ctx.dtype(value)
                allowed = slots[i][1]
                if dtype is not None and allowed and dtype not in allowed:
                    raise _Refuse(f"{kind} {i} ('{value.name}') is {dtype.name}, which opset {step.target} does not accept")


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
        return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


# ---- attribute <-> input moves -------------------------------------------------------------


@adapter(*REDUCE_AXES_INPUT)
def _reduce(step: Step) -> None:
    moved_at = REDUCE_AXES_INPUT[step.node.op_type]
    if step.cur_since >= moved_at > step.target:
        axes = step.const_input(1, "axes")
        noop = step.attr("noop_with_empty_axes", 0)
        if (axes is None or axes.size == 0) and noop:
            raise _Refuse("noop_with_empty_axes=1 with no axes (an identity) has no older form")
        step.drop_inputs_from(1)
        step.drop_attr("noop_with_empty_axes")
        if axes is not None and axes.size:
            step.set_attr("axes", [int(a) for a in axes.reshape(-1)])
    generic_check(step)


@adapter("Squeeze", "Unsqueeze")
def _squeeze(step: Step) -> None:
    if step.cur_since >= 13 > step.target:
        axes = step.const_input(1, "axes")
        step.drop_inputs_from(1)
        if axes is not None:
            step.set_attr("axes", [int(a) for a in axes.reshape(-1)])
    generic_check(step)


@adapter("Split")
def _split(step: Step) -> None:
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
            if isinstance(dim, int):
                chunk = -(-dim // n)
                sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
                if len(set(sizes)) > 1:  # uneven: opset 13 needs the sizes spelled out
                    b = step.builder()
                    split = b.ints(sizes, "split")
                    node.graph.insert_before(node, b.nodes)  # type: ignore[union-attr]
                    node.resize_inputs(2)
                    node.replace_input_with(1, split)
            else:
                logger.info("Split '%s': num_outputs=%d on a dynamic axis; opset 13 splits evenly", node.name, n)
    if step.cur_since >= 13 > step.target:
        split = step.const_input(1, "split")
        step.drop_inputs_from(1)
        if split is not None:
            step.set_attr("split", [int(s) for s in split.reshape(-1)])
    generic_check(step)


@adapter("Pad")
def _pad(step: Step) -> None:
    node = step.node
    if step.cur_since >= 19 > step.target and step.attr("mode", "constant") == "wrap":
        raise _Refuse("mode='wrap' exists only from opset 19")
    if step.cur_since >= 18 > step.target and len(node.inputs) > 3 and node.inputs[3] is not None:
        axes = step.const_input(3, "axes")
        pads = step.const_input(1, "pads")
        assert axes is not None and pads is not None
        shape = step.ctx.shape(node.inputs[0])
        if shape is None:
            raise _Refuse("Pad with axes on an input of unknown rank")
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
def _shape(step: Step) -> None:
    node = step.node
    if step.cur_since >= 15 > step.target:
        start, end = int(step.attr("start", 0)), step.attr("end")
        step.drop_attr("start")
        step.drop_attr("end")
        if start != 0 or end is not None:
            b = step.builder()
            full = b.op("Shape", node.inputs[0])
            out = b.slice(full, [start], [int(end) if end is not None else np.iinfo(np.int64).max], [0])
            step.replace(b.nodes, [out])
            return
    generic_check(step)


@adapter("Dropout")
def _dropout(step: Step) -> None:
    if step.cur_since >= 12 > step.target:
        ratio = step.const_input(1, "ratio")
        training = step.const_input(2, "training_mode")
        if training is not None and bool(training.reshape(-1)[0]):
            raise _Refuse("training_mode=True has no form before opset 12")
        step.drop_inputs_from(1)
        step.drop_attr("seed")
        if ratio is not None:
            step.set_attr("ratio", float(ratio.reshape(-1)[0]))
    generic_check(step)


@adapter("Clip")
def _clip(step: Step) -> None:
    if step.cur_since >= 11 > step.target:
        bounds = {}
        for i, name in ((1, "min"), (2, "max")):
            value = step.const_input(i, name)
            if value is None:
                continue
            number = float(value.reshape(-1)[0])
            if float(np.float32(number)) != number:
                raise _Refuse(f"{name}={number!r} is not a float32, and opset {step.target} holds {name} in a float attribute")
            bounds[name] = number
        step.drop_inputs_from(1)
        for name, number in bounds.items():
            step.set_attr(name, number)
    generic_check(step)

@adapter("Resize")
def _resize(step: Step) -> None:
    node = step.node
    if step.cur_since >= 19 > step.target and step.attr("coordinate_transformation_mode") == "half_pixel_symmetric":
        raise _Refuse("coordinate_transformation_mode='half_pixel_symmetric' exists only from opset 19")
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
def _scatter(step: Step) -> None:
    reduction = step.attr("reduction", "none")
    if reduction in ("max", "min") and step.target < 18:
        raise _Refuse(f"reduction='{reduction}' exists only from opset 18")
    if reduction != "none" and step.target < 16:
        raise _Refuse(f"reduction='{reduction}' exists only from opset 16")
    if step.target < 16:
        step.drop_attr("reduction")
    generic_check(step)


@adapter("RoiAlign")
def _roialign(step: Step) -> None:
    if step.cur_since >= 16 > step.target:
        mode = step.attr("coordinate_transformation_mode", "half_pixel")
        if mode != "output_half_pixel":
            raise _Refuse(
                f"coordinate_transformation_mode='{mode}'; before opset 16 RoiAlign always behaves as 'output_half_pixel'"
            )
        step.drop_attr("coordinate_transformation_mode")
    generic_check(step)


@adapter("Softmax", "LogSoftmax", "Hardmax")
def _softmax(step: Step) -> None:
    if step.cur_since >= 13 > step.target:
        axis = int(step.attr("axis", -1))
        shape = step.ctx.shape(step.node.inputs[0])
        last = axis == -1 or (shape is not None and axis == len(shape) - 1)
        if not last:
            raise _Refuse(f"axis={axis} is not the last axis; before opset 13 the op flattens from the axis on")
        step.set_attr("axis", -1 if shape is None else len(shape) - 1)
    generic_check(step)


@adapter("GridSample")
def _gridsample(step: Step) -> None:
    if step.target < 16:
        raise _Refuse("GridSample exists only from opset 16; run decompose-gridsample first")
    if step.cur_since >= 20 > step.target:
        mode = step.attr("mode", "linear")
        renamed = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}.get(mode)
        if renamed is None:
            raise _Refuse(f"mode={mode!r}")
        shape = step.ctx.shape(step.node.inputs[0])
        if shape is not None and len(shape) != 4:
            raise _Refuse(f"a {len(shape)}-D GridSample exists only from opset 20")
        step.set_attr("mode", renamed)
    generic_check(step)


@adapter("Reshape")
def _reshape(step: Step) -> None:
    if step.cur_since >= 14 > step.target and step.attr("allowzero", 0):
        shape = step.const_input(1, "shape")
        if shape is None or (shape == 0).any():
            raise _Refuse("allowzero=1 with a shape that may hold 0 has no form before opset 14")
        step.drop_attr("allowzero")
    generic_check(step)


@adapter("Cast", "CastLike")
def _cast(step: Step) -> None:
    if step.target < 19 and "saturate" in step.node.attributes:
        step.drop_attr("saturate")  # only affects float8 targets, which do not exist before 19
    generic_check(step)


@adapter("AveragePool")
def _avgpool(step: Step) -> None:
    if step.target < 19:
        dilations = step.attr("dilations")
        if dilations and any(int(d) != 1 for d in dilations):
            raise _Refuse(f"dilations={list(dilations)} exist only from opset 19")
        step.drop_attr("dilations")
    generic_check(step)


@adapter("DFT")
def _dft(step: Step) -> None:
    if step.cur_since >= 20 > step.target:
        axis = step.const_input(2, "axis")
        step.drop_inputs_from(2)
        step.set_attr("axis", int(axis.reshape(-1)[0]) if axis is not None else -2)
    generic_check(step)


# ---- decompositions of ops newer than the target -----------------------------------------


@decomposition("Gelu")
def _gelu(step: Step) -> None:
    from surgery.passes.decompose_gelu import gelu_exact, gelu_tanh

    b = step.builder()
    mode = step.attr("approximate", "none")
    x = step.node.inputs[0]
    assert x is not None
    y = gelu_tanh(b, x) if mode == "tanh" else gelu_exact(b, x)
    step.replace(b.nodes, [y])


def _rank(step: Step, value: ir.Value | None) -> int | None:
    shape = step.ctx.shape(value) if value is not None else None
    return len(shape) if shape is not None else None


def _stash(step: Step, b: Builder, x: ir.Value) -> tuple[ir.Value, ir.DataType | None, ir.DataType | None]:
    """Cast half-precision input up to float32 when stash_type asks for it (ONNX's definition).

    Returns the value to normalize, the type to cast back to (or None) and the compute type.
    """
    dtype = step.ctx.dtype(x)
    stash = int(step.attr("stash_type", 1))
    if dtype in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16) and stash == int(ir.DataType.FLOAT):
        return b.cast(x, ir.DataType.FLOAT), dtype, ir.DataType.FLOAT
    return x, None, dtype


def _normalize(
    b: Builder, x: ir.Value, axes: Sequence[int], eps: float, dtype: ir.DataType | None
) -> tuple[ir.Value, ir.Value, ir.Value]:
    mean = b.reduce("ReduceMean", x, axes)
    d = b.op("Sub", x, mean)
    var = b.reduce("ReduceMean", b.op("Mul", d, d), axes)
    inv = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, b.scalar(eps, x, "epsilon", dtype=dtype))))
    return b.op("Mul", d, inv), mean, inv


@decomposition("LayerNormalization")
def _layernorm(step: Step) -> None:
    node = step.node
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    assert x is not None and scale is not None
    axis = int(step.attr("axis", -1))
    rank = _rank(step, x)
    if axis < 0:
        axes = list(range(axis, 0))
    elif rank is not None:
        axes = list(range(axis, rank))
    else:
        raise _Refuse(f"axis={axis} on an input of unknown rank")
    b = step.builder()
    xs, back, compute = _stash(step, b, x)
    y, mean, inv = _normalize(b, xs, axes, float(step.attr("epsilon", 1e-5)), compute)
    if back is not None:
        y = b.cast(y, back)
    y = b.op("Mul", y, scale)
    if bias is not None:
        y = b.op("Add", y, bias)
    step.replace(b.nodes, [y, mean, inv][: len(node.outputs)])


@decomposition("GroupNormalization")
def _groupnorm(step: Step) -> None:
    node = step.node
    x, scale, bias = node.inputs[0], node.inputs[1], node.inputs[2]
    assert x is not None and scale is not None and bias is not None
    groups = int(step.attr("num_groups"))
    rank = _rank(step, x)
    if rank is None:
        raise _Refuse("GroupNormalization on an input of unknown rank")
    b = step.builder()
    xs, back, compute = _stash(step, b, x)
    grouped = b.op("Reshape", xs, b.ints([0, groups, -1], "grouped_shape"))
    y, _, _ = _normalize(b, grouped, [2], float(step.attr("epsilon", 1e-5)), compute)
    per_channel = step.cur_since >= 21
    if not per_channel:  # opset 18: scale and bias hold one value per group
        group_shape = b.ints([1, groups, 1], "group_param_shape")
        y = b.op("Add", b.op("Mul", y, b.op("Reshape", scale, group_shape)), b.op("Reshape", bias, group_shape))
    y = b.op("Reshape", y, b.shape(xs))
    if back is not None:
        y = b.cast(y, back)
    if per_channel:
        trailing = list(range(1, rank - 1))
        y = b.op("Add", b.op("Mul", y, b.unsqueeze(scale, trailing)), b.unsqueeze(bias, trailing))
    step.replace(b.nodes, [y])


@decomposition("Mish")
def _mish(step: Step) -> None:
    b = step.builder()
    x = step.node.inputs[0]
    assert x is not None
    y = b.op("Mul", x, b.op("Tanh", b.op("Softplus", x)))
    step.replace(b.nodes, [y])


@decomposition("HardSwish")
def _hardswish(step: Step) -> None:
    b = step.builder()
    x = step.node.inputs[0]
    assert x is not None
    y = b.op("Mul", x, b.op("HardSigmoid", x, alpha=1.0 / 6.0, beta=0.5))
    step.replace(b.nodes, [y])


@decomposition("Swish")
def _swish(step: Step) -> None:
    b = step.builder()
    x = step.node.inputs[0]
    assert x is not None
    alpha = float(step.attr("alpha", 1.0))
    z = x if alpha == 1.0 else b.op("Mul", x, b.scalar(alpha, x, "alpha"))
    y = b.op("Mul", x, b.op("Sigmoid", z))
    step.replace(b.nodes, [y])


# ---- opset 20+: AffineGrid, RMSNormalization, RotaryEmbedding, Attention --------------------

_INT64_MAX = int(np.iinfo(np.int64).max)


def _used(value: ir.Value | None) -> bool:
    return value is not None and bool(value.uses() or value.is_graph_output())


def _static(shape: ir.Shape | None, index: int) -> int | None:
    """Dimension ``index`` of ``shape`` when it is a known integer."""
    if shape is None or not -len(shape) <= index < len(shape):
        return None
    dim = shape[index]
    return dim if isinstance(dim, int) else None


def _need_opset(step: Step, version: int, what: str) -> None:
    if step.target < version:
        raise _Refuse(f"{what} needs opset {version} or newer (target is {step.target})")


def _affine_axis(size: int, align_corners: int) -> np.ndarray:
    """The normalized coordinates of one axis of AffineGrid's base grid, as ONNX Runtime makes them.

    ORT fills them with Eigen's ``LinSpaced(size, low, high)``, which gives ``high`` for a
    single point: ``[1]`` with ``align_corners=1`` (``[0]`` without).
    """
    low, high = (-1.0, 1.0) if align_corners else (-1.0 + 1.0 / size, 1.0 - 1.0 / size)
    if size == 1:
        return np.array([high])
    return np.linspace(low, high, size)


@decomposition("AffineGrid")
def _affine_grid(step: Step) -> None:
    """grid = base @ theta^T: a constant base grid from a constant size, else one built with Range."""
    node = step.node
    theta, size = node.inputs[0], node.inputs[1]
    assert theta is not None and size is not None
    align = int(step.attr("align_corners", 0))
    dtype = step.ctx.dtype(theta)
    sizes = const_value(size)
    b = step.builder()
    if sizes is not None:
        dims = [int(d) for d in sizes.reshape(-1)[2:]]
        if len(dims) not in (2, 3):
            raise _Refuse(f"size {sizes.reshape(-1).tolist()} is neither 4-D nor 5-D")
        mesh = np.meshgrid(*[_affine_axis(d, align) for d in dims], indexing="ij")  # (H, W) / (D, H, W)
        # the last axis of the grid is (x, y[, z]): x runs along the last spatial dimension
        base = np.stack([*reversed(mesh), np.ones_like(mesh[0])], axis=-1).reshape(-1, len(dims) + 1)
        base_value = b.scalar(base, theta, "base_grid", dtype=dtype)  # type: ignore[arg-type]
        out_shape = b.ints([-1, *dims, len(dims)], "grid_shape")
    else:
        ndim = _static(step.ctx.shape(size), 0)
        theta_shape = step.ctx.shape(theta)
        k = ndim - 2 if ndim is not None else _static(theta_shape, 1)
        if k not in (2, 3):
            raise _Refuse(f"size '{size.name}' is computed at run time and the grid's rank is unknown")
        _need_opset(step, 11, "a base grid of run-time size (Range)")
        spatial = b.slice(size, [2], [_INT64_MAX], [0])  # [H, W] or [D, H, W]
        one = b.scalar(1.0, theta, "one", dtype=dtype)
        two = b.scalar(2.0, theta, "two", dtype=dtype)
        axes = []  # coordinates along D?, H, W (each a 1-D vector)
        for i in range(k):
            length = b.op("Gather", size, b.const(np.asarray(2 + i, np.int64), "axis_index"), axis=0)
            index = b.op("Range", b.const(np.asarray(0, np.int64), "zero"), length, b.const(np.asarray(1, np.int64), "step"))
            index = b.cast(index, dtype) if dtype is not None else b.op("CastLike", index, theta)
            count = b.cast(length, dtype) if dtype is not None else b.op("CastLike", length, theta)
            if align:
                # step = 2 / max(L-1, 1); x = i*step + 1 - (L-1)*step  (a single point sits at 1, as in ORT)
                last = b.op("Sub", count, one)
                stride = b.op("Div", two, b.op("Max", last, one))
                coord = b.op("Add", b.op("Mul", index, stride), b.op("Sub", one, b.op("Mul", last, stride)))
            else:  # x = (2i + 1) / L - 1
                coord = b.op("Sub", b.op("Div", b.op("Add", b.op("Mul", index, two), one), count), one)
            layout = [1] * k
            layout[i] = -1
            axes.append(b.op("Expand", b.op("Reshape", coord, b.ints(layout, "layout")), spatial))
        ones = b.op("Expand", b.op("Reshape", one, b.ints([1] * k, "layout")), spatial)
        columns = [b.unsqueeze(a, [k]) for a in [*reversed(axes), ones]]
        base_value = b.op("Reshape", b.op("Concat", *columns, axis=k), b.ints([-1, k + 1], "base_shape"))
        out_shape = b.op("Concat", b.ints([-1], "batch"), spatial, b.ints([k], "coords"), axis=0)
    theta_t = b.op("Transpose", theta, perm=[0, 2, 1])  # (N, k+1, k)
    grid = b.op("MatMul", base_value, theta_t)  # (P, k+1) @ (N, k+1, k) -> (N, P, k)
    y = b.op("Reshape", grid, out_shape)
    step.replace(b.nodes, [y])


@decomposition("RMSNormalization")
def _rmsnorm(step: Step) -> None:
    node = step.node
    x, scale = node.inputs[0], node.inputs[1]
    assert x is not None and scale is not None
    axis = int(step.attr("axis", -1))
    rank = _rank(step, x)
    if axis < 0:
        axes = list(range(axis, 0))
    elif rank is not None:
        axes = list(range(axis, rank))
    else:
        raise _Refuse(f"axis={axis} on an input of unknown rank")
    b = step.builder()
    xs, back, compute = _stash(step, b, x)
    mean_square = b.reduce("ReduceMean", b.op("Mul", xs, xs), axes)
    eps = b.scalar(float(step.attr("epsilon", 1e-5)), xs, "epsilon", dtype=compute)
    y = b.op("Mul", xs, b.op("Reciprocal", b.op("Sqrt", b.op("Add", mean_square, eps))))
    if back is not None:
        y = b.cast(y, back)
    step.replace(b.nodes, [b.op("Mul", y, scale)])


@decomposition("RotaryEmbedding")
def _rotary(step: Step) -> None:
    """x1*cos - x2*sin, x1*sin + x2*cos on the rotated part (halves or interleaved pairs)."""
    node = step.node
    x, cos, sin = node.inputs[0], node.inputs[1], node.inputs[2]
    assert x is not None and cos is not None and sin is not None
    positions = node.inputs[3] if len(node.inputs) > 3 else None
    interleaved = int(step.attr("interleaved", 0))
    num_heads = int(step.attr("num_heads", 0))
    rotary_dim = int(step.attr("rotary_embedding_dim", 0))
    _need_opset(step, 11, "the decomposition")
    rank = _rank(step, x)
    if rank is None and num_heads <= 0:
        rank = 4  # a 3-D input needs num_heads (the checker enforces it): this one is 4-D
    if rank not in (3, 4):
        raise _Refuse(f"input '{x.name}' has {'an unknown rank' if rank is None else f'rank {rank}'}; it must be 3-D or 4-D")
    if rank == 3 and num_heads <= 0:
        raise _Refuse("a 3-D input needs the num_heads attribute")
    b = step.builder()
    cos_cache = cos
    if positions is not None:  # (max_pos, half) caches indexed by (B, S) positions
        cos, sin = b.op("Gather", cos, positions, axis=0), b.op("Gather", sin, positions, axis=0)
    if rank == 4:  # (B, N, S, H): the (B, S, half) caches broadcast over heads
        xr = x
        cos, sin = b.unsqueeze(cos, [1]), b.unsqueeze(sin, [1])
    else:  # (B, S, N*H) -> (B, S, N, H)
        xr = b.op("Reshape", x, b.ints([0, 0, num_heads, -1], "heads_shape"))
        cos, sin = b.unsqueeze(cos, [2]), b.unsqueeze(sin, [2])
    x_pass = None
    if rotary_dim:
        x_rot = b.slice(xr, [0], [rotary_dim], [3])
        x_pass = b.slice(xr, [rotary_dim], [_INT64_MAX], [3])
    else:
        x_rot = xr
    if interleaved:
        x1 = b.slice(x_rot, [0], [_INT64_MAX], [3], [2])
        x2 = b.slice(x_rot, [1], [_INT64_MAX], [3], [2])
    else:
        half: int | ir.Value | None = rotary_dim // 2 if rotary_dim else _static(step.ctx.shape(cos_cache), -1)
        if half is None:
            half = b.shape(cos_cache, start=-1)
        starts = [half] if isinstance(half, int) else half
        x1 = b.slice(x_rot, [0], starts, [3])
        x2 = b.slice(x_rot, starts, [_INT64_MAX], [3])
    real = b.op("Sub", b.op("Mul", cos, x1), b.op("Mul", sin, x2))
    imag = b.op("Add", b.op("Mul", sin, x1), b.op("Mul", cos, x2))
    if interleaved:
        pairs = b.op("Concat", b.unsqueeze(real, [4]), b.unsqueeze(imag, [4]), axis=4)
        rotated = b.op("Reshape", pairs, b.ints([0, 0, 0, -1], "pairs_shape"))
    else:
        rotated = b.op("Concat", real, imag, axis=3)
    y = rotated if x_pass is None else b.op("Concat", rotated, x_pass, axis=3)
    if rank == 3:
        y = b.op("Reshape", y, b.ints([0, 0, -1], "hidden_shape"))
    step.replace(b.nodes, [y])


def _scalar_dim(b: Builder, value: ir.Value, index: int) -> ir.Value:
    """Dimension ``index`` of ``value`` as a 0-D int64 tensor (for Range)."""
    return b.op("Gather", b.shape(value), b.const(np.asarray(index, np.int64), "dim_index"), axis=0)


@decomposition("Attention")
def _attention(step: Step) -> None:
    """softmax(Q·Kᵀ·scale [softcap] + mask/causal bias) · V, with KV cache concat and GQA repeat."""
    node = step.node
    ins = list(node.inputs) + [None] * (7 - len(node.inputs))
    q, k, v, mask, past_k, past_v, nonpad = ins[:7]
    assert q is not None and k is not None and v is not None
    if nonpad is not None:
        raise _Refuse(f"input 6 nonpad_kv_seqlen ('{nonpad.name}') is not supported")
    for key in ("left_window_size", "right_window_size"):
        if int(step.attr(key, -1)) != -1:
            raise _Refuse(f"attribute {key}={step.attr(key)} (a sliding window) is not supported")
    if (past_k is None) != (past_v is None):
        raise _Refuse("past_key and past_value must be given together")
    softcap = float(step.attr("softcap", 0.0))
    mode = int(step.attr("qk_matmul_output_mode", 0))
    outs = list(node.outputs) + [None] * (4 - len(node.outputs))
    if _used(outs[3]) and not (mode == 3 or (mode == 0 and softcap == 0.0)):
        raise _Refuse(f"output qk_matmul_output with qk_matmul_output_mode={mode} and softcap={softcap} is not supported")
    _need_opset(step, 11, "the decomposition")
    shape_of = step.ctx.shape
    rank = _rank(step, q)
    if rank is None:  # inside a function, say: 3-D inputs are the ones that carry the head counts
        rank = 3 if int(step.attr("q_num_heads", 0)) > 0 and int(step.attr("kv_num_heads", 0)) > 0 else 4
    if rank not in (3, 4):
        raise _Refuse(f"Q '{q.name}' has {'an unknown rank' if rank is None else f'rank {rank}'}; it must be 3-D or 4-D")
    dtype = step.ctx.dtype(q)
    b = step.builder()
    q_heads: int | None
    kv_heads: int | None
    if rank == 3:
        q_heads, kv_heads = int(step.attr("q_num_heads", 0)), int(step.attr("kv_num_heads", 0))
        if q_heads <= 0 or kv_heads <= 0:
            raise _Refuse("3-D Q/K/V need the q_num_heads and kv_num_heads attributes")
        head = _static(shape_of(q), 2)
        head = head // q_heads if head is not None else None
        perm = [0, 2, 1, 3]
        q4 = b.op("Transpose", b.op("Reshape", q, b.ints([0, 0, q_heads, -1], "q_heads_shape")), perm=perm)
        k4 = b.op("Transpose", b.op("Reshape", k, b.ints([0, 0, kv_heads, -1], "kv_heads_shape")), perm=perm)
        v4 = b.op("Transpose", b.op("Reshape", v, b.ints([0, 0, kv_heads, -1], "kv_heads_shape")), perm=perm)
        q_len = _static(shape_of(q), 1)
        k_len = _static(shape_of(k), 1)
        k_head, v_head = (_static(shape_of(t), 2) for t in (k, v))
        k_head = k_head // kv_heads if k_head is not None else None
        v_head = v_head // kv_heads if v_head is not None else None
    else:
        q4, k4, v4 = q, k, v
        q_heads, kv_heads = _static(shape_of(q), 1), _static(shape_of(k), 1)
        head = _static(shape_of(q), 3)
        q_len = _static(shape_of(q), 2)
        k_len = _static(shape_of(k), 2)
        k_head, v_head = _static(shape_of(k), 3), _static(shape_of(v), 3)
    past_len: int | None = 0
    if past_k is not None:
        assert past_v is not None
        past_len = _static(shape_of(past_k), 2)
        k4 = b.op("Concat", past_k, k4, axis=2)
        v4 = b.op("Concat", past_v, v4, axis=2)
    total_len = None if past_len is None or k_len is None else past_len + k_len
    present_k, present_v = k4, v4
    # grouped-query attention: repeat each KV head q_heads/kv_heads times ([h0, h0, h1, h1, ...])
    if q_heads is not None and kv_heads is not None:
        if q_heads % kv_heads:
            raise _Refuse(f"{q_heads} query heads are not a multiple of {kv_heads} key/value heads")
        repeat: int | ir.Value | None = q_heads // kv_heads if q_heads != kv_heads else None
    else:
        repeat = b.op("Div", b.shape(q4, 1, 2), b.shape(k4, 1, 2))
    if repeat is not None:
        expand = b.ints([1, 1, repeat, 1, 1], "repeat") if isinstance(repeat, int) else b.op(
            "Concat", b.ints([1, 1], "ones"), repeat, b.ints([1, 1], "ones"), axis=0
        )
        heads = b.ints([q_heads], "q_heads") if q_heads is not None else b.shape(q4, 1, 2)
        batch = _static(shape_of(q), 0)

        def repeat_kv(t: ir.Value, last: int | None) -> ir.Value:
            t5 = b.op("Expand", b.unsqueeze(t, [2]), expand)
            known = [batch, q_heads, total_len, last]
            if all(d is not None for d in known):
                target = b.ints(known, "kv_shape")  # type: ignore[arg-type]
            else:
                target = b.op("Concat", b.shape(t, 0, 1), heads, b.shape(t, 2, 4), axis=0)
            return b.op("Reshape", t5, target)

        k4, v4 = repeat_kv(k4, k_head), repeat_kv(v4, v_head)
    # Q·Kᵀ scaled by sqrt(scale) on each side, as the op defines it
    scale = step.attr("scale")
    if scale is None and head is not None:
        scale = 1.0 / float(np.sqrt(head))
    if scale is not None:
        root = b.scalar(float(np.sqrt(float(scale))), q, "sqrt_scale", dtype=dtype)
    else:  # head size known only at run time: head ** -1/4
        size = b.shape(q4, 3, 4)
        size = b.cast(size, dtype) if dtype is not None else b.op("CastLike", size, q)
        root = b.op("Reciprocal", b.op("Sqrt", b.op("Sqrt", size)))
    scores = b.op("MatMul", b.op("Mul", q4, root), b.op("Transpose", b.op("Mul", k4, root), perm=[0, 1, 3, 2]))
    raw_scores = scores
    if softcap > 0.0:
        cap = b.scalar(softcap, q, "softcap", dtype=dtype)
        scores = b.op("Mul", b.op("Tanh", b.op("Div", scores, cap)), cap)
    # the additive bias: mask (bool -> 0 / -inf) plus the causal bias
    bias = None
    zero, neg_inf = b.scalar(0.0, q, "zero", dtype=dtype), b.scalar(-np.inf, q, "neg_inf", dtype=dtype)
    if mask is not None:
        mask_type = step.ctx.dtype(mask)
        if mask_type is None:
            raise _Refuse(f"the element type of attn_mask '{mask.name}' is unknown")
        bias = b.op("Where", mask, zero, neg_inf) if mask_type == ir.DataType.BOOL else mask
    if int(step.attr("is_causal", 0)):
        # query i (of L) attends key j (of past+S) iff j <= i + past
        if q_len is not None and total_len is not None and past_len is not None:
            allowed = np.arange(total_len)[None, :] <= np.arange(q_len)[:, None] + past_len
            causal = b.scalar(np.where(allowed, 0.0, -np.inf), q, "causal_bias", dtype=dtype)  # type: ignore[arg-type]
        else:
            _need_opset(step, 11, "a causal mask of run-time size (Range)")
            zero_i, one_i = b.const(np.asarray(0, np.int64), "zero_i"), b.const(np.asarray(1, np.int64), "one_i")
            rows = b.op("Range", zero_i, _scalar_dim(b, q4, 2), one_i)
            if past_k is not None:
                rows = b.op("Add", rows, _scalar_dim(b, past_k, 2))
            cols = b.op("Range", zero_i, _scalar_dim(b, k4, 2), one_i)
            masked = b.op("Greater", b.unsqueeze(cols, [0]), b.unsqueeze(rows, [1]))
            causal = b.op("Where", masked, neg_inf, zero)
        bias = causal if bias is None else b.op("Add", bias, causal)
    if bias is not None:
        scores = b.op("Add", scores, bias)
    precision = step.attr("softmax_precision")
    if precision is not None and dtype is not None and int(precision) != int(dtype):
        scores = b.op("Cast", scores, to=int(precision))
    probs = b.op("Softmax", scores, axis=-1)
    if precision is not None and dtype is not None and int(precision) != int(dtype):
        probs = b.cast(probs, dtype)
    if mask is not None:
        # a row the bias masks entirely gives 0 (not NaN), as the op's definition and ORT do
        empty = b.op("Equal", b.reduce("ReduceMax", bias, [-1]), neg_inf)  # type: ignore[arg-type]
        probs = b.op("Where", empty, zero, probs)
    y = b.op("MatMul", probs, v4)
    if rank == 3:  # (B, H, L, Dv) -> (B, L, H*Dv)
        y = b.op("Reshape", b.op("Transpose", y, perm=[0, 2, 1, 3]), b.ints([0, 0, -1], "hidden_shape"))
    qk_out = (raw_scores if mode == 0 else probs) if _used(outs[3]) else None
    new = [y, present_k if _used(outs[1]) else None, present_v if _used(outs[2]) else None, qk_out]
    step.replace(b.nodes, new[: len(node.outputs)])


@decomposition("DeformConv")
def _deform_conv(step: Step) -> None:
    """Bilinear samples at the offset kernel taps with GridSample, then one MatMul with the weights.

    Per offset group, the taps' positions (a constant base grid plus the offsets) become a
    GridSample grid (``align_corners=0``, zeros outside: torchvision's interpolation); the samples,
    times the mask, are the im2col columns a grouped MatMul with the weights reduces.
    """
    node = step.node
    ins = list(node.inputs) + [None] * (5 - len(node.inputs))
    x, w, offset, bias, mask = ins[:5]
    assert x is not None and w is not None and offset is not None
    if step.target < 16:
        raise _Refuse("its decomposition uses GridSample, which exists only from opset 16")
    x_shape, w_shape = step.ctx.shape(x), step.ctx.shape(w)
    if x_shape is None or len(x_shape) != 4:
        raise _Refuse(f"input X '{x.name}' is not known to be 4-D (only 2-D DeformConv is decomposed)")
    channels, height, width = (_static(x_shape, i) for i in (1, 2, 3))
    if channels is None or height is None or width is None:
        raise _Refuse(f"input X '{x.name}' needs static channels, height and width, got {list(x_shape)}")
    kernel = step.attr("kernel_shape") or (tuple(w_shape[2:]) if w_shape is not None else None)
    out_channels = _static(w_shape, 0)
    if kernel is None or not all(isinstance(k, int) for k in kernel) or out_channels is None:
        raise _Refuse(f"the weight '{w.name}' needs a static shape")
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in (step.attr("strides") or (1, 1)))
    dh, dw = (int(d) for d in (step.attr("dilations") or (1, 1)))
    pt, pl, pb, pr = (int(p) for p in (step.attr("pads") or (0, 0, 0, 0)))
    group, offset_group = int(step.attr("group", 1)), int(step.attr("offset_group", 1))
    out_h = (height + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (width + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
    taps, per_offset_group, per_group = kh * kw, channels // offset_group, channels // group
    dtype = step.ctx.dtype(x)
    b = step.builder()
    # sampling positions (y, x) of every output pixel's taps: (oH, oW, K, 2), plus the offsets
    ys = (np.arange(out_h) * sh - pt)[:, None, None, None] + (np.arange(kh) * dh).repeat(kw)[None, None, :, None]
    xs = (np.arange(out_w) * sw - pl)[None, :, None, None] + np.tile(np.arange(kw) * dw, kh)[None, None, :, None]
    base = np.concatenate(np.broadcast_arrays(ys, xs), axis=-1).astype(np.float64)  # (oH, oW, K, 2)
    moved = b.op("Reshape", offset, b.ints([0, offset_group, taps, 2, out_h, out_w], "offset_shape"))
    moved = b.op("Transpose", moved, perm=[0, 1, 4, 5, 2, 3])  # (N, G, oH, oW, K, 2)
    position = b.op("Add", moved, b.scalar(base, x, "base_positions", dtype=dtype))  # type: ignore[arg-type]
    # GridSample's normalized coordinates with align_corners=0: (2p + 1) / size - 1, as (x, y)
    sizes = np.array([height, width], np.float64)
    scale = b.scalar(2.0 / sizes, x, "to_grid_scale", dtype=dtype)  # type: ignore[arg-type]
    shift = b.scalar(1.0 / sizes - 1.0, x, "to_grid_shift", dtype=dtype)  # type: ignore[arg-type]
    normalized = b.op("Add", b.op("Mul", position, scale), shift)
    grid = b.op("Gather", normalized, b.ints([1, 0], "xy"), axis=5)
    grid = b.op("Reshape", grid, b.ints([-1, out_h, out_w * taps, 2], "grid_shape"))
    images = b.op("Reshape", x, b.ints([-1, per_offset_group, height, width], "group_images_shape"))
    samples = b.op("GridSample", images, grid, mode="bilinear", padding_mode="zeros", align_corners=0)
    # (N*G, C/G, oH, oW*K) -> (N, G, C/G, oH, oW, K)
    shape6 = [-1, offset_group, per_offset_group, out_h, out_w, taps]
    samples = b.op("Reshape", samples, b.ints(shape6, "samples_shape"))
    if mask is not None:  # (N, G*K, oH, oW) -> (N, G, 1, oH, oW, K)
        weights = b.op("Reshape", mask, b.ints([0, offset_group, taps, out_h, out_w], "mask_shape"))
        weights = b.unsqueeze(b.op("Transpose", weights, perm=[0, 1, 3, 4, 2]), [2])
        samples = b.op("Mul", samples, weights)
    # im2col columns per conv group: (N, group, oH*oW, C/group*K), channels g-major as in X
    columns = b.op("Transpose", samples, perm=[0, 3, 4, 1, 2, 5])  # (N, oH, oW, G, C/G, K)
    columns = b.op("Reshape", columns, b.ints([0, out_h * out_w, group, per_group * taps], "columns_shape"))
    columns = b.op("Transpose", columns, perm=[0, 2, 1, 3])
    kernel_cols = per_group * taps
    w_array = const_value(w)
    if w_array is not None:  # fold the weight layout now: (group, C/group*K, oC/group)
        folded = w_array.reshape(group, out_channels // group, kernel_cols).transpose(0, 2, 1)
        w_cols = b.const(np.ascontiguousarray(folded), "weight_columns")
    else:
        w_cols = b.op("Reshape", w, b.ints([group, out_channels // group, kernel_cols], "weight_groups"))
        w_cols = b.op("Transpose", w_cols, perm=[0, 2, 1])
    y = b.op("MatMul", columns, w_cols)  # (N, group, oH*oW, oC/group)
    y = b.op("Transpose", y, perm=[0, 1, 3, 2])
    y = b.op("Reshape", y, b.ints([0, out_channels, out_h, out_w], "output_shape"))
    if bias is not None:
        y = b.op("Add", y, b.unsqueeze(bias, [1, 2]))
    step.replace(b.nodes, [y])


# ---- driving -------------------------------------------------------------------------------

#: Where another pass removes an op convert-opset cannot express at an older opset.
HINTS = {
    "GridSample": " (run decompose-gridsample first)",
    "Einsum": " (run einsum-to-matmul first)",
}


def downgrade_graph(
    model: ir.Model,
    graph: GraphLike,
    opsets: Any,
    current: int,
    target: int,
    names: NameAllocator,
    pass_name: str,
    stats: dict[str, int],
    inferred: Any = None,
) -> None:
    """Convert every ``ai.onnx`` node of ``graph`` (not its subgraphs) from ``current`` to ``target``."""
    ctx = RuleContext(model, graph, opsets, names, pass_name, inferred)
    orphans: list[ir.Value] = []
    for node in list(graph):
        if node.domain not in ("", "ai.onnx") or node.graph is None:
            continue
        step = Step(ctx, node, current, target, orphans)
        where = f"{node.op_type} '{node.name}'" if node.name else f"{node.op_type} producing '{node.outputs[0].name}'"
        if schema.get_schema(node.op_type, current) is None:
            raise PassError(f"{where}: not an ai.onnx op at opset {current}", pass_name=pass_name)
        try:
            decompose = DECOMPOSITIONS.get(node.op_type)
            if step.tgt_since is None or (node.op_type == "GroupNormalization" and step.cur_since >= 21 > target):
                if decompose is None:
                    hint = HINTS.get(node.op_type, "")
                    raise _Refuse(f"it does not exist at opset {target} and there is no decomposition for it{hint}")
                decompose(step)
                stats["decomposed"] = stats.get("decomposed", 0) + 1
                continue
            if step.tgt_since == step.cur_since:
                continue
            fix = ADAPTERS.get(node.op_type, generic_check)
            before = _fingerprint(node)
            fix(step)
            if node.graph is None or _fingerprint(node) != before:
                stats["adapted"] = stats.get("adapted", 0) + 1
        except _Refuse as exc:
            raise PassError(
                f"{where} (opset {current}) cannot be converted to opset {target}: {exc}", pass_name=pass_name
            ) from None
    _remove_orphans(graph, orphans)


def _fingerprint(node: ir.Node) -> tuple:
    return (tuple(id(v) for v in node.inputs), tuple(sorted((k, repr(a.value)) for k, a in node.attributes.items())))


def _remove_orphans(graph: GraphLike, orphans: list[ir.Value]) -> None:
    """Drop Constant nodes and initializers that only fed inputs an adapter turned into attributes."""
    remove_dead_constants(graph, orphans)


@register
class ConvertOpset(SurgeryPass):
    """Convert the model to another ai.onnx opset (default 18, ATC's newest), downgrades included."""

    name = "convert-opset"
    numerics = Numerics.EXACT

    @dataclasses.dataclass(frozen=True)
    class Options:
        target: int = option(ATC_MAX_OPSET, help="the ai.onnx opset to convert to (ATC parses 8-18)")

        def __post_init__(self) -> None:
            if not 7 <= self.target <= onnx.defs.onnx_opset_version():
                raise ValueError(f"target must be between 7 and {onnx.defs.onnx_opset_version()}, got {self.target}")

    def call(self, model: ir.Model) -> SurgeryResult:
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
        from surgery.rules.engine import _Inferred

        inferred = _Inferred(model)
        for graph, opsets in list(graphs_with_opsets(model)):
            version = schema.opset_of(opsets, "")
            if version is None or version <= target:
                continue
            downgrade_graph(model, graph, opsets, version, target, names, self.name, stats, inferred)
        changed = False
        for imports in [model.opset_imports] + [f.opset_imports for f in model.functions.values()]:
            key = "" if "" in imports else ("ai.onnx" if "ai.onnx" in imports else None)
            if key is not None and imports[key] > target:
                if imports is model.opset_imports:
                    stats["downgraded_from"] = imports[key]
                imports[key] = target
                changed = True
        modified = changed or bool(stats)
        return SurgeryResult(model, modified, stats=stats, notes=notes)

    def _upgrade(self, model: ir.Model, current: int, target: int) -> None:
        from surgery.model_io import LightProto

        light = LightProto(model)
        try:
            converted = onnx.version_converter.convert_version(light.proto, target)
        except Exception as exc:  # the C++ converter raises RuntimeError / ConvertError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PassError(
                f"onnx's version_converter could not upgrade opset {current} to {target}: {first}", pass_name=self.name
            ) from None
        new = ir.from_proto(converted)
        for name, value in new.graph.initializers.items():
            if name in light.tensors:
                value.const_value = light.tensors[name]
        # the converter drops model-local functions: keep ours (they carry their own opset imports)
        model.graph = new.graph  # type: ignore[misc]  (the model's opset imports live on its graph)
        names = NameAllocator(model)
        for graph, _ in graphs_with_opsets(model):
            for node in graph:
                if node.name:
                    continue
                # nodes the converter added (axes constants …) are named after the node they feed
                user = next((u.node for out in node.outputs for u in out.uses() if u.node.name), None)
                node.name = names.derive(user.name if user is not None else "", node.op_type)
        for function in model.functions.values():
            version = schema.opset_of(function.opset_imports, "")
            if version is None or version >= target:
                continue
            same = all(
                schema.since_version(n.op_type, version) == schema.since_version(n.op_type, target)
                for n in function.all_nodes()
                if n.domain in ("", "ai.onnx")
            )
            if same:  # nothing in it changed between the versions: just move its import
                function.opset_imports["" if "" in function.opset_imports else "ai.onnx"] = target
            else:
                logger.info("function %s keeps ai.onnx %d (some of its ops differ at %d)", function.name, version, target)
