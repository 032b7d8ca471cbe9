"""``assert-static``: a gate that fails while any tensor is dynamic or a data-dependent op remains."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from surgery.errors import PassError
from surgery.options import option
from surgery.pass_base import Numerics, SurgeryPass, SurgeryResult, declare_stats
from surgery.registry import register
from surgery.shapes.infer import proven_shapes
from surgery.shapes.static import find_offenders

__all__ = ["AssertStatic"]


@register
class AssertStatic(SurgeryPass):
    """Fail unless every tensor of every graph is static and no data-dependent op remains.

    Staticness is proven, not read: the shapes judged are those onnx inference derives from the
    graph inputs on the model as given (intermediate annotations forgotten, the model left
    unchanged), since annotations may be stale or missing on nodes a pass created.

    Offenders: a tensor of unknown rank or with a dynamic dim (graph inputs, intermediates and
    outputs of the main graph and of every subgraph), NonZero, NonMaxSuppression, Unique,
    Compress, TopK with a non-constant k, and any Loop or Scan (unroll them with make-static's
    ``unroll_loops``: a static compiler wants straight-line code) — in the main
    graph, every subgraph and every model-local function — and any call of a model-local function
    (its tensors are only shaped per call: run inline-functions first). The error lists every
    offender with the node that produces it.
    """

    name = "assert-static"

    @dataclasses.dataclass(frozen=True)
    class Options:
        allow_ops: list[str] = option(
            default_factory=list,
            help="ops accepted although data-dependent (e.g. ['NonMaxSuppression']); tensors downstream of them are exempt",
        )

    numerics = Numerics.EXACT
    is_gate = True
    statistics = declare_stats(
        checked="what was proven (always 'static': the pass raises otherwise)",
    )

    def call(self, model: ir.Model) -> SurgeryResult:
        offenders = find_offenders(
            model, allow_ops=frozenset(self.options.allow_ops), shapes=proven_shapes(model)
        )
        if offenders:
            tensors = sum(1 for o in offenders if o.what == "tensor")
            ops = len(offenders) - tensors
            lines = "\n".join(f"  - {o}" for o in offenders)
            raise PassError(
                f"the model is not static: {tensors} dynamic tensor(s), {ops} data-dependent or control-flow op(s)\n{lines}",
                pass_name=self.name,
            )
        return SurgeryResult(model, modified=False, stats={"checked": "static"})


#: The options, also importable under their former module-level name.
AssertStaticOptions = AssertStatic.Options
