"""Partition a model: extract the part between tensor names; split off post-processing.

Parts are new ``ir.Model`` objects built from clones of the selected nodes that *share* the
original weight tensors (memory-mapped external data stays external and is never copied in
memory), keep the source ``ir_version``, opsets and model-local functions, and give every new
graph input a type from the model or from shape inference. Everything is linear in the graph size.

The split contract (:func:`split`):

- the boundary tensors keep their names on both sides;
- original graph inputs the tail reads stay tail inputs under their own names;
- the union of the head's and the tail's outputs, under the original names, is the original model's
  outputs; running the head and then the tail (see :mod:`surgery.runtime`) reproduces them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from surgery.analysis.cuts import (
    Boundary,
    Slice,
    boundary_from_names,
    input_dim_names,
    postprocess_boundary,
    slice_between,
    tensor_bytes,
)
from surgery.analysis.dataflow import Dataflow
from surgery.analysis.dependence import analyse
from surgery.analysis.tensor_types import describe_value, infer_types
from surgery.errors import InputError
from surgery.graph import value_names
from surgery.options import did_you_mean

__all__ = [
    "MANIFEST_FORMAT",
    "Split",
    "TypeSpec",
    "extract",
    "extract_part",
    "manifest",
    "parse_type_spec",
    "slice_reference",
    "split",
    "write_manifest",
]


MANIFEST_FORMAT = "onnx-surgery/split-manifest/v1"

#: An explicit type for a new input: (element type, shape); the shape may be None (unknown).
TypeSpec = tuple[ir.DataType, Sequence[int | str | None] | None]


def parse_type_spec(text: str) -> tuple[str, TypeSpec | tuple[None, Sequence[int | str | None]]]:
    """Parse ``name:float32[1,3,224,224]`` (or ``name:[1,3,224,224]``, dtype from the model).

    A dim may be an int, a name (symbolic) or ``?``. Raises :class:`InputError` when malformed.
    """
    name, sep, rest = text.rpartition(":")
    if not sep or not name or "[" not in rest or not rest.endswith("]"):
        raise InputError(
            f"cannot read type '{text}': write it as name:float32[1,3,224,224] or name:[1,3,224,224]"
        )
    dtype_text, _, dims_text = rest[:-1].partition("[")
    dims: list[int | str | None] = []
    for part in (p.strip() for p in dims_text.split(",")) if dims_text.strip() else ():
        if part in ("?", ""):
            dims.append(None)
        elif part.lstrip("-").isdigit():
            dims.append(int(part))
        else:
            dims.append(part)
    if not dtype_text:
        return name, (None, dims)
    try:
        dtype = ir.DataType.from_numpy(np.dtype(dtype_text))
    except TypeError:
        raise InputError(
            f"unknown element type '{dtype_text}' in '{text}' (e.g. float32, float16, int64)"
        ) from None
    return name, (dtype, dims)


# -- building parts -----------------------------------------------------------------------------
def _used_functions(model: ir.Model, nodes: Iterable[ir.Node]) -> list[ir.Function]:
    """Model-local functions called by ``nodes`` (and by those functions), in model order."""
    functions = model.functions
    if not functions:
        return []
    wanted: set[tuple[str, str, str]] = set()
    stack: list[ir.Node] = list(nodes)
    from surgery.graph import nested_nodes

    while stack:
        node = stack.pop()
        for _, inner in nested_nodes(node):
            stack.append(inner)
        key = node.op_identifier()
        if key in functions and key not in wanted:
            wanted.add(key)
            stack.extend(functions[key])
    return [f.clone() for k, f in functions.items() if k in wanted]


def _apply_types(
    source: ir.Model,
    flow: Dataflow,
    originals: Sequence[ir.Value],
    clones: Sequence[ir.Value],
    explicit: Mapping[str, Any],
    *,
    role: str,
    required: bool,
) -> list[str]:
    """Type the cloned values from ``explicit``, the source values, or inference in ``source``.

    Returns notes on what stays unknown; raises for an untyped input when ``required``.
    """
    notes: list[str] = []
    missing = [
        o
        for o, c in zip(originals, clones, strict=True)
        if (c.type is None or c.shape is None) and c.name not in explicit
    ]
    inferred = infer_types(source, missing, flow) if missing else {}
    for clone in clones:
        name = clone.name or ""
        if name in explicit:
            dtype, dims = explicit[name]
            if dtype is None:
                dtype = clone.dtype or (inferred[name][0].dtype if name in inferred else None)
                if dtype is None:
                    raise InputError(
                        f"{role} '{name}': the model does not say its element type; give it as {name}:float32[...]"
                    )
            clone.type = ir.TensorType(dtype)
            clone.shape = ir.Shape(list(dims)) if dims is not None else None
            continue
        if name in inferred:
            tp, shape = inferred[name]
            if clone.type is None:
                clone.type = tp
            if clone.shape is None and shape is not None:
                clone.shape = shape
        if clone.type is None:
            if required:
                raise InputError(
                    f"{role} '{name}' has no type in the model and shape inference cannot find it; "
                    f"give it explicitly, e.g. {name}:float32[1,3,224,224]"
                )
            notes.append(f"{role} '{name}' has no known type")
        elif clone.shape is None:
            notes.append(f"{role} '{name}' has no known shape (rank unknown)")
    return notes


def _build(
    model: ir.Model, flow: Dataflow, part: Slice, explicit: Mapping[str, Any], name: str | None
) -> tuple[ir.Model, list[str]]:
    graph = flow.graph
    view = ir.GraphView(
        inputs=part.inputs,
        outputs=part.outputs,
        nodes=part.nodes,
        initializers=part.initializers,
        doc_string=graph.doc_string,
        opset_imports=dict(graph.opset_imports),
        name=name or graph.name,
        metadata_props=dict(graph.metadata_props) if graph.metadata_props else None,
    )
    new_graph = view.clone()
    new_model = ir.Model(
        new_graph,
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
        doc_string=model.doc_string,
        functions=_used_functions(model, part.nodes),
        metadata_props=dict(model.metadata_props) if model.metadata_props else None,
    )
    # inputs: typed by inference in the source (upstream of them); outputs: in the part itself
    notes = _apply_types(
        model, flow, part.inputs, list(new_graph.inputs), explicit, role="input", required=True
    )
    outputs = list(new_graph.outputs)
    notes += _apply_types(
        new_model, Dataflow(new_graph), outputs, outputs, {}, role="output", required=False
    )
    for u in part.unused_inputs:
        notes.append(f"input '{u.name}' is not needed by the outputs (kept as an input)")
    return new_model, notes


def _dedupe(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


def extract_part(
    model: ir.Model,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    input_types: Mapping[str, Any] | None = None,
    name: str | None = None,
    flow: Dataflow | None = None,
) -> tuple[ir.Model, Slice, list[str]]:
    """Like :func:`extract`, also returning the :class:`Slice` and notes on unknown types."""
    flow = flow or Dataflow(model.graph)
    inputs, outputs = _dedupe(inputs), _dedupe(outputs)
    in_values = flow.resolve(inputs, role="input")
    out_values = flow.resolve(outputs, role="output")
    explicit = dict(input_types or {})
    for key in explicit:
        if key not in inputs:
            raise InputError(
                f"a type is given for '{key}', which is not among the inputs{did_you_mean(key, inputs)}"
            )
    part = slice_between(flow, in_values, out_values)
    new_model, notes = _build(model, flow, part, explicit, name)
    return new_model, part, notes


def extract(
    model: ir.Model,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    input_types: Mapping[str, Any] | None = None,
) -> ir.Model:
    """The part of ``model`` that computes ``outputs`` from ``inputs``, as a new model.

    Weights are shared with ``model`` (not copied); save with :func:`surgery.model_io.save`.
    ``input_types`` maps an input name to ``(ir.DataType | None, dims | None)`` and overrides the
    model's and shape inference's types (see :func:`parse_type_spec`).

    Raises:
        InputError: an unknown tensor name (with a did-you-mean), a cut that does not separate the
            inputs from the outputs (naming the graph input and a path), or an input whose type
            cannot be found.
    """
    return extract_part(model, inputs, outputs, input_types=input_types)[0]


def slice_reference(
    original: ir.Model, part: ir.Model, feeds: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Feeds for ``part`` and its expected outputs, read from a run of ``original`` on ``feeds``.

    ``part`` is a model extracted from ``original``: its inputs and outputs are tensors of the
    original. Returns ``(part_feeds, expected_outputs)``.
    """
    from surgery.verify.layerwise import run_exposing

    in_names = [v.name for v in part.graph.inputs if v.name]
    out_names = [v.name for v in part.graph.outputs if v.name]
    wanted = _dedupe(in_names + out_names)
    values = run_exposing(original, feeds, wanted)
    part_feeds = {n: values[n] for n in in_names}
    expected = {n: values[n] for n in out_names}
    return part_feeds, expected


