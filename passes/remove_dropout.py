"""``remove-dropout``: delete Dropout nodes, whatever their opset form.

Forms handled (in the main graph, ``If``/``Loop``/``Scan`` bodies and model-local functions):

- opset ≤ 6: ``ratio`` and ``is_test`` attributes; ``is_test=0`` (the default) is training mode;
- opset 7–11: ``ratio`` attribute only; always inference mode;
- opset ≥ 12: optional ``ratio`` and ``training_mode`` inputs. Absent or constant-false
  ``training_mode`` is inference mode.

In inference mode ``output`` is a copy of ``data``, so readers of ``output`` read ``data`` instead.
If ``output`` is a graph output, its name is kept: ``data`` takes the name when it is produced in
the same graph (and is not itself an input, initializer or output of a graph), otherwise an
``Identity`` named after the Dropout produces it.

A consumed ``mask`` becomes an all-ones mask of ``data``'s shape: ``ConstantOfShape(Shape(data))``
(opset ≥ 9; bool from opset 10, ``data``'s type before), or ``Cast(Not(Less(data, data)))`` at
opset 6–8 (exact for every value, NaN and inf included). ONNX Runtime fills the mask of an
opset 7–11 Dropout with zeros while the onnx reference evaluator (and opset ≥ 12) gives ones: the
value is runtime-defined there, so the result then reports ``changed_semantics``.

A training-mode Dropout (``training_mode`` a constant true, or ``is_test=0`` at opset ≤ 6) is random
and is removed too: deployment never wants random dropout. The result sets ``changed_semantics``
and a note names the node; so does a Dropout whose ``training_mode`` is not a constant (e.g. a graph
input), removed as if it were false. With a constant ratio of 0 training mode is exact.

Hand-written dropout — the custom layer users write when a compiler rejects ``Dropout``,
``x * (torch.rand_like(x) > p).float() / (1 - p)`` — exports as ``RandomUniformLike → Greater →
Cast → Mul → Div`` (or RandomUniform/RandomNormal(Like) with any comparison against a constant,
``Bernoulli``, a ``Mul`` by ``1 / (1 - p)``, or no rescale at all; see
:func:`surgery.idioms.match_dropout_idiom`). Its eval semantics is ``x``: the chain is removed, its
output read from ``x`` (output names kept as above), counted in ``hand_written`` and named in a
note, and the result reports ``changed_semantics`` (the model was random). A chain whose rescale
is not ``1 / P(kept)`` is not dropout as torch defines it and is left alone, with a note.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from surgery.errors import PassError
from surgery.graph import (
    ONNX_DOMAINS,
    GraphLike,
    NameAllocator,
    const_value,
    forward_value,
    opset_of,
    walk,
)
from surgery.idioms import RANDOM_OPS, DropoutIdiom, match_dropout_idiom
from surgery.pass_base import Numerics, SurgeryPass, SurgeryResult, declare_stats
from surgery.registry import register

__all__ = ["RemoveDropout"]

logger = logging.getLogger(__name__)


def _graphs_with_opset(model: ir.Model) -> Iterator[tuple[GraphLike, int | None]]:
    """Every graph with the default-domain opset its nodes run at."""
    model_opset = opset_of(model.opset_imports)
    for scope in walk(model):
        yield (
            scope.graph,
            (opset_of(scope.opsets) or model_opset) if scope.function is not None else model_opset,
        )


def _attr(node: ir.Node, name: str, default: float | int) -> float | int:
    attr = node.attributes.get(name)
    if attr is None or not isinstance(attr, ir.Attr):
        return default
    return attr.value


def _label(node: ir.Node) -> str:
    return node.name or f"Dropout producing '{node.outputs[0].name}'"


def _training_reason(node: ir.Node, version: int) -> str | None:
    """Why this Dropout is (or may be) random, or None when it is an exact copy."""
    if version <= 6:
        if int(_attr(node, "is_test", 0)):
            return None
        ratio = float(_attr(node, "ratio", 0.5))
        return None if ratio == 0.0 else f"is_test=0 (training mode, ratio {ratio:g})"
    if version < 12:
        return None
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is None:
        return None
    flag = const_value(training)
    if flag is None:
        return f"training_mode comes from the non-constant tensor '{training.name}'"
    if not bool(np.asarray(flag).reshape(-1)[0]):
        return None
    ratio_value = node.inputs[1] if len(node.inputs) > 1 else None
    rate: float | np.ndarray | None = 0.5 if ratio_value is None else const_value(ratio_value)
    if rate is not None and float(np.asarray(rate).reshape(-1)[0]) == 0.0:
        return None
    shown = "non-constant" if rate is None else f"{float(np.asarray(rate).reshape(-1)[0]):g}"
    return f"training_mode is a constant true (ratio {shown})"


@register
class RemoveDropout(SurgeryPass):
    """Remove Dropout nodes of every opset form, keeping output names; masks become constant ones.

    Inference-mode Dropout is removed exactly. Training-mode Dropout (constant or non-constant
    training_mode, or is_test=0 before opset 7) is removed too and reported as changed semantics.
    Hand-written dropout (random op → compare → Cast → Mul → rescale) becomes its input too.
    """

    name = "remove-dropout"
    numerics = Numerics.EXACT
    statistics = declare_stats(
        removed="Dropout nodes removed",
        training_mode="removed Dropouts that were in training mode (semantics changed)",
        masks_replaced="used Dropout masks replaced by an all-ones tensor",
        identities_kept="Identity nodes added so a graph output keeps its name where the Dropout input cannot take it",
        hand_written="hand-written dropouts (random mask, multiply, rescale) removed",
    )

    def call(self, model: ir.Model) -> SurgeryResult:
        names: NameAllocator | None = None
        stats = {
            "removed": 0,
            "training_mode": 0,
            "masks_replaced": 0,
            "identities_kept": 0,
            "hand_written": 0,
        }
        notes: list[str] = []
        renamed: dict[str, str] = {}
        changed = False
        # Check every Dropout before changing anything: a refusal leaves the model as it was.
        found: list[tuple[GraphLike, ir.Node, int, ir.DataType | None]] = []
        for graph, opset in _graphs_with_opset(model):
            for node in graph:
                if node.op_type == "Dropout" and node.domain in ONNX_DOMAINS:
                    version = node.version or opset
                    if version is None:
                        raise PassError(
                            f"Dropout '{node.name}': the model imports no ai.onnx opset",
                            pass_name=self.name,
                        )
                    found.append((graph, node, version, self._check(node, version)))
        if found:
            names = NameAllocator(model)
        for graph, node, version, mask_dtype in found:
            assert names is not None
            reason = _training_reason(node, version)
            if reason is not None:
                changed = True
                stats["training_mode"] += 1
                notes.append(
                    f"removed training-mode Dropout '{_label(node)}': {reason}; "
                    "its output is now the input unchanged (inference semantics)"
                )
            if mask_dtype is not None:
                mask_note = self._replace_mask(graph, node, version, mask_dtype, names)
                stats["masks_replaced"] += 1
                if mask_note:
                    changed = True
                    notes.append(mask_note)
            self._bypass_output(graph, node, names, stats, renamed)
            leftovers = [v for v in node.inputs[1:] if v is not None]
            for i in range(len(node.inputs)):
                node.replace_input_with(i, None)
            graph.remove(node, safe=True)
            _drop_unused_constants(leftovers)
            stats["removed"] += 1
        idioms: list[tuple[GraphLike, DropoutIdiom]] = []
        for graph, _ in _graphs_with_opset(model):
            for node in graph:
                if node.op_type in RANDOM_OPS and node.domain in ONNX_DOMAINS:
                    idiom = match_dropout_idiom(node)
                    if idiom is None:
                        continue
                    if not idiom.scale_matches:
                        notes.append(
                            f"left '{_label(idiom.random)}' → ... → '{idiom.output.name}' alone: it masks like a "
                            f"hand-written dropout, but its rescale {idiom.scale:g} is not 1/P(kept) "
                            f"(keep probability {idiom.keep:g})"
                        )
                        continue
                    idioms.append((graph, idiom))
        if idioms and names is None:
            names = NameAllocator(model)
        for graph, idiom in idioms:
            assert names is not None
            self._remove_idiom(graph, idiom, names, stats, renamed)
            changed = True
            stats["hand_written"] += 1
            scale = "no rescale" if idiom.scale is None else f"rescale {idiom.scale:g}"
            keep = "" if idiom.keep is None else f", keep probability {idiom.keep:g}"
            notes.append(
                f"removed hand-written training-mode dropout {' → '.join(n.op_type for n in idiom.nodes)} "
                f"starting at '{_label(idiom.random)}' ({scale}{keep}); '{idiom.output.name or '?'}' is now "
                f"'{idiom.data.name or '?'}' unchanged (inference semantics)"
            )
        if stats["removed"] or stats["hand_written"]:
            logger.info(
                "remove-dropout: removed %d Dropout node(s), %d hand-written dropout(s)",
                stats["removed"],
                stats["hand_written"],
            )
        return SurgeryResult(
            model,
            bool(stats["removed"] or stats["hand_written"]),
            stats=stats,
            changed_semantics=changed,
            notes=notes,
            renamed=renamed,
        )

    def _remove_idiom(
        self,
        graph: GraphLike,
        idiom: DropoutIdiom,
        names: NameAllocator,
        stats: dict[str, int],
        renamed: dict[str, str],
    ) -> None:
        """Read ``idiom.data`` where ``idiom.output`` was read, then delete the chain."""
        data, output = idiom.data, idiom.output
        data_name, out_name = data.name, output.name
        last = idiom.nodes[-1]
        if forward_value(output, data):
            if data.name and data.name != data_name and data_name:
                renamed[data_name] = data.name
            elif out_name and data.name:
                renamed[out_name] = data.name
        else:  # a graph output that data cannot stand in for: an Identity keeps the name
            identity = ir.node(
                "Identity",
                [data],
                outputs=[
                    ir.val(
                        names.derive(out_name or last.name or "dropout", "identity"),
                        data.dtype,
                        shape=data.shape,
                    )
                ],
                name=names.derive(last.name or "dropout", "identity"),
            )
            graph.insert_before(last, identity)
            if not forward_value(
                output, identity.outputs[0]
            ):  # cannot happen: produced in this graph
                raise PassError(
                    f"dropout idiom at '{_label(idiom.random)}': could not keep its output name",
                    pass_name=self.name,
                )
            stats["identities_kept"] += 1
        leftovers: list[ir.Value] = []
        for node in reversed(idiom.nodes):
            leftovers.extend(v for v in node.inputs if v is not None and v is not data)
            for i in range(len(node.inputs)):
                node.replace_input_with(i, None)
            graph.remove(node, safe=True)
        _drop_unused_constants(
            [v for v in leftovers if v.producer() is None or v.producer() not in idiom.nodes]
        )

    def _bypass_output(
        self,
        graph: GraphLike,
        node: ir.Node,
        names: NameAllocator,
        stats: dict[str, int],
        renamed: dict[str, str],
    ) -> None:
        data, output = node.inputs[0], node.outputs[0]
        assert data is not None  # checked by _check
        data_name, out_name = data.name, output.name
        if forward_value(output, data):
            if data.name and data.name != data_name and data_name:
                renamed[data_name] = data.name  # data took the graph output's name
            elif out_name and data.name:
                renamed[out_name] = data.name
            return
        # `output` is a graph output that `data` cannot stand in for (a graph input, an initializer,
        # another output, an outer-scope value): an Identity keeps the output name.
        identity = ir.node(
            "Identity",
            [data],
            outputs=[ir.val(names.derive(out_name or node.name, "identity"))],
            name=names.derive(node.name or "Dropout", "identity"),
        )
        graph.insert_before(node, identity)
        if not forward_value(output, identity.outputs[0]):  # cannot happen: produced in this graph
            raise PassError(
                f"Dropout '{_label(node)}': could not keep its output name", pass_name=self.name
            )
        stats["identities_kept"] += 1

    def _check(self, node: ir.Node, version: int | None) -> ir.DataType | None:
        """Refuse what cannot be rewritten; return the mask's element type when the mask is used."""
        if version is None:
            raise PassError(
                f"Dropout '{_label(node)}': the model imports no default-domain opset",
                pass_name=self.name,
            )
        data = node.inputs[0] if node.inputs else None
        if data is None:
            raise PassError(f"Dropout '{_label(node)}' has no data input", pass_name=self.name)
        if len(node.outputs) < 2:
            return None
        mask = node.outputs[1]
        if not mask.uses() and not mask.is_graph_output():
            return None
        if version < 6:
            raise PassError(
                f"Dropout '{_label(node)}': its mask is used and the model is opset {version} (< 6), "
                "where Cast takes a string type; convert the model to opset 7 or later first",
                pass_name=self.name,
            )
        if version >= 10:
            return ir.DataType.BOOL
        dtype = mask.dtype or node.outputs[0].dtype or _element_type(data)
        if dtype is None:
            raise PassError(
                f"Dropout '{_label(node)}': its mask is used but the element type of its input "
                f"'{data.name}' is unknown (run shape inference first)",
                pass_name=self.name,
            )
        return dtype

    def _replace_mask(
        self,
        graph: GraphLike,
        node: ir.Node,
        version: int,
        dtype: ir.DataType,
        names: NameAllocator,
    ) -> str | None:
        """Replace the used mask by an all-ones tensor; return a note when its value is runtime-defined."""
        mask, data = node.outputs[1], node.inputs[0]
        assert data is not None
        base = node.name or "Dropout"
        mask_name = mask.name or base
        if version >= 9:
            shape = ir.node(
                "Shape",
                [data],
                outputs=[ir.val(names.derive(mask_name, "shape"), ir.DataType.INT64)],
                name=names.derive(base, "mask_shape"),
            )
            ones = ir.node(
                "ConstantOfShape",
                shape.outputs,
                {"value": ir.tensor(np.ones([1], dtype=dtype.numpy()))},
                outputs=[ir.val(names.derive(mask_name, "ones"), dtype)],
                name=names.derive(base, "mask"),
            )
            new_nodes = [shape, ones]
        elif version >= 6:
            # No ConstantOfShape before opset 9: x < x is false for every x (NaN and inf included).
            less = ir.node(
                "Less",
                [data, data],
                outputs=[ir.val(names.derive(mask_name, "less"), ir.DataType.BOOL)],
                name=names.derive(base, "mask_less"),
            )
            true = ir.node(
                "Not",
                less.outputs,
                outputs=[ir.val(names.derive(mask_name, "true"), ir.DataType.BOOL)],
                name=names.derive(base, "mask_not"),
            )
            ones = ir.node(
                "Cast",
                true.outputs,
                {"to": int(dtype)},
                outputs=[ir.val(names.derive(mask_name, "ones"), dtype)],
                name=names.derive(base, "mask"),
            )
            new_nodes = [less, true, ones]
        else:  # refused by _check
            raise AssertionError(f"opset {version}")
        graph.insert_before(node, new_nodes)
        if data.shape is not None:
            ones.outputs[0].shape = data.shape
        if not forward_value(mask, ones.outputs[0]):  # cannot happen: produced in this graph
            raise PassError(
                f"Dropout '{_label(node)}': could not keep its mask name", pass_name=self.name
            )
        if 7 <= version < 12:
            return (
                f"Dropout '{_label(node)}' (opset {version}): its mask is used; the mask of an opset 7-11 "
                "Dropout is runtime-defined (ONNX Runtime fills zeros, the onnx reference ones); "
                "it is now a constant all-ones mask"
            )
        return None


