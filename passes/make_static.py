"""``make-static``: fold shape computations and re-infer shapes until the model stops changing."""

from __future__ import annotations

import dataclasses
import gc

import onnx_ir as ir

from surgery.errors import PipelineError
from surgery.graph import iter_graphs
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
from surgery.shapes.dims import dim_name, is_known_dim
from surgery.shapes.fold import DEFAULT_KEEP_OPS, Folder
from surgery.shapes.infer import clear_shapes, infer_model, is_static_shape
from surgery.shapes.static import find_offenders, function_label

__all__ = ["MakeStatic"]


def _shape_snapshot(model: ir.Model) -> list[tuple[ir.Value, object]]:
    snap: list[tuple[ir.Value, object]] = []
    for graph in iter_graphs(model.graph):
        for node in graph:
            for out in node.outputs:
                snap.append(
                    (
                        out,
                        None
                        if out.shape is None
                        else tuple(d if is_known_dim(d) else ("?", dim_name(d)) for d in out.shape),
                    )
                )
    return snap


def _all_static(model: ir.Model) -> bool:
    for graph in iter_graphs(model.graph):
        for node in graph:
            for out in node.outputs:
                if not is_static_shape(out.shape):
                    return False
    return True


@register
class MakeStatic(SurgeryPass):
    """Propagate fixed input shapes everywhere: fold shape math, inline constant Ifs, re-infer.

    Alternates onnx shape inference (data propagation on, large weights left out) with a linear
    folding sweep — ``Shape``/``Size`` of static tensors, ops on constants, ``If`` with a constant
    condition (its taken branch is inlined), optionally ``Loop`` and ``Scan`` unrolling — until
    nothing changes.
    Every intermediate and output shape is rebuilt from scratch, never trusted from the exporter.
    Model-local function bodies are folded too, but their tensors take shapes only per call:
    run ``inline-functions`` first to make them static (the report says when functions remain).
    A folded tensor may not grow the model by more than ``size_limit`` bytes net; the report
    gives the total size change and what was left unfolded for size.
    """

    name = "make-static"

    @dataclasses.dataclass(frozen=True)
    class Options:
        size_limit: int = option(
            1 << 20,
            help="largest net growth in bytes one fold may add to the model (constants it frees subtracted); "
            "constants larger than this are never read or duplicated",
        )
        max_rounds: int = option(
            32, help="give up after this many rounds of whole-model inference + folding"
        )
        inline_if: bool = option(
            True, help="replace an If whose condition is constant by its taken branch"
        )
        unroll_loops: bool = option(
            False,
            help="unroll Loops with a constant trip count and no data-dependent exit, and Scans of static length",
        )
        max_unroll: int = option(
            64, help="largest trip count (Loop) or scan length (Scan) unrolled"
        )
        keep_ops: list[str] = option(
            default_factory=lambda: sorted(DEFAULT_KEEP_OPS),
            help="ops never folded even with constant inputs",
        )

        def __post_init__(self) -> None:
            if self.size_limit < 0:
                raise PipelineError("make-static.size_limit must be >= 0")
            if self.max_rounds < 1:
                raise PipelineError("make-static.max_rounds must be >= 1")
            if self.max_unroll < 0:
                raise PipelineError("make-static.max_unroll must be >= 0")

    numerics = Numerics.EXACT
    statistics = declare_stats(
        rounds="rounds of whole-model inference + folding run",
        folded_nodes="nodes with constant inputs folded into constants",
        shape_ops_folded="shape computations (Shape, Size, ...) folded from inferred shapes",
        ifs_inlined="If nodes with a constant condition replaced by their taken branch",
        loops_unrolled="Loop nodes unrolled",
        scans_unrolled="Scan nodes unrolled",
        nodes_removed="nodes removed by folding",
        nodes_inferred="nodes whose output shapes the folder inferred",
        size_delta_bytes="net growth of the constants in bytes (negative: smaller)",
        skipped_for_size="folds skipped because they would grow the model over size_limit",
        dynamic_tensors="tensors still dynamic afterwards",
    )

    def call(self, model: ir.Model) -> SurgeryResult:
        interface_before = interface(model)
        # the sweep creates and drops ~3 objects per folded node; with the cyclic GC on, its full
        # collections make a 100k-node graph take superlinear time. Paused here, resumed after.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return declare_interface(
                self._call(model), interface_before, model, "make-static resolves dims"
            )
        finally:
            if gc_was_enabled:
                gc.enable()

    def _call(self, model: ir.Model) -> SurgeryResult:
        opts = self.options
        before = _shape_snapshot(model)
        folder = Folder(
            model,
            size_limit=opts.size_limit,
            inline_if=opts.inline_if,
            unroll_loops=opts.unroll_loops,
            max_unroll=opts.max_unroll,
            keep_ops=frozenset(opts.keep_ops),
        )
        rounds = 0
        converged = False
        # inference gets to recompute every shape from scratch, but a shape it cannot recompute
        # is put back at the end: a graph output without one fails the checker
        known = [(v, v.shape) for v, _ in before if v.shape is not None]
        known += [
            (v, v.shape) for g in iter_graphs(model.graph) for v in g.outputs if v.shape is not None
        ]
        clear_shapes(model)
        inference_failed = False
        while rounds < opts.max_rounds:
            # a round: onnx's whole-model inference (one serialization), then cheap sweeps that
            # fold and infer node by node in order until they stop changing anything
            rounds += 1
            inference_failed |= infer_model(model) < 0
            swept = 0
            while swept < opts.max_rounds and folder.sweep():
                swept += 1
            if not swept or _all_static(model):
                # nothing folded, or nothing left that whole-model inference could still resolve
                converged = True
                break
            clear_shapes(model)
        notes: list[str] = []
        if inference_failed:
            notes.append(
                "onnx shape inference refused the model in some round; shapes came from per-node inference"
            )
        if not converged:
            notes.append(f"did not reach a fixed point in {opts.max_rounds} rounds")
            clear_shapes(model)
            infer_model(model)
        kept = 0
        for value, shape in known:
            if value.shape is None:
                value.shape = shape
                kept += 1
        if kept:
            notes.append(f"{kept} shapes that inference could not recompute were kept as annotated")
        after = _shape_snapshot(model)
        stats = folder.stats
        folded = (
            stats.folded_nodes
            + stats.shape_ops_folded
            + stats.ifs_inlined
            + stats.loops_unrolled
            + stats.scans_unrolled
        )
        shapes_changed = len(before) != len(after) or any(
            a[0] is not b[0] or a[1] != b[1] for a, b in zip(before, after, strict=True)
        )
        offenders = find_offenders(model)
        dynamic = [o for o in offenders if o.what == "tensor"]
        if dynamic:
            notes.append(f"{len(dynamic)} tensors are still dynamic, e.g. {dynamic[0]}")
        called = {
            (n.domain, n.op_type, n.overload) for g in iter_graphs(model.graph) for n in g
        } & set(model.functions)
        if called:
            names = ", ".join(sorted(function_label(*key) for key in called))
            notes.append(
                f"model-local functions remain ({names}): their tensors are shaped per call; "
                "run inline-functions before make-static to make them static"
            )
        if stats.skipped_for_size:
            largest = max(stats.skipped_for_size.items(), key=lambda kv: kv[1])
            notes.append(
                f"{len(stats.skipped_for_size)} folds skipped for size_limit={opts.size_limit} "
                f"(largest: '{largest[0]}' would add {largest[1]} bytes)"
            )
        return SurgeryResult(
            model,
            modified=bool(folded) or shapes_changed,
            stats={
                "rounds": rounds,
                "folded_nodes": stats.folded_nodes,
                "shape_ops_folded": stats.shape_ops_folded,
                "ifs_inlined": stats.ifs_inlined,
                "loops_unrolled": stats.loops_unrolled,
                "scans_unrolled": stats.scans_unrolled,
                "nodes_removed": stats.removed_nodes,
                "nodes_inferred": stats.nodes_inferred,
                "size_delta_bytes": stats.size_delta,
                "skipped_for_size": len(stats.skipped_for_size),
                "dynamic_tensors": len(dynamic),
            },
            notes=notes,
        )


#: The options, also importable under their former module-level name.
MakeStaticOptions = MakeStatic.Options
