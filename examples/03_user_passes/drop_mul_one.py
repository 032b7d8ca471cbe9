"""A whole pass in one file: remove ``Mul(x, 1)`` and ``Mul(1, x)`` (exact), in every graph.

Load it with ``surgery apply drop-mul-one model.onnx -o out.onnx --plugin drop_mul_one.py``: naming
the file on the command line is what allows surgery to run its code.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from surgery import Numerics, SurgeryPass, SurgeryResult, register
from surgery.graph import is_onnx_domain, iter_graphs
from surgery.options import option
from surgery.pass_base import declare_stats


def _one_rank(value: ir.Value | None) -> int | None:
    """The rank of a constant that is a single 1, else None."""
    tensor = value.const_value if value is not None else None
    if tensor is None or tensor.size != 1 or not bool(np.all(tensor.numpy() == 1)):
        return None
    return len(tensor.shape)


@register
class DropMulOne(SurgeryPass):
    """Remove multiplications by one (a no-op some exporters leave), in every graph and function.

    The other operand takes the Mul's place. A Mul whose output is a graph output is left, so the
    model's interface keeps its names; so is one that could broadcast its input to a higher rank.
    """

    name = "drop-mul-one"
    numerics = Numerics.EXACT
    statistics = declare_stats(removed="Mul-by-one nodes removed")

    @dataclasses.dataclass(frozen=True)
    class Options:
        only_scalars: bool = option(
            True,
            help="remove only Muls by a rank-0 one; false: also by a one-element tensor when x's rank "
            "is known to be at least its rank (so the Mul cannot broadcast x up)",
        )

    def call(self, model: ir.Model) -> SurgeryResult:
        removed = 0
        for graph in iter_graphs(model):
            for node in list(graph):
                if (
                    node.op_type != "Mul"
                    or not is_onnx_domain(node.domain)
                    or len(node.inputs) != 2
                ):
                    continue
                keep = None
                for x, other in (
                    (node.inputs[0], node.inputs[1]),
                    (node.inputs[1], node.inputs[0]),
                ):
                    rank = _one_rank(other)
                    if x is None or rank is None:
                        continue
                    x_rank = len(x.shape) if x.shape is not None else None
                    if rank == 0 or (
                        not self.options.only_scalars and x_rank is not None and x_rank >= rank
                    ):
                        keep = x
                        break
                out = node.outputs[0]
                if keep is None or out in graph.outputs:
                    continue
                out.replace_all_uses_with(keep)
                graph.remove(node, safe=True)
                removed += 1
        return SurgeryResult(model, removed > 0, stats={"removed": removed})