#: Ops whose output has the element type of their first input (enough to find a Dropout's type
#: when shape inference has not run: Dropout before opset 12 only takes float tensors).
_SAME_TYPE_OPS = frozenset(
    [
        "Abs",
        "Add",
        "AveragePool",
        "BatchNormalization",
        "Ceil",
        "Clip",
        "Concat",
        "Conv",
        "ConvTranspose",
        "Div",
        "Dropout",
        "Elu",
        "Exp",
        "Expand",
        "Flatten",
        "Floor",
        "Gather",
        "Gemm",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "HardSigmoid",
        "Identity",
        "InstanceNormalization",
        "LeakyRelu",
        "Log",
        "LogSoftmax",
        "LRN",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "Min",
        "Mul",
        "Neg",
        "Pad",
        "Pow",
        "PRelu",
        "Reciprocal",
        "Relu",
        "Reshape",
        "Resize",
        "Selu",
        "Sigmoid",
        "Slice",
        "Softmax",
        "Softplus",
        "Softsign",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tanh",
        "Tile",
        "Transpose",
        "Unsqueeze",
        "Upsample",
    ]
)


def _element_type(value: ir.Value) -> ir.DataType | None:
    """``value``'s element type, following type-preserving producers upstream if it is not recorded."""
    seen: set[ir.Value] = set()
    current: ir.Value | None = value
    while current is not None and current not in seen:
        if current.dtype is not None:
            return current.dtype
        seen.add(current)
        producer = current.producer()
        if (
            producer is None
            or producer.domain not in ONNX_DOMAINS
            or producer.op_type not in _SAME_TYPE_OPS
        ):
            return None
        current = producer.inputs[0] if producer.inputs else None
    return None


def _drop_unused_constants(values: list[ir.Value]) -> None:
    """Remove the ratio/training_mode constants a removed Dropout was the only reader of."""
    for value in values:
        if value.uses() or value.is_graph_output() or value.is_graph_input():
            continue
        producer = value.producer()
        if producer is not None:
            if (
                producer.op_type == "Constant"
                and producer.domain in ONNX_DOMAINS
                and producer.graph is not None
                and not any(out.uses() or out.is_graph_output() for out in producer.outputs)
            ):
                producer.graph.remove(producer, safe=True)
        elif value.is_initializer() and value.graph is not None and value.name is not None:
            del value.graph.initializers[value.name]
