"""The signature gate lets a dynamic output dim become static only where the original proves it constant."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import GateError
from surgery.pass_base import SurgeryPass, SurgeryResult
from surgery.testing import make_model, vi


def _projection() -> onnx.ModelProto:
    """y = x @ W: the export declares y as [batch, ?] although its last dim is always 4."""
    return make_model(
        [h.make_node("MatMul", ["x", "W"], ["y"], name="proj")],
        [vi("x", T.FLOAT, ["batch", 8])],
        [vi("y", T.FLOAT, ["batch", None])],
        {"W": np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)},
    )


class AnnotateLastDim(SurgeryPass):
    """A pass that learns y's last dim (as a decomposition learns an STFT's bins): [batch, ?] -> [batch, 4]."""

    name = "user-annotate-last-dim"

    def call(self, model):
        y = model.graph.outputs[0]
        y.shape = surgery_shape(y.shape[0], 4)
        return SurgeryResult(model, True)


class AnnotateBatch(SurgeryPass):
    """A pass that bakes the guessed batch into y's annotation: [batch, ?] -> [2, ?]."""

    name = "user-annotate-batch"

    def call(self, model):
        y = model.graph.outputs[0]
        y.shape = surgery_shape(2, y.shape[1])
        return SurgeryResult(model, True)


def surgery_shape(*dims):
    import onnx_ir as ir

    return ir.Shape(list(dims))


def test_a_dim_the_original_computes_constant_on_every_sample_may_become_static():
    import onnx_ir as ir

    model, report = surgery.apply(ir.from_proto(_projection()), [AnnotateLastDim()])
    assert [str(d) for d in model.graph.outputs[0].shape] == ["batch", "4"]
    assert report.step("user-annotate-last-dim").signature == "ok (1 refined)"
    assert any(s["name"] == "second size" for s in report.extra["samples"])


def test_a_dim_that_varies_with_the_second_size_may_not():
    with pytest.raises(GateError) as info:
        surgery.apply(_projection(), [AnnotateBatch()])
    assert info.value.gate == "signature" and "output 'y'" in str(info.value)


def test_without_a_second_size_the_samples_must_be_at_the_shapes_the_pipeline_fixes():
    """A later fix-shapes feeds the samples at the deployed shape (no second size): a dim the
    original computes there may become static; a batch baked in at another size may not."""
    import onnx_ir as ir

    from surgery import registry

    fix = registry.get("fix-shapes")
    _, report = surgery.apply(
        ir.from_proto(_projection()), [AnnotateLastDim(), fix(shapes={"x": [1, 8]})]
    )
    assert not any(s["name"] == "second size" for s in report.extra["samples"])
    assert report.step("user-annotate-last-dim").signature == "ok (1 refined)"
    # a size baked in for another batch than the one the pipeline fixes cannot pass either
    with pytest.raises(GateError):
        surgery.apply(ir.from_proto(_projection()), [BakeBatch2(), fix(shapes={"x": [1, 8]})])


class BakeBatch2(SurgeryPass):
    """Reshape(y, [2, 4]) before the output: right only for a batch of 2."""

    name = "user-bake-batch-2"

    def call(self, model):
        import onnx_ir as ir

        g = model.graph
        y = g.outputs[0]
        shape = ir.Value(
            name="baked", const_value=ir.tensor(np.array([2, 4], np.int64), name="baked")
        )
        g.register_initializer(shape)
        reshape = ir.Node("", "Reshape", [y, shape], name="bake")
        g.append(reshape)
        out = reshape.outputs[0]
        out.dtype, out.shape = y.dtype, ir.Shape([2, 4])
        g.outputs[0] = out
        name = y.name
        y.name, out.name = "y_before", name
        return SurgeryResult(model, True)
