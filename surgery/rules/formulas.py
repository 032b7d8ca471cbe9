"""Replacement formulas shared by several passes (a pass never imports another pass).

Each takes a :class:`~surgery.rules.builder.Builder` and the input value and returns the value of
the formula, built from ops every target opset has, in the input's element type.
"""

from __future__ import annotations

import math

import onnx_ir as ir

from surgery.rules.builder import Builder

__all__ = ["gelu_exact", "gelu_tanh"]


def gelu_exact(b: Builder, x: ir.Value) -> ir.Value:
    """``x * (erf(x / sqrt(2)) + 1) * 0.5`` in ``x``'s element type."""
    scaled = b.op("Div", x, b.scalar(math.sqrt(2.0), x, "sqrt2"))
    erf = b.op("Erf", scaled)
    plus = b.op("Add", erf, b.scalar(1.0, x, "one"))
    return b.op("Mul", b.op("Mul", x, plus), b.scalar(0.5, x, "half"))


def gelu_tanh(b: Builder, x: ir.Value) -> ir.Value:
    """``x * (tanh(sqrt(2/pi) * (x + 0.044715 x^3)) + 1) * 0.5`` in ``x``'s element type."""
    cube = b.op("Mul", b.op("Mul", x, x), x)
    inner = b.op("Add", x, b.op("Mul", cube, b.scalar(0.044715, x, "coef")))
    t = b.op("Tanh", b.op("Mul", inner, b.scalar(math.sqrt(2.0 / math.pi), x, "sqrt_2_over_pi")))
    plus = b.op("Add", t, b.scalar(1.0, x, "one"))
    return b.op("Mul", b.op("Mul", x, plus), b.scalar(0.5, x, "half"))
