"""``split-postprocess``: split NMS and other data-dependent post-processing off into a tail model.

The model becomes the *head* (for the NPU compiler) and the *tail* (for the CPU) is returned as a
chained model (``SurgeryResult.chained["tail"]``, saved as ``OUT.tail.onnx``). Without
``boundary``, the tail is everything downstream of the first data-dependent or NPU-hostile node —
NonMaxSuppression, NonZero, Unique, Compress, TopK whose k is computed from input values (not from
shapes), Loop, Scan, sequence ops, an If on a data-dependent condition, a node whose subgraph holds
one of them, and ``hostile_ops`` — found by reachability, not by op type alone. The boundary is the
cut with the fewest bytes crossing to the tail (a minimum cut on the tensor graph, sizes from the
static shapes): the tensors crossing into the data-dependent region itself (a legacy torch YOLO+NMS
export has nine, shape scalars included) are the upper bound, and the tail may start earlier where
fewer bytes cross; ops doing the NPU's work (Conv, MatMul, Gemm …) stay in the head. Run it after
``make-static``, whose folded shapes size the tensors. Constant-only computations are duplicated
instead of crossing.

Contract: boundary tensors keep their names on both sides; original graph inputs the tail reads
stay tail inputs under their names; the head's and the tail's outputs together are the original
outputs under their names. The runner verifies head then tail against the original. A head without
hostile nodes (e.g. after a first split) is left unchanged.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from surgery.analysis.cuts import NothingToSplit
from surgery.options import option
from surgery.partition import split
from surgery.pass_base import (
    Numerics,
    SurgeryPass,
    SurgeryResult,
    declare_interface,
    declare_stats,
    interface,
)
from surgery.registry import register

__all__ = ["SplitPostprocess"]


@register
class SplitPostprocess(SurgeryPass):
    """Split data-dependent post-processing (NMS, NonZero, TopK with data k …) into a CPU tail model.

    The model becomes the head (for the NPU compiler); the tail is a chained model the runner runs
    after it, verifies with it against the original, and saves as ``OUT.<tail_name>.onnx``. Without
    ``boundary`` the tail is everything downstream of the first data-dependent or NPU-hostile node
    (NonMaxSuppression, NonZero, Unique, Compress, TopK whose k comes from input values, Loop, Scan,
    sequence ops, If on a data-dependent condition, a node whose subgraph or function holds one),
    found by reachability; the boundary is the cut with the fewest bytes crossing into the tail
    (networkx minimum cut on the tensor graph, sizes from static shapes; Conv/MatMul/Gemm … stay in
    the head; ``minimize = false``: every tensor crossing into the data-dependent region).
    Boundary tensors keep their names on both sides, graph inputs the tail reads stay tail inputs,
    and the two parts' outputs together are the original outputs.
    """

    name = "split-postprocess"

    @dataclasses.dataclass(frozen=True)
    class Options:
        boundary: list[str] = option(
            default_factory=list,
            help="tensor names to cut at (default: found automatically before the first hostile op)",
        )
        hostile_ops: list[str] = option(
            default_factory=list,
            help="more op types to keep off the NPU (added to the built-in list)",
        )
        tail_name: str = option(
            "tail", help="key of the tail among the chained models (saved as OUT.<tail_name>.onnx)"
        )
        minimize: bool = option(
            True,
            help="move the automatic boundary upstream to the cut with the fewest bytes (false: cut right before the hostile op)",
        )

    numerics = Numerics.EXACT
    statistics = declare_stats(
        boundary="tensors crossing from the head to the tail",
        head_nodes="nodes left in the head (the model)",
        tail_nodes="nodes moved to the tail (the chained model)",
        nodes_before="nodes before the split",
        boundary_bytes="bytes crossing the boundary per run, when the shapes are static",
    )

    def call(self, model: ir.Model) -> SurgeryResult:
        interface_before = interface(model)
        graph = model.graph
        if self.options.boundary:
            names = {v.name for v in graph.outputs}
            if all(n in names for n in self.options.boundary) and not any(
                v.uses() for v in graph.outputs if v.name in self.options.boundary
            ):
                # the boundary tensors are already outputs nothing reads: this is a head already
                return SurgeryResult(
                    model, False, notes=["the boundary tensors are already outputs of the model"]
                )
        try:
            parts = split(
                model,
                self.options.boundary or None,
                hostile_ops=self.options.hostile_ops,
                minimize=self.options.minimize,
            )
        except NothingToSplit as exc:
            return SurgeryResult(model, False, notes=[str(exc)])
        head, tail = parts.head, parts.tail
        before = len(graph)
        model.graph = head.graph
        model.functions.clear()
        model.functions.update(head.functions)
        stats = {
            "boundary": len(parts.boundary),
            "head_nodes": len(head.graph),
            "tail_nodes": len(tail.graph),
            "nodes_before": before,
        }
        if parts.total_bytes is not None:
            stats["boundary_bytes"] = parts.total_bytes
        notes = [f"boundary ({parts.source}): " + parts.describe_boundary()]
        if parts.source == "auto" and parts.naive_boundary != parts.boundary:
            notes.append(
                f"the tensors crossing into the data-dependent region itself were {len(parts.naive_boundary)}: "
                + ", ".join(parts.naive_boundary)
            )
        if parts.hostile:
            first = parts.hostile[0]
            notes.append(f"first hostile node: {first['node']} ({first['reason']})")
        if parts.tail_graph_inputs:
            notes.append("tail also reads graph inputs: " + ", ".join(parts.tail_graph_inputs))
        notes.extend(parts.notes)
        return declare_interface(
            SurgeryResult(
                model, True, stats=stats, notes=notes, chained={self.options.tail_name: tail}
            ),
            interface_before,
            model,
            "split-postprocess moves the tail to a chained model",
        )


#: The options, also importable under their former module-level name.
SplitPostprocessOptions = SplitPostprocess.Options
