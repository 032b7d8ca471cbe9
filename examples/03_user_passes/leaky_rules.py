"""Rules for the ``rewrite`` pass: Relu -> LeakyRelu, in a few lines (surgery's rule API).

A rule is a pattern (``Op``, ``Var``, ``Const``) and a ``build`` that returns the replacement's
outputs. The engine applies it in every graph (If/Loop bodies and functions too), names the new node
after the one it replaces, and the runner gates the result like any pass's.
"""

from surgery.rules import Op, Rule, Var


class ReluToLeaky(Rule):
    """Relu(x) -> LeakyRelu(x, alpha=0.01): some NPUs quantize LeakyRelu better."""

    name = "relu-to-leaky"
    pattern = Op("Relu", Var("x"))

    def build(self, b, m):
        return [b.op("LeakyRelu", m["x"], alpha=0.01)]


RULES = [ReluToLeaky]
