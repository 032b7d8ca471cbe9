"""Fixtures for the core tests: small models and test-only passes."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery import registry
from surgery.options import option
from surgery.pass_base import Numerics, SurgeryPass, SurgeryResult, Tolerance
from surgery.testing import make_model, vi


def mlp_model(batch: str | int = "batch") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return make_model(
        [
            h.make_node("MatMul", ["x", "W1"], ["h1"], name="fc1"),
            h.make_node("Relu", ["h1"], ["a1"], name="relu1"),
            h.make_node("Identity", ["a1"], ["a1_id"], name="ident"),
            h.make_node("MatMul", ["a1_id", "W2"], ["y"], name="fc2"),
        ],
        [vi("x", T.FLOAT, [batch, 16])],
        [vi("y", T.FLOAT, [batch, 4])],
        {
            "W1": rng.standard_normal((16, 32)).astype(np.float32),
            "W2": rng.standard_normal((32, 4)).astype(np.float32),
            "unused": np.ones(3, np.float32),
        },
    )


@pytest.fixture
def mlp() -> onnx.ModelProto:
    return mlp_model()


@dataclasses.dataclass(frozen=True)
class PerturbOptions:
    weight: str = option("W2", help="initializer to perturb")
    delta: float = option(0.1, help="amount added to every element")


class PerturbWeight(SurgeryPass):
    """Test-only: add a constant to a weight (a broken "exact" pass the parity gate must catch)."""

    name = "test-perturb-weight"
    Options = PerturbOptions

    def call(self, model: ir.Model) -> SurgeryResult:
        value = model.graph.initializers[self.options.weight]
        value.const_value = ir.tensor(
            value.const_value.numpy() + self.options.delta, name=value.name
        )
        return SurgeryResult(model, True)


class ScaleOutput(SurgeryPass):
    """Test-only: multiply W2 by (1 + eps), an approximation."""

    name = "test-scale-output"
    numerics = Numerics.APPROX
    default_tolerance = Tolerance(rtol=1e-2, atol=1e-3)

    def call(self, model: ir.Model) -> SurgeryResult:
        value = model.graph.initializers["W2"]
        value.const_value = ir.tensor(
            value.const_value.numpy() * np.float32(1.001), name=value.name
        )
        return SurgeryResult(model, True)


class ChangeSemantics(SurgeryPass):
    """Test-only: replace Relu by Sigmoid, a semantic change by design."""

    name = "test-relu-to-sigmoid"
    numerics = Numerics.CHANGES

    def call(self, model: ir.Model) -> SurgeryResult:
        changed = False
        for node in model.graph:
            if node.op_type == "Relu":
                node.op_type = "Sigmoid"
                changed = True
        return SurgeryResult(model, changed)


class BreakGraph(SurgeryPass):
    """Test-only: make a node consume a tensor nobody produces (the checker must catch it)."""

    name = "test-break-graph"

    def call(self, model: ir.Model) -> SurgeryResult:
        node = next(n for n in model.graph if n.op_type == "Relu")
        node.op_type = "Gemm"  # Gemm needs two inputs: the checker rejects it
        return SurgeryResult(model, True)


@pytest.fixture
def test_passes():
    classes = [PerturbWeight, ScaleOutput, ChangeSemantics, BreakGraph]
    for cls in classes:
        registry.register(cls)
    yield {cls.name: cls for cls in classes}
    for cls in classes:
        registry.unregister(cls.name)