# -- split --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Split:
    """A model split into a head (NPU) and a tail (CPU post-processing)."""

    head: ir.Model
    tail: ir.Model
    boundary: list[str]
    """Names of the tensors passed from the head to the tail."""
    tail_graph_inputs: list[str]
    """Original graph inputs the tail reads."""
    outputs: list[str]
    """The original model's output names, in order."""
    hostile: list[dict[str, str]]
    """Hostile nodes that decided an automatic boundary (node, op_type, reason)."""
    source: str
    """``"auto"`` or ``"user"``."""
    notes: list[str] = dataclasses.field(default_factory=list)
    boundary_bytes: dict[str, int | None] = dataclasses.field(default_factory=dict)
    """Bytes of each boundary tensor, by name (None: its shape is not known)."""
    naive_boundary: list[str] = dataclasses.field(default_factory=list)
    """Automatic mode: the tensors crossing into the data-dependent region itself, before the
    minimum cut moved the boundary upstream to fewer bytes."""

    @property
    def total_bytes(self) -> int | None:
        """Bytes crossing from the head to the tail per run (None when a size is unknown)."""
        sizes = [self.boundary_bytes.get(n) for n in self.boundary]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    def describe_boundary(self) -> str:
        """``name (N B), …; total N B`` for reports."""

        def size(n: int | None) -> str:
            return "? B" if n is None else f"{n} B"

        total = self.total_bytes
        return (
            ", ".join(f"{n} ({size(self.boundary_bytes.get(n))})" for n in self.boundary)
            + f"; {len(self.boundary)} tensor(s), {size(total) if total is not None else 'size unknown'}"
        )

    def manifest(self, files: Mapping[str, str] | None = None) -> dict[str, Any]:
        return manifest(
            self.head,
            {"tail": self.tail},
            files=files,
            original_outputs=self.outputs,
            boundary=self.boundary,
            hostile=self.hostile,
            source=self.source,
        )


