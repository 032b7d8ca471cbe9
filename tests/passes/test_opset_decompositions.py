"""The decompositions of ops newer than ATC's opset 18 (``surgery.passes.opset_decompositions``),
run through convert-opset: parity with ONNX Runtime's own kernels, names, idempotency, refusals
(those with the adapters' in test_convert_opset), torch 2.13's real Attention/RMSNorm export."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.passes import opset_decompositions
from surgery.passes.convert_opset import DECOMPOSITIONS, ConvertOpset
from surgery.rules.opset_steps import DECOMPOSITIONS as STEP_TABLE
from surgery.testing import make_model, op_counts, ort_run, vi

RNG = np.random.default_rng(0)
X3 = RNG.standard_normal((2, 4, 6)).astype(np.float32)
F3 = {"x": X3}


def _x(shape):
    return [vi("x", T.FLOAT, shape)]


def _attn(inputs, outputs=("y",), name="attn", **attrs):
    return h.make_node("Attention", list(inputs), list(outputs), name=name, **attrs)


def test_one_table_filled_by_the_decompositions_module():
    """convert-opset, opset_steps and opset_decompositions share one table, filled on import."""
    assert DECOMPOSITIONS is STEP_TABLE is opset_decompositions.DECOMPOSITIONS
    assert {
        "Gelu",
        "LayerNormalization",
        "GroupNormalization",
        "Attention",
        "RMSNormalization",
        "RotaryEmbedding",
        "AffineGrid",
        "DeformConv",
    } <= set(DECOMPOSITIONS)
    for op in DECOMPOSITIONS:  # every key is a real ai.onnx op (a typo would never be looked up)
        assert onnx.defs.has(op), op


Q = RNG.standard_normal((2, 4, 3, 8)).astype(np.float32)
K5 = RNG.standard_normal((2, 4, 5, 8)).astype(np.float32)
V5 = RNG.standard_normal((2, 4, 5, 6)).astype(np.float32)
KV2 = RNG.standard_normal((2, 2, 5, 8)).astype(np.float32)  # 2 key/value heads for 4 query heads
BOOL_MASK = RNG.uniform(size=(3, 5)) > 0.4
BOOL_MASK[:, 0] = True
BOOL_MASK[1] = False  # a row with nothing to attend: the op gives zeros there
X_ROT = RNG.standard_normal((2, 3, 4, 8)).astype(np.float32)
COS = RNG.standard_normal((7, 4)).astype(np.float32)
SIN = RNG.standard_normal((7, 4)).astype(np.float32)
POS = np.array([[0, 1, 2, 3], [3, 4, 5, 6]], np.int64)
THETA2 = RNG.standard_normal((2, 2, 3)).astype(np.float32)
THETA3 = RNG.standard_normal((2, 3, 4)).astype(np.float32)


# name: (nodes, inputs, outputs, initializers, opset, targets, feeds, ops the result must not hold)
NEW_OPS = {
    "affinegrid_2d": (
        [h.make_node("AffineGrid", ["t", "sz"], ["y"], name="ag")],
        [vi("t", T.FLOAT, [2, 2, 3])],
        [vi("y", T.FLOAT, [2, 4, 5, 2])],
        {"sz": np.array([2, 3, 4, 5], np.int64)},
        20,
        [18, 13],
        {"t": THETA2},
    ),
    "affinegrid_2d_align_single_row": (  # a 1-long axis: ORT puts its point at +1 with align_corners=1
        [h.make_node("AffineGrid", ["t", "sz"], ["y"], align_corners=1, name="ag")],
        [vi("t", T.FLOAT, [2, 2, 3])],
        [vi("y", T.FLOAT, [2, 1, 5, 2])],
        {"sz": np.array([2, 3, 1, 5], np.int64)},
        20,
        [18],
        {"t": THETA2},
    ),
    "affinegrid_3d_align": (
        [h.make_node("AffineGrid", ["t", "sz"], ["y"], align_corners=1, name="ag")],
        [vi("t", T.FLOAT, [2, 3, 4])],
        [vi("y", T.FLOAT, [2, 2, 3, 4, 3])],
        {"sz": np.array([2, 1, 2, 3, 4], np.int64)},
        20,
        [18],
        {"t": THETA3},
    ),
    "affinegrid_runtime_size_2d": (
        [h.make_node("AffineGrid", ["t", "sz"], ["y"], name="ag")],
        [vi("t", T.FLOAT, [2, 2, 3]), vi("sz", T.INT64, [4])],
        [vi("y", T.FLOAT, [2, "h", "w", 2])],
        {},
        20,
        [18, 13],
        {"t": THETA2, "sz": np.array([2, 3, 4, 1], np.int64)},
    ),
    "affinegrid_runtime_size_3d_align": (
        [h.make_node("AffineGrid", ["t", "sz"], ["y"], align_corners=1, name="ag")],
        [vi("t", T.FLOAT, [2, 3, 4]), vi("sz", T.INT64, [5])],
        [vi("y", T.FLOAT, [2, "d", "h", "w", 3])],
        {},
        20,
        [18],
        {"t": THETA3, "sz": np.array([2, 1, 1, 3, 4], np.int64)},
    ),
    "clip_constant_bounds": (
        [
            h.make_node("Clip", ["x", "lo", "hi"], ["a"], name="clip"),
            h.make_node("Clip", ["a", "", "hi2"], ["y"], name="clip_max"),
        ],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 6])],
        {
            "lo": np.array(-0.5, np.float32),
            "hi": np.array(0.75, np.float32),
            "hi2": np.array(0.25, np.float32),
        },
        13,
        [12, 11, 10, 7],
        F3,
    ),
    "rmsnorm": (
        [
            h.make_node("RMSNormalization", ["x", "s"], ["a"], epsilon=1e-6, name="rms"),
            h.make_node("RMSNormalization", ["a", "s2"], ["y"], axis=-2, name="rms2"),
        ],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 6])],
        {
            "s": RNG.standard_normal(6).astype(np.float32),
            "s2": RNG.standard_normal((4, 6)).astype(np.float32),
        },
        23,
        [18, 13],
        F3,
    ),
    "rotary_positions": (
        [h.make_node("RotaryEmbedding", ["x", "c", "s", "p"], ["y"], name="rope")],
        [vi("x", T.FLOAT, [2, 3, 4, 8]), vi("p", T.INT64, [2, 4])],
        [vi("y", T.FLOAT, [2, 3, 4, 8])],
        {"c": COS, "s": SIN},
        23,
        [18, 13],
        {"x": X_ROT, "p": POS},
    ),
    "rotary_interleaved_partial": (
        [
            h.make_node(
                "RotaryEmbedding",
                ["x", "c", "s", "p"],
                ["y"],
                interleaved=1,
                rotary_embedding_dim=4,
                name="rope",
            )
        ],
        [vi("x", T.FLOAT, [2, 3, 4, 8]), vi("p", T.INT64, [2, 4])],
        [vi("y", T.FLOAT, [2, 3, 4, 8])],
        {"c": COS[:, :2], "s": SIN[:, :2]},
        23,
        [18],
        {"x": X_ROT, "p": POS},
    ),
    "rotary_3d_batched_caches": (  # (B, S, N*H) input, caches already (B, S, half), unknown half size
        [h.make_node("RotaryEmbedding", ["x", "c", "s"], ["y"], num_heads=3, name="rope")],
        [
            vi("x", T.FLOAT, [2, 4, 24]),
            vi("c", T.FLOAT, [2, 4, "half"]),
            vi("s", T.FLOAT, [2, 4, "half"]),
        ],
        [vi("y", T.FLOAT, [2, 4, 24])],
        {},
        23,
        [18],
        {"x": X_ROT.transpose(0, 2, 1, 3).reshape(2, 4, 24), "c": COS[POS], "s": SIN[POS]},
    ),
    "attention_plain": (
        [_attn(["q", "k", "v"])],
        [
            vi("q", T.FLOAT, [2, 4, 3, 8]),
            vi("k", T.FLOAT, [2, 4, 5, 8]),
            vi("v", T.FLOAT, [2, 4, 5, 6]),
        ],
        [vi("y", T.FLOAT, [2, 4, 3, 6])],
        {},
        23,
        [18, 13],
        {"q": Q, "k": K5, "v": V5},
    ),
    "attention_bool_mask": (
        [_attn(["q", "k", "v", "m"])],
        [
            vi("q", T.FLOAT, [2, 4, 3, 8]),
            vi("k", T.FLOAT, [2, 4, 5, 8]),
            vi("v", T.FLOAT, [2, 4, 5, 6]),
            vi("m", T.BOOL, [3, 5]),
        ],
        [vi("y", T.FLOAT, [2, 4, 3, 6])],
        {},
        23,
        [18, 13],
        {"q": Q, "k": K5, "v": V5, "m": BOOL_MASK},
    ),
    "attention_float_mask_scale": (
        [_attn(["q", "k", "v", "m"], scale=0.3)],
        [
            vi("q", T.FLOAT, [2, 4, 3, 8]),
            vi("k", T.FLOAT, [2, 4, 5, 8]),
            vi("v", T.FLOAT, [2, 4, 5, 6]),
            vi("m", T.FLOAT, [2, 1, 3, 5]),
        ],
        [vi("y", T.FLOAT, [2, 4, 3, 6])],
        {},
        23,
        [18],
        {"q": Q, "k": K5, "v": V5, "m": RNG.standard_normal((2, 1, 3, 5)).astype(np.float32)},
    ),
    "attention_causal_gqa": (
        [_attn(["q", "k", "v"], is_causal=1)],
        [
            vi("q", T.FLOAT, [2, 4, 3, 8]),
            vi("k", T.FLOAT, [2, 2, 5, 8]),
            vi("v", T.FLOAT, [2, 2, 5, 8]),
        ],
        [vi("y", T.FLOAT, [2, 4, 3, 8])],
        {},
        23,
        [18, 13],
        {"q": Q, "k": KV2, "v": KV2[:, :, :, ::-1].copy()},
    ),
    "attention_dynamic_causal_gqa": (  # head counts, lengths and head size known only at run time
        [_attn(["q", "k", "v"], is_causal=1)],
        [
            vi("q", T.FLOAT, ["b", "hq", "l", "d"]),
            vi("k", T.FLOAT, ["b", "hk", "s", "d"]),
            vi("v", T.FLOAT, ["b", "hk", "s", "d"]),
        ],
        [vi("y", T.FLOAT, ["b", "hq", "l", "d"])],
        {},
        23,
        [18],
        {"q": Q, "k": KV2, "v": KV2[:, :, :, ::-1].copy()},
    ),
    "attention_3d_past_causal": (  # (B, S, H*D) inputs, a KV cache, present outputs used
        [
            _attn(
                ["q", "k", "v", "", "pk", "pv"],
                ["y", "present_k", "present_v"],
                is_causal=1,
                q_num_heads=4,
                kv_num_heads=2,
            )
        ],
        [
            vi("q", T.FLOAT, [2, 3, 32]),
            vi("k", T.FLOAT, [2, 3, 16]),
            vi("v", T.FLOAT, [2, 3, 12]),
            vi("pk", T.FLOAT, [2, 2, 2, 8]),
            vi("pv", T.FLOAT, [2, 2, 2, 6]),
        ],
        [
            vi("y", T.FLOAT, [2, 3, 24]),
            vi("present_k", T.FLOAT, [2, 2, 5, 8]),
            vi("present_v", T.FLOAT, [2, 2, 5, 6]),
        ],
        {},
        23,
        [18],
        {
            "q": Q.transpose(0, 2, 1, 3).reshape(2, 3, 32),
            "k": KV2[:, :, :3].transpose(0, 2, 1, 3).reshape(2, 3, 16),
            "v": V5[:, :2, :3].transpose(0, 2, 1, 3).reshape(2, 3, 12),
            "pk": KV2[:, :, 3:],
            "pv": V5[:, 2:, 3:],
        },
    ),
    "attention_softcap_probs": (
        [_attn(["q", "k", "v", "m"], ["y", "", "", "probs"], softcap=2.0, qk_matmul_output_mode=3)],
        [
            vi("q", T.FLOAT, [2, 4, 3, 8]),
            vi("k", T.FLOAT, [2, 4, 5, 8]),
            vi("v", T.FLOAT, [2, 4, 5, 6]),
            vi("m", T.BOOL, [3, 5]),
        ],
        [vi("y", T.FLOAT, [2, 4, 3, 6]), vi("probs", T.FLOAT, [2, 4, 3, 5])],
        {},
        23,
        [18],
        {"q": Q, "k": K5, "v": V5, "m": BOOL_MASK},
    ),
    "attention_qk_scores": (
        [_attn(["q", "k", "v"], ["y", "", "", "qk"], scale=0.5)],
        [
            vi("q", T.FLOAT, [2, 4, 3, 8]),
            vi("k", T.FLOAT, [2, 4, 5, 8]),
            vi("v", T.FLOAT, [2, 4, 5, 6]),
        ],
        [vi("y", T.FLOAT, [2, 4, 3, 6]), vi("qk", T.FLOAT, [2, 4, 3, 5])],
        {},
        23,
        [18],
        {"q": Q, "k": K5, "v": V5},
    ),
    "deformconv_groups_mask_bias": (  # offsets up to a few pixels: taps fall across the border too
        [
            h.make_node(
                "DeformConv",
                ["x", "w", "off", "b", "m"],
                ["y"],
                kernel_shape=[2, 3],
                strides=[2, 1],
                dilations=[1, 2],
                pads=[0, 2, 1, 0],
                group=2,
                offset_group=2,
                name="dcn",
            )
        ],
        [
            vi("x", T.FLOAT, [2, 4, 5, 6]),
            vi("off", T.FLOAT, [2, 24, 3, 4]),
            vi("m", T.FLOAT, [2, 12, 3, 4]),
        ],
        [vi("y", T.FLOAT, [2, 6, 3, 4])],
        {
            "w": RNG.standard_normal((6, 2, 2, 3)).astype(np.float32),
            "b": RNG.standard_normal(6).astype(np.float32),
        },
        19,
        [18, 16],
        {
            "x": RNG.standard_normal((2, 4, 5, 6)).astype(np.float32),
            "off": 2 * RNG.standard_normal((2, 24, 3, 4)).astype(np.float32),
            "m": RNG.uniform(size=(2, 12, 3, 4)).astype(np.float32),
        },
    ),
    "deformconv_plain_runtime_weight": (
        [h.make_node("DeformConv", ["x", "w", "off"], ["y"], pads=[1, 1, 1, 1], name="dcn")],
        [
            vi("x", T.FLOAT, [1, 3, 4, 4]),
            vi("w", T.FLOAT, [2, 3, 3, 3]),
            vi("off", T.FLOAT, [1, 18, 4, 4]),
        ],
        [vi("y", T.FLOAT, [1, 2, 4, 4])],
        {},
        19,
        [18],
        {
            "x": RNG.standard_normal((1, 3, 4, 4)).astype(np.float32),
            "w": RNG.standard_normal((2, 3, 3, 3)).astype(np.float32),
            "off": RNG.standard_normal((1, 18, 4, 4)).astype(np.float32),
        },
    ),
}

NEW_OP_TYPES = {"AffineGrid", "RMSNormalization", "RotaryEmbedding", "Attention", "DeformConv"}


@pytest.mark.parametrize(
    "case, target", [(case, t) for case, spec in NEW_OPS.items() for t in spec[5]]
)
def test_new_ops_are_decomposed_with_parity(case, target):
    nodes, inputs, outputs, inits, opset, _, feeds = NEW_OPS[case]
    proto = make_model(nodes, inputs, outputs, inits, opset=opset)
    expected = ort_run(proto, feeds)
    model = ir.from_proto(proto)
    result = ConvertOpset(target=target)(model)
    assert result.modified and model.opset_imports[""] == target
    counts = op_counts(model)
    assert not NEW_OP_TYPES & set(counts), counts
    originals = {n.name for n in nodes}
    # every node the rewrite made is named after the node it replaced; kept nodes keep their name
    assert all(n.name in originals or n.name.split("/")[0] in originals for n in model.graph), [
        n.name for n in model.graph
    ]
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    got = ort_run(model, feeds)
    for key in expected:
        assert got[key].shape == expected[key].shape, key
        # DeformConv sums C*K products in another order than ORT's kernel: a little more slack
        atol = 1e-5 if case.startswith("deformconv") else 2e-6
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=atol, err_msg=key)
    assert not ConvertOpset(target=target)(model).modified
    assert model.ir_version == proto.ir_version


# torch.onnx.export(dynamo=True, opset_version=23) turns F.scaled_dot_product_attention into one
# Attention-23 node (4-D Q/K/V, the mask as given, is_causal, scale, GQA through K/V's head count) and
# nn.RMSNorm into RMSNormalization-23.


@pytest.fixture(scope="module")
def torch_attention_export():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.RMSNorm(8, eps=1e-6)

        def forward(self, q, k, v, mask):
            q = self.norm(q)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.4, enable_gqa=True)
            return F.scaled_dot_product_attention(a, q, q, attn_mask=mask) + a

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.norm.weight.copy_(torch.linspace(0.5, 1.5, 8))
    mask = np.ones((3, 3), bool)
    mask[0, 1:] = False
    feeds = {"q": Q, "k": KV2[:, :, :3].copy(), "v": KV2[:, :, 2:].copy(), "mask": mask}
    args = tuple(torch.from_numpy(feeds[k]) for k in ("q", "k", "v", "mask"))
    program = torch.onnx.export(
        net,
        args,
        dynamo=True,
        opset_version=23,
        input_names=list(feeds),
        output_names=["y"],
        verbose=False,
    )
    with torch.no_grad():
        reference = net(*args).numpy()
    return program.model_proto, feeds, reference


@pytest.mark.torch
def test_torch_dynamo_opset23_attention_and_rmsnorm(torch_attention_export):
    from surgery import apply

    proto, feeds, reference = torch_attention_export
    assert op_counts(proto)["Attention"] == 2 and op_counts(proto)["RMSNormalization"] == 1
    model, report = apply(ir.from_proto(proto), [ConvertOpset()], inputs=feeds)
    assert dict(model.opset_imports) == {"": 18}
    counts = op_counts(model)
    assert "Attention" not in counts and "RMSNormalization" not in counts and counts["Softmax"] == 2
    step = report.steps[-1]
    assert (
        step.modified
        and step.stats["decomposed"] == 3
        and step.parity
        and all(d.ok for d in step.parity)
    )
    np.testing.assert_allclose(ort_run(model, feeds)["y"], reference, rtol=1e-5, atol=1e-5)


def test_new_ops_inside_a_function_are_decomposed_at_its_opset():
    # no shapes or types inside a function: the decompositions must do without them
    fn = h.make_function(
        "local",
        "Block",
        ["q", "k", "v", "s", "c", "sn"],
        ["y"],
        [
            h.make_node("RMSNormalization", ["q", "s"], ["qn"], name="rms"),
            h.make_node("RotaryEmbedding", ["qn", "c", "sn"], ["qr"], name="rope"),
            _attn(["qr", "k", "v"], is_causal=1, name="attn"),
        ],
        opset_imports=[h.make_opsetid("", 23)],
    )
    caches = [vi("c", T.FLOAT, [2, 3, 4]), vi("sn", T.FLOAT, [2, 3, 4])]
    proto = make_model(
        [
            h.make_node(
                "Block", ["q", "k", "v", "s", "c", "sn"], ["y"], domain="local", name="block"
            )
        ],
        [
            vi("q", T.FLOAT, [2, 4, 3, 8]),
            vi("k", T.FLOAT, [2, 4, 5, 8]),
            vi("v", T.FLOAT, [2, 4, 5, 6]),
            vi("s", T.FLOAT, [8]),
            *caches,
        ],
        [vi("y", T.FLOAT, [2, 4, 3, 6])],
        functions=[fn],
        extra_opsets={"local": 1},
        opset=23,
    )
    feeds = {
        "q": Q,
        "k": K5,
        "v": V5,
        "s": RNG.standard_normal(8).astype(np.float32),
        "c": COS[POS][:, :3],
        "sn": SIN[POS][:, :3],
    }
    expected = ort_run(proto, feeds)["y"]
    model = ir.from_proto(proto)
    result = ConvertOpset(target=18)(model)
    function = model.functions[("local", "Block", "")]
    assert function.opset_imports[""] == 18 and result.stats["decomposed"] == 3
    assert not NEW_OP_TYPES & {n.op_type for n in function}
    assert all(n.name.split("/")[0] in {"rms", "rope", "attn"} for n in function)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_allclose(ort_run(model, feeds)["y"], expected, rtol=1e-5, atol=2e-6)


def test_float16_attention_softmax_precision_and_rmsnorm_stash():
    # softmax_precision=FLOAT and stash_type=1 compute in float32: the decomposition casts up and back
    feeds = {"q": Q.astype(np.float16), "k": K5.astype(np.float16), "v": V5.astype(np.float16)}
    nodes = [
        _attn(["q", "k", "v"], ["a"], softmax_precision=T.FLOAT),
        h.make_node("RMSNormalization", ["a", "s"], ["y"], name="rms"),
    ]
    proto = make_model(
        nodes,
        [vi(n, T.FLOAT16, feeds[n].shape) for n in feeds],
        [vi("y", T.FLOAT16, [2, 4, 3, 6])],
        {"s": RNG.standard_normal(6).astype(np.float16)},
        opset=23,
    )
    expected = ort_run(proto, feeds)["y"]
    model = ir.from_proto(proto)
    ConvertOpset()(model)
    counts = op_counts(model)
    assert counts["Cast"] == 4 and "Attention" not in counts and "RMSNormalization" not in counts
    got = ort_run(model, feeds)["y"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(
        got.astype(np.float32), expected.astype(np.float32), rtol=1e-3, atol=4e-3
    )  # one fp16 ulp at 4..8
