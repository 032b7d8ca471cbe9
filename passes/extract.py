"""``extract``: keep only the part of the model between given tensor names.

The model becomes the subgraph that computes ``outputs`` from ``inputs`` (linear time; weights are
shared, never copied: external data stays external). A new input made from an intermediate tensor
gets its type from the model, from onnx shape inference (run without the large weights), or from
``input_types``. The source ``ir_version``, opsets and the model-local functions the part calls are
kept. Nodes keep their names. Unknown names fail with a did-you-mean, and a cut that does not
separate the inputs from the outputs fails naming the graph input that leaks and a path from it.

Its outputs are tensors of the original model computed from other tensors of it: verify it by
feeding the original's values of the new inputs (:func:`surgery.partition.slice_reference`).
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from surgery.errors import PipelineError
from surgery.options import option
from surgery.partition import extract_part, parse_type_spec
from surgery.pass_base import (
    Numerics,
    SurgeryPass,
    SurgeryResult,
    declare_interface,
    declare_stats,
    interface,
)
from surgery.registry import register

__all__ = ["Extract"]


def _same_interface(model: ir.Model, part: ir.Model, kept_all_nodes: bool) -> bool:
    g, p = model.graph, part.graph
    return (
        kept_all_nodes
        and [v.name for v in g.inputs] == [v.name for v in p.inputs]
        and [v.name for v in g.outputs] == [v.name for v in p.outputs]
        and set(g.initializers) == set(p.initializers)
        and len(model.functions) == len(part.functions)
    )


@register
class Extract(SurgeryPass):
    """Keep the subgraph between tensor names (linear time; weights shared, external data kept).

    New inputs made from intermediate tensors are typed from the model, from onnx shape inference
    on their ancestors (large weights left out), or from ``input_types``. Unknown names fail with a
    did-you-mean; a cut that does not separate the inputs from the outputs fails naming the graph
    input that leaks in and a path from it. Verify the part against the original with
    :func:`surgery.partition.slice_reference` (its inputs are tensors of the original).
    """

    name = "extract"
    example = 'inputs = ["/backbone/Relu_output_0"]\noutputs = ["scores"]'

    @dataclasses.dataclass(frozen=True)
    class Options:
        inputs: list[str] = option(help="names of the tensors that become the inputs of the part")
        outputs: list[str] = option(help="names of the tensors that become its outputs")
        input_types: list[str] = option(
            default_factory=list,
            help="types for new inputs the model does not type, e.g. ['feat:float32[1,64,56,56]'] ('name:[1,64]' keeps the dtype)",
        )

        def __post_init__(self) -> None:
            if not self.outputs:
                raise PipelineError("extract.outputs: give at least one tensor name")
            for text in self.input_types:
                try:
                    parse_type_spec(text)
                except Exception as exc:
                    raise PipelineError(f"extract.input_types: {exc}") from None

    numerics = Numerics.EXACT
    statistics = declare_stats(
        nodes="nodes of the part when it is the whole model (nothing cut)",
        nodes_kept="nodes of the extracted part",
        nodes_removed="nodes cut away",
        inputs="graph inputs of the extracted part",
        outputs="graph outputs of the extracted part",
    )

    def call(self, model: ir.Model) -> SurgeryResult:
        interface_before = interface(model)
        types = dict(parse_type_spec(t) for t in self.options.input_types)
        part, cut, notes = extract_part(
            model, self.options.inputs, self.options.outputs, input_types=types
        )
        unchanged = _same_interface(model, part, len(cut.nodes) == len(model.graph))
        if unchanged:
            return SurgeryResult(model, False, stats={"nodes": len(cut.nodes)})
        before = len(model.graph)
        model.graph = part.graph
        model.functions.clear()
        model.functions.update(part.functions)
        stats = {
            "nodes_kept": len(cut.nodes),
            "nodes_removed": before - len(cut.nodes),
            "inputs": len(part.graph.inputs),
            "outputs": len(part.graph.outputs),
        }
        return declare_interface(
            SurgeryResult(model, True, stats=stats, notes=notes),
            interface_before,
            model,
            "extract cuts the graph",
        )


#: The options, also importable under their former module-level name.
ExtractOptions = Extract.Options