def split(
    model: ir.Model,
    boundary: Sequence[str] | None = None,
    *,
    hostile_ops: Sequence[str] = (),
    minimize: bool = True,
) -> Split:
    """Split ``model`` into a head and a tail at ``boundary`` or before its post-processing.

    Without ``boundary`` the tail holds everything downstream of the first data-dependent or
    NPU-hostile node (NonMaxSuppression, NonZero, Unique, TopK with a data-dependent k, Loop …, plus
    ``hostile_ops``), and the boundary is the cut with the fewest bytes crossing into it: a
    minimum cut on the tensor graph sized by static shapes (:func:`~surgery.analysis.cuts.min_bytes_tail`;
    ops doing the NPU's work — Conv, MatMul, Gemm … — stay in the head). ``minimize=False`` keeps
    the tensors crossing into the data-dependent region itself. ``model`` is not changed; both
    parts share its weights.

    Raises:
        InputError: no hostile node (automatic mode), unknown boundary names, a boundary that does
            not separate the model, or a tail that produces none of the model's outputs.
    """
    graph = model.graph
    if boundary:
        cut: Boundary = boundary_from_names(graph, _dedupe(boundary))
        source = "user"
    else:
        cut = postprocess_boundary(
            graph,
            hostile_ops=hostile_ops,
            functions=model.functions,
            minimize=minimize,
            model=model,
        )
        source = "auto"
    flow = cut.dependence.flow if cut.dependence is not None else Dataflow(graph)
    shared = input_dim_names(graph)
    outputs = list(graph.outputs)
    out_names = [v.name or "" for v in outputs]
    tail_outputs = [v for v in outputs if flow.producer(v) in cut.tail_nodes]
    if not tail_outputs:
        raise InputError(
            "the tail after the boundary computes none of the model's outputs"
            + (
                f" (hostile nodes: {', '.join(h.name for h in cut.hostile[:3])})"
                if cut.hostile
                else ""
            )
            + "; nothing to split off"
        )
    head_outputs = [v for v in outputs if v not in tail_outputs]
    for v in cut.tensors:
        if v not in head_outputs:
            head_outputs.append(v)
    head_inputs = list(graph.inputs)
    head_model, head_slice, head_notes = extract_part(
        model,
        value_names(head_inputs),
        value_names(head_outputs),
        name=f"{graph.name or 'model'}_head",
        flow=flow,
    )
    # the head keeps only the graph inputs it reads (an unused input would confuse ATC)
    unused = {v.name for v in head_slice.unused_inputs}
    if unused and len(unused) < len(head_inputs):
        keep = [v for v in head_model.graph.inputs if v.name not in unused]
        _set_inputs(head_model.graph, keep)
        head_notes = [n for n in head_notes if "is not needed" not in n]
    tail_in = list(cut.tensors) + [v for v in cut.tail_inputs if v not in cut.tensors]
    tail_model, _tail_slice, tail_notes = extract_part(
        model,
        value_names(tail_in),
        value_names(tail_outputs),
        name=f"{graph.name or 'model'}_tail",
        flow=flow,
    )
    if source == "user":
        dep = analyse(head_model.graph, functions=head_model.functions)
        if dep.hostile:
            head_notes.append(
                "the head still contains data-dependent or NPU-hostile nodes: "
                + ", ".join(f"{h.name} ({h.node.op_type})" for h in dep.hostile[:5])
            )
    return Split(
        head=head_model,
        tail=tail_model,
        boundary=[v.name or "" for v in cut.tensors],
        tail_graph_inputs=[v.name or "" for v in cut.tail_inputs],
        outputs=out_names,
        hostile=[h.to_dict() for h in cut.hostile],
        source=source,
        notes=[f"head: {n}" for n in head_notes] + [f"tail: {n}" for n in tail_notes],
        boundary_bytes={
            v.name or "": cut.sizes.get(v) if v in cut.sizes else tensor_bytes(v, shared=shared)
            for v in cut.tensors
        },
        naive_boundary=[v.name or "" for v in cut.naive],
    )


