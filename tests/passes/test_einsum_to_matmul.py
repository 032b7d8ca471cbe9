"""einsum-to-matmul: two-operand equations as MatMul, checked against numpy.einsum."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.passes.einsum_to_matmul import EinsumToMatMul
from surgery.testing import make_model, op_counts, ort_run, vi

SIZES = {"b": 2, "h": 3, "i": 4, "j": 5, "d": 6, "k": 2}
RNG = np.random.default_rng(0)


def _model(eq: str, sa, sb, out_shape, dynamic: bool = False) -> onnx.ModelProto:
    def shape(s, prefix):
        return [f"{prefix}{i}" for i in range(len(s))] if dynamic else s

    return make_model(
        [h.make_node("Einsum", ["a", "b"], ["y"], equation=eq, name="/attn/Einsum")],
        [vi("a", T.FLOAT, shape(sa, "a")), vi("b", T.FLOAT, shape(sb, "b"))],
        [vi("y", T.FLOAT, shape(list(out_shape), "y"))],
        opset=17,
    )


@pytest.mark.parametrize(
    "eq, expected_ops",
    [
        ("bhid,bhjd->bhij", {"Transpose": 1, "MatMul": 1}),  # attention scores
        ("bhij,bhjd->bhid", {"MatMul": 1}),  # attention output
        ("ij,kj->ik", {"Transpose": 1, "MatMul": 1}),
        ("bij,bjd->bdi", {"MatMul": 1, "Transpose": 1}),
        ("bhi,hij->bhj", {"Transpose": 2, "MatMul": 1}),  # broadcast batch
        ("bid,d->bi", None),
        ("i,j->ij", None),  # outer product
        ("ij,ij->i", None),  # row-wise dot
        ("ijk,jkd->id", None),  # two contracted letters merged
        ("ik,jd->ijk", None),  # a letter summed out
        ("ij,jk", None),  # implicit output
    ],
)
def test_equations(eq, expected_ops):
    lhs = eq.split("->")[0]
    a, b = lhs.split(",")
    sa, sb = [SIZES.get(c, 3) for c in a], [SIZES.get(c, 3) for c in b]
    A, B = RNG.standard_normal(sa).astype(np.float32), RNG.standard_normal(sb).astype(np.float32)
    ref = np.einsum(eq, A, B)
    model = ir.from_proto(_model(eq, sa, sb, ref.shape))
    assert EinsumToMatMul()(model).stats["rewritten"] == 1
    counts = op_counts(model)
    assert "Einsum" not in counts and counts["MatMul"] == 1
    if expected_ops is not None:
        assert counts == expected_ops
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_allclose(ort_run(model, {"a": A, "b": B})["y"], ref, rtol=1e-5, atol=1e-5)
    assert not EinsumToMatMul()(model).modified


def test_dynamic_batch_dims_are_fine_when_no_group_merges():
    A = RNG.standard_normal((2, 3, 4, 6)).astype(np.float32)
    B = RNG.standard_normal((2, 3, 5, 6)).astype(np.float32)
    model = ir.from_proto(_model("bhid,bhjd->bhij", A.shape, B.shape, (2, 3, 4, 5), dynamic=True))
    assert EinsumToMatMul()(model).modified
    np.testing.assert_allclose(
        ort_run(model, {"a": A, "b": B})["y"],
        np.einsum("bhid,bhjd->bhij", A, B),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "eq, sa, sb, out, reason",
    [
        ("ii,ij->j", [3, 3], [3, 4], [4], "repeated letter in 'ii'"),
        ("...i,...i->...", [2, 3], [2, 3], [2], "ellipsis is not supported"),
    ],
)
def test_unsupported_equations_are_left_with_a_reason(eq, sa, sb, out, reason):
    model = ir.from_proto(_model(eq, sa, sb, out))
    result = EinsumToMatMul()(model)
    assert not result.modified and reason in result.notes[0]


def test_merged_groups_with_dynamic_sizes_are_left():
    model = ir.from_proto(_model("ijk,jkd->id", [4, 5, 6], [5, 6, 2], [4, 2], dynamic=True))
    result = EinsumToMatMul()(model)
    assert not result.modified and "dynamic" in result.notes[0]


@pytest.mark.torch
def test_torch_einsum_attention():
    torch = pytest.importorskip("torch")

    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            w = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k), dim=-1)
            return torch.einsum("bhij,bhjd->bhid", w, v)

    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    f = io.BytesIO()
    torch.onnx.export(
        Attn(),
        (q, k, v),
        f,
        dynamo=False,
        opset_version=17,
        input_names=["q", "k", "v"],
        output_names=["y"],
    )
    model = ir.from_proto(onnx.load_from_string(f.getvalue()))
    assert EinsumToMatMul()(model).stats["rewritten"] == 2
    assert "Einsum" not in op_counts(model)
    feeds = {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()}
    np.testing.assert_allclose(
        ort_run(model, feeds)["y"], Attn()(q, k, v).numpy(), rtol=1e-5, atol=1e-5
    )
