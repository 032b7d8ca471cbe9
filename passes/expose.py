"""``expose``: make intermediate tensors graph outputs, by name or glob pattern.

The Debug-op trick of precision-alignment tutorials without touching the export code: the
exposed tensors come out of ONNX Runtime (or an NPU run) next to the model's own outputs, under
their names. Patterns use shell globs (``/backbone/*/Conv_output_0``, ``*Relu*``). Exposed
tensors get a type from the model or from onnx shape inference. Only tensors of the main graph can
be exposed: a name found only inside an If/Loop/Scan body is refused with that reason. Existing
outputs keep their order; new ones follow in graph order. Exposing twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import fnmatch

import onnx_ir as ir

from surgery.analysis.dataflow import Dataflow
from surgery.analysis.tensor_types import fill_types
from surgery.errors import InputError, PipelineError
from surgery.graph import value_names
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

__all__ = ["Expose", "select_tensors"]


_GLOB_CHARS = set("*?[")


def select_tensors(
    flow: Dataflow, patterns: list[str], *, include_constants: bool = False
) -> list[ir.Value]:
    """Node outputs of the graph matching ``patterns`` (names or globs), in graph order.

    Raises:
        InputError: a plain name that is not a tensor (did-you-mean), a name only inside a subgraph,
            or a pattern that matches nothing.
    """
    chosen: set[ir.Value] = set()
    for pattern in patterns:
        if _GLOB_CHARS & set(pattern):
            hits = [
                v
                for node in flow.nodes
                if include_constants or node.op_type != "Constant"
                for v in node.outputs
                if v.name and fnmatch.fnmatchcase(v.name, pattern)
            ]
            if not hits:
                raise InputError(f"expose: pattern '{pattern}' matches no tensor of the main graph")
            chosen.update(hits)
        else:
            value = flow.value(pattern, role="tensor")
            if flow.producer(value) is None:
                kind = "a graph input" if value.is_graph_input() else "an initializer"
                raise InputError(f"expose: '{pattern}' is {kind}, not a computed tensor")
            chosen.add(value)
    ordered = [v for node in flow.nodes for v in node.outputs if v in chosen]
    return ordered


@register
class Expose(SurgeryPass):
    """Mark intermediate tensors as graph outputs, by name or glob (the Debug-op trick).

    Shell globs (``/backbone/*/Conv_output_0``) match main-graph node outputs; Constant outputs only
    with ``include_constants``. New outputs follow the existing ones in graph order and get types
    from the model or shape inference. Names found only inside If/Loop/Scan bodies are refused.
    """

    name = "expose"
    example = 'tensors = ["/backbone/*/Conv_output_0"]'

    @dataclasses.dataclass(frozen=True)
    class Options:
        tensors: list[str] = option(
            help="tensor names or glob patterns (e.g. '/backbone/*/Relu_output_0')"
        )
        include_constants: bool = option(
            False, help="also expose outputs of Constant nodes matched by a pattern"
        )

        def __post_init__(self) -> None:
            if not self.tensors:
                raise PipelineError("expose.tensors: give at least one tensor name or pattern")

    numerics = Numerics.EXACT
    statistics = declare_stats(
        exposed="tensors added as graph outputs",
        already_outputs="selected tensors that were graph outputs already",
    )

    def call(self, model: ir.Model) -> SurgeryResult:
        interface_before = interface(model)
        flow = Dataflow(model.graph)
        values = select_tensors(
            flow, list(self.options.tensors), include_constants=self.options.include_constants
        )
        present = set(model.graph.outputs)
        new = [v for v in values if v not in present]
        if not new:
            return SurgeryResult(model, False, stats={"exposed": 0, "already_outputs": len(values)})
        untyped = fill_types(model, new, flow=flow)
        for v in new:
            model.graph.outputs.append(v)
        notes = [
            f"exposed {len(new)} tensor(s): "
            + ", ".join(value_names(new[:10]))
            + (" …" if len(new) > 10 else "")
        ]
        if untyped:
            notes.append("no type known for: " + ", ".join(value_names(untyped[:10])))
        return declare_interface(
            SurgeryResult(
                model,
                True,
                stats={"exposed": len(new), "already_outputs": len(values) - len(new)},
                notes=notes,
            ),
            interface_before,
            model,
            "expose adds outputs",
        )


#: The options, also importable under their former module-level name.
ExposeOptions = Expose.Options