def _set_inputs(graph: ir.Graph, values: Sequence[ir.Value]) -> None:
    graph.inputs.clear()
    graph.inputs.extend(values)


# -- manifest -----------------------------------------------------------------------------------
def manifest(
    head: ir.Model,
    chained: Mapping[str, ir.Model],
    *,
    files: Mapping[str, str] | None = None,
    original_outputs: Sequence[str] | None = None,
    boundary: Sequence[str] | None = None,
    hostile: Sequence[Mapping[str, str]] = (),
    source: str | None = None,
) -> dict[str, Any]:
    """The JSON contract of a split: each part's inputs and outputs (name, dtype, shape), which
    original outputs each produces, the boundary, and the order to run the parts in.

    Built from the *final* models, so passes run on the head after the split (e.g. fixing its
    shapes) are reflected. ``files`` maps a part name (``"head"``, ``"tail"`` …) to its file name.
    ``original_outputs`` defaults to the union of the parts' outputs that are not read by a later
    part.
    """
    parts = [("head", head), *chained.items()]
    files = dict(files or {})
    entries: list[dict[str, Any]] = []
    produced: list[str] = []
    read_later: set[str] = set()
    for _, part in parts[1:]:
        read_later.update(v.name for v in part.graph.inputs if v.name)
    if original_outputs is None:
        original_outputs = []
        for _, part in parts:
            for v in part.graph.outputs:
                if v.name and v.name not in read_later and v.name not in original_outputs:
                    original_outputs.append(v.name)
    originals = set(original_outputs)
    if boundary is None:
        head_out = {v.name for v in head.graph.outputs}
        boundary = [
            n
            for n in dict.fromkeys(value_names(v for _, p in parts[1:] for v in p.graph.inputs))
            if n in head_out
        ]
    for name, part in parts:
        outs = [describe_value(v) for v in part.graph.outputs]
        makes = [o["name"] for o in outs if o["name"] in originals and o["name"] not in produced]
        produced.extend(makes)
        entries.append(
            {
                "name": name,
                "file": files.get(name),
                "inputs": [describe_value(v) for v in part.graph.inputs if not v.is_initializer()],
                "outputs": outs,
                "produces": makes,
                "nodes": len(part.graph),
            }
        )
    head_out_desc = {o["name"]: o for o in entries[0]["outputs"]}
    shared = input_dim_names(head.graph)
    head_values = {v.name: v for v in head.graph.outputs}
    crossing = []
    for n in boundary:
        entry = dict(head_out_desc.get(n, {"name": n, "dtype": None, "shape": None}))
        entry["bytes"] = tensor_bytes(head_values[n], shared=shared) if n in head_values else None
        crossing.append(entry)
    sizes = [e["bytes"] for e in crossing]
    return {
        "format": MANIFEST_FORMAT,
        "source": source,
        "ir_version": head.ir_version,
        "opset_imports": dict(head.graph.opset_imports),
        "outputs": list(original_outputs),
        "boundary": crossing,
        "boundary_bytes": None if any(b is None for b in sizes) else sum(sizes),
        "hostile": [dict(h) for h in hostile],
        "parts": entries,
    }


def write_manifest(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write a manifest as JSON (atomically: a temporary file renamed into place)."""
    from surgery.writeplan import write_text_file

    return write_text_file(path, json.dumps(data, indent=2) + "\n", "manifest")
