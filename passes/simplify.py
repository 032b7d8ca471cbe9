"""``simplify``: onnxsim's constant folding and graph optimizations, size-checked and gated."""

from __future__ import annotations

import dataclasses
from typing import Literal

import onnx_ir as ir

from surgery.errors import PassError
from surgery.graph import count_nodes, transplant
from surgery.model_io import initializer_bytes
from surgery.options import option
from surgery.pass_base import SurgeryPass, SurgeryResult, declare_stats
from surgery.registry import register

__all__ = ["Simplify"]


#: onnxsim works on one protobuf message, which cannot exceed 2 GB.
_PROTO_LIMIT = int(1.8 * 2**30)


@register
class Simplify(SurgeryPass):
    """Constant folding and graph optimizations by onnxsim, refused when it bloats the weights.

    onnxsim is a good folding engine but checks nothing itself (``check_n=0``) and may grow a
    model: it folds the Transpose of a tied embedding/lm_head weight into a second full copy. This
    pass runs it, keeps the source ``ir_version`` and opset imports, and compares the weight bytes
    before and after: a net growth over ``max_growth_bytes`` is refused (the model is left as it
    was, with a note) or stops the run (``on_growth = "error"``). The runner's gates verify the
    result like any other pass. Models over 1.8 GB of weights are refused: onnxsim needs a single
    protobuf message; use ``make-static`` for those.
    """

    name = "simplify"
    statistics = declare_stats(
        nodes_before="nodes before onnxsim",
        nodes_after="nodes in onnxsim's result",
        weight_bytes_delta="growth of the weights in onnxsim's result, in bytes",
    )

    @dataclasses.dataclass(frozen=True)
    class Options:
        max_growth_bytes: int = option(
            1 << 20,
            help="refuse onnxsim's result when it grows the weights by more than this many bytes",
        )
        on_growth: Literal["skip", "error"] = option(
            "skip",
            help="what to do with a result over max_growth_bytes: keep the model as it was (skip) or stop (error)",
        )
        include_subgraph: bool = option(
            True,
            help="let onnxsim also work in If/Loop/Scan bodies (it leaves branch-local constants alone)",
        )
        skip_fuse_bn: bool = option(False, help="keep BatchNormalization nodes unfused")

    def call(self, model: ir.Model) -> SurgeryResult:
        import onnxsim

        before_bytes = initializer_bytes(model)
        if before_bytes > _PROTO_LIMIT:
            raise PassError(
                f"the model has {before_bytes / 2**30:.2f} GiB of weights; onnxsim needs one protobuf message "
                "(under 2 GB): use make-static instead",
                pass_name=self.name,
            )
        before_nodes = count_nodes(model)
        proto = ir.to_proto(model)
        try:
            simplified, _ = onnxsim.simplify(
                proto,
                check_n=0,
                skip_fuse_bn=self.options.skip_fuse_bn,
                include_subgraph=self.options.include_subgraph,
            )
        except Exception as exc:
            raise PassError(
                f"onnxsim failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                pass_name=self.name,
            ) from None
        simplified.ir_version = model.ir_version
        new = ir.from_proto(simplified)
        after_bytes = initializer_bytes(new)
        growth = after_bytes - before_bytes
        stats = {
            "nodes_before": before_nodes,
            "nodes_after": count_nodes(new),
            "weight_bytes_delta": growth,
        }
        if growth > self.options.max_growth_bytes:
            message = (
                f"onnxsim's result grows the weights by {growth} bytes ({growth / max(before_bytes, 1):.0%}), "
                f"over max_growth_bytes {self.options.max_growth_bytes}"
            )
            if self.options.on_growth == "error":
                raise PassError(message, pass_name=self.name)
            return SurgeryResult(model, False, stats=stats, notes=[f"not applied: {message}"])
        if _signature(new) == _signature(model):
            return SurgeryResult(model, False, stats=stats)
        transplant(new, model)
        return SurgeryResult(model, True, stats=stats)


#: The options, also importable under their former module-level name.
SimplifyOptions = Simplify.Options


def _signature(model: ir.Model) -> tuple:
    """A cheap structural fingerprint: ops, names, edges and initializer names/shapes of every graph."""
    from surgery.graph import iter_graphs

    parts: list = []
    for graph in iter_graphs(model):
        parts.append(
            tuple(
                (
                    n.op_type,
                    n.name,
                    tuple(v.name if v else "" for v in n.inputs),
                    tuple(v.name for v in n.outputs),
                )
                for n in graph
            )
        )
        if isinstance(graph, ir.Graph):
            parts.append(tuple(sorted((k, str(v.shape)) for k, v in graph.initializers.items())))
    return tuple(parts)
