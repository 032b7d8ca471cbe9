"""A user pass written with onnx-graphsurgeon: HardSwish(x) -> x * HardSigmoid(x, 1/6, 0.5).

This is the kind of module a user keeps in their own repository. ``gs_pass`` turns the function into
an onnx-surgery pass; ``@register`` also makes it usable by name (``hardswish-to-hardsigmoid``) in a
``passes.toml`` once the module is imported.
"""

from __future__ import annotations

import dataclasses

import onnx_graphsurgeon as gs

from surgery import Numerics, register
from surgery.interop.graphsurgeon import gs_pass
from surgery.options import option


@dataclasses.dataclass(frozen=True)
class Options:
    """Options of hardswish-to-hardsigmoid."""

    keep_names: bool = option(True, help="name the new nodes after the HardSwish they replace")


@register
@gs_pass(name="hardswish-to-hardsigmoid", numerics=Numerics.EXACT, options=Options)
def hardswish_to_hardsigmoid(graph: gs.Graph, options: Options) -> bool:
    """Rewrite HardSwish as x * HardSigmoid(x) (alpha 1/6, beta 0.5), for compilers without HardSwish.

    Works on the main graph only (a gs function sees subgraphs through node attributes).
    """
    count = 0
    for node in [n for n in graph.nodes if n.op == "HardSwish"]:
        x, y = node.inputs[0], node.outputs[0]
        stem = node.name if options.keep_names and node.name else f"hardswish_{count}"
        gate = gs.Variable(f"{stem}/gate_output", dtype=x.dtype, shape=x.shape)
        graph.nodes.append(
            gs.Node(
                "HardSigmoid",
                name=f"{stem}/HardSigmoid",
                attrs={"alpha": 1.0 / 6.0, "beta": 0.5},
                inputs=[x],
                outputs=[gate],
            )
        )
        node.outputs.clear()  # detach y from the HardSwish so the Mul can produce it
        graph.nodes.append(gs.Node("Mul", name=f"{stem}/Mul", inputs=[x, gate], outputs=[y]))
        count += 1
    if count:
        graph.cleanup().toposort()
    return count > 0
