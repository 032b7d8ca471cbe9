"""convert-opset: down-adapters checked by parity, refusals that name the op, upgrades via onnx."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.errors import PassError, PipelineError
from surgery.passes.convert_opset import ConvertOpset
from surgery.testing import make_model, op_counts, ort_run, vi

RNG = np.random.default_rng(0)
X3 = RNG.standard_normal((2, 4, 6)).astype(np.float32)
X7 = RNG.standard_normal((2, 4, 7)).astype(np.float32)
X4 = RNG.standard_normal((2, 6, 3, 5)).astype(np.float32)
GRID = RNG.uniform(-1, 1, (2, 2, 3, 2)).astype(np.float32)
F3 = {"x": X3}


def _x(shape):
    return [vi("x", T.FLOAT, shape)]


def _attn(inputs, outputs=("y",), name="attn", **attrs):
    return h.make_node("Attention", list(inputs), list(outputs), name=name, **attrs)


CASES = {
    "elementwise": (
        [
            h.make_node("Mul", ["x", "x"], ["a"], name="mul"),
            h.make_node("Relu", ["a"], ["b"], name="relu"),
            h.make_node("Add", ["b", "x"], ["y"], name="add"),
        ],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 6])],
        {},
        20,
        [18, 13, 11],
        F3,
    ),
    "reductions": (
        [
            h.make_node("ReduceMean", ["x", "ax"], ["y"], keepdims=1, name="mean"),
            h.make_node("ReduceMax", ["x", "ax"], ["z"], keepdims=0, name="max"),
        ],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 1, 6]), vi("z", T.FLOAT, [2, 6])],
        {"ax": np.array([1], np.int64)},
        18,
        [17, 13, 11],
        F3,
    ),
    "reducesum": (
        [h.make_node("ReduceSum", ["x", "ax"], ["y"], keepdims=1, name="sum")],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 1])],
        {"ax": np.array([-1], np.int64)},
        18,
        [13, 12, 11],
        F3,
    ),
    "split_even": (
        [h.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2, name="split")],
        _x([2, 4, 6]),
        [vi("a", T.FLOAT, [2, 2, 6]), vi("b", T.FLOAT, [2, 2, 6])],
        {},
        18,
        [13, 11],
        F3,
    ),
    "split_uneven": (
        [h.make_node("Split", ["x"], ["a", "b", "c"], axis=2, num_outputs=3, name="split")],
        _x([2, 4, 7]),
        [vi("a", T.FLOAT, [2, 4, 3]), vi("b", T.FLOAT, [2, 4, 3]), vi("c", T.FLOAT, [2, 4, 1])],
        {},
        18,
        [13, 11],
        {"x": X7},
    ),
    "squeeze": (
        [
            h.make_node("Unsqueeze", ["x", "ax"], ["a"], name="unsq"),
            h.make_node("Squeeze", ["a", "ax"], ["y"], name="sq"),
        ],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 6])],
        {"ax": np.array([0], np.int64)},
        13,
        [12, 11],
        F3,
    ),
    "pad_axes": (
        [h.make_node("Pad", ["x", "p", "cv", "ax"], ["y"], name="pad")],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 9])],
        {
            "p": np.array([1, 2], np.int64),
            "cv": np.array(0.5, np.float32),
            "ax": np.array([-1], np.int64),
        },
        18,
        [13, 11, 10],
        F3,
    ),
    "shape_start": (
        [
            h.make_node("Shape", ["x"], ["s"], start=1, name="shape"),
            h.make_node("Cast", ["s"], ["y"], to=T.FLOAT, name="cast"),
        ],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2])],
        {},
        15,
        [14, 13],
        F3,
    ),
    "softmax_last_axis": (
        [h.make_node("Softmax", ["x"], ["y"], axis=-1, name="softmax")],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 6])],
        {},
        13,
        [12, 11],
        F3,
    ),
    "reshape_allowzero": (
        [h.make_node("Reshape", ["x", "s"], ["y"], allowzero=1, name="reshape")],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [8, 6])],
        {"s": np.array([8, 6], np.int64)},
        20,
        [18, 13],
        F3,
    ),
    "gelu": (
        [
            h.make_node("Gelu", ["x"], ["a"], name="gelu"),
            h.make_node("Gelu", ["a"], ["y"], approximate="tanh", name="gelu_tanh"),
        ],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 6])],
        {},
        20,
        [18, 13],
        F3,
    ),
    "layernorm": (
        [
            h.make_node(
                "LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, epsilon=1e-5, name="ln"
            )
        ],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 6])],
        {
            "s": RNG.standard_normal(6).astype(np.float32),
            "b": RNG.standard_normal(6).astype(np.float32),
        },
        17,
        [16, 13],
        F3,
    ),
    "layernorm_stats": (
        [
            h.make_node(
                "LayerNormalization",
                ["x", "s", "b"],
                ["y", "m", "iv"],
                axis=1,
                epsilon=1e-3,
                name="ln",
            )
        ],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 6]), vi("m", T.FLOAT, [2, 1, 1]), vi("iv", T.FLOAT, [2, 1, 1])],
        {
            "s": RNG.standard_normal((4, 6)).astype(np.float32),
            "b": RNG.standard_normal((4, 6)).astype(np.float32),
        },
        18,
        [16],
        F3,
    ),
    "groupnorm21": (
        [
            h.make_node(
                "GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3, epsilon=1e-5, name="gn"
            )
        ],
        _x([2, 6, 3, 5]),
        [vi("y", T.FLOAT, [2, 6, 3, 5])],
        {
            "s": RNG.standard_normal(6).astype(np.float32),
            "b": RNG.standard_normal(6).astype(np.float32),
        },
        21,
        [18],
        {"x": X4},
    ),
    "averagepool": (
        [h.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], name="pool")],
        _x([2, 6, 3, 5]),
        [vi("y", T.FLOAT, [2, 6, 2, 4])],
        {},
        19,
        [18],
        {"x": X4},
    ),
    "gridsample": (
        [h.make_node("GridSample", ["x", "g"], ["y"], mode="linear", name="gs")],
        [vi("x", T.FLOAT, [2, 6, 3, 5]), vi("g", T.FLOAT, [2, 2, 3, 2])],
        [vi("y", T.FLOAT, [2, 6, 2, 3])],
        {},
        20,
        [18, 16],
        {"x": X4, "g": GRID},
    ),
    "resize": (
        [h.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear", name="resize")],
        _x([2, 6, 3, 5]),
        [vi("y", T.FLOAT, [2, 6, 6, 10])],
        {"sc": np.array([1, 1, 2, 2], np.float32)},
        19,
        [18, 13, 11],
        {"x": X4},
    ),
    "mish_hardswish": (
        [
            h.make_node("Mish", ["x"], ["a"], name="mish"),
            h.make_node("HardSwish", ["a"], ["y"], name="hswish"),
        ],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 4, 6])],
        {},
        18,
        [17, 13],
        F3,
    ),
}


@pytest.mark.parametrize(
    "case, target",
    [(case, t) for case, spec in CASES.items() for t in spec[5]],
)
def test_downgrade_keeps_outputs(case, target):
    nodes, inputs, outputs, inits, opset, _, feeds = CASES[case]
    proto = make_model(nodes, inputs, outputs, inits, opset=opset)
    expected = ort_run(proto, feeds)
    model = ir.from_proto(proto)
    result = ConvertOpset(target=target)(model)
    assert result.modified and result.stats["downgraded_from"] == opset
    assert model.opset_imports[""] == target
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    got = ort_run(model, feeds)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert not ConvertOpset(target=target)(model).modified
    assert model.ir_version == proto.ir_version


def test_decomposed_and_adapted_nodes_keep_derived_names():
    nodes, inputs, outputs, inits, opset, _, _ = CASES["gelu"]
    model = ir.from_proto(make_model(nodes, inputs, outputs, inits, opset=opset))
    ConvertOpset()(model)
    assert "Gelu" not in op_counts(model)
    assert all(n.name.startswith(("gelu/", "gelu_tanh/")) for n in model.graph)
    nodes, inputs, outputs, inits, opset, _, _ = CASES["reductions"]
    model = ir.from_proto(make_model(nodes, inputs, outputs, inits, opset=opset))
    ConvertOpset(target=13)(model)
    assert [n.name for n in model.graph] == ["mean", "max"]
    assert list(model.graph.node(0).attributes["axes"].as_ints()) == [1]
    assert "ax" not in model.graph.initializers  # the axes constant nothing reads any more is gone


@pytest.mark.parametrize(
    "nodes, inputs, outputs, inits, opset, target, message",
    [
        (
            [h.make_node("Softmax", ["x"], ["y"], axis=1, name="sm")],
            _x([2, 4, 6]),
            [vi("y", T.FLOAT, [2, 4, 6])],
            {},
            13,
            12,
            "Softmax 'sm' .* axis=1 is not the last axis",
        ),
        (
            [
                h.make_node(
                    "AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], name="pool"
                )
            ],
            _x([2, 6, 3, 5]),
            [vi("y", T.FLOAT, [2, 6, 1, 3])],
            {},
            19,
            18,
            "AveragePool 'pool' .* dilations=\\[2, 2\\] exist only from opset 19",
        ),
        # an op newer than the target with no decomposition goes through the generic path, which names it
        (
            [h.make_node("TensorScatter", ["c", "u", "i"], ["y"], name="ts")],
            [vi("c", T.FLOAT, [2, 2, 6, 4]), vi("u", T.FLOAT, [2, 2, 1, 4]), vi("i", T.INT64, [2])],
            [vi("y", T.FLOAT, [2, 2, 6, 4])],
            {},
            24,
            18,
            "TensorScatter 'ts' \\(opset 24\\) cannot be converted to opset 18: it does not exist at opset 18 and there is no decomposition",
        ),
        (
            [h.make_node("Clip", ["x", "lo"], ["y"], name="clip")],
            [vi("x", T.FLOAT, [2, 4]), vi("lo", T.FLOAT, [])],
            [vi("y", T.FLOAT, [2, 4])],
            {},
            13,
            10,
            "Clip 'clip' .* its min input 'lo' is computed at run time; opset 10 needs a constant",
        ),
        (
            [h.make_node("Clip", ["x", "", "hi"], ["y"], name="clip")],
            [vi("x", T.DOUBLE, [2, 4])],
            [vi("y", T.DOUBLE, [2, 4])],
            {"hi": np.array(0.1, np.float64)},
            13,
            10,
            "Clip 'clip' .* max=0.1 is not a float32",
        ),
        (
            [_attn(["q", "k", "v", "", "", "", "n"], name="att")],
            [
                vi("q", T.FLOAT, [2, 4, 3, 8]),
                vi("k", T.FLOAT, [2, 4, 5, 8]),
                vi("v", T.FLOAT, [2, 4, 5, 8]),
                vi("n", T.INT64, [2]),
            ],
            [vi("y", T.FLOAT, [2, 4, 3, 8])],
            {},
            24,
            18,
            "Attention 'att' .* input 6 nonpad_kv_seqlen \\('n'\\) is not supported",
        ),
        (
            [_attn(["q", "k", "v"], ["y", "", "", "qk"], qk_matmul_output_mode=1, name="att")],
            [
                vi("q", T.FLOAT, [2, 4, 3, 8]),
                vi("k", T.FLOAT, [2, 4, 5, 8]),
                vi("v", T.FLOAT, [2, 4, 5, 8]),
            ],
            [vi("y", T.FLOAT, [2, 4, 3, 8]), vi("qk", T.FLOAT, [2, 4, 3, 5])],
            {},
            23,
            18,
            "Attention 'att' .* output qk_matmul_output with qk_matmul_output_mode=1",
        ),
        (
            [h.make_node("DeformConv", ["x", "w", "off"], ["y"], name="dcn")],
            [
                vi("x", T.FLOAT, [1, 3, 4, 4]),
                vi("w", T.FLOAT, [2, 3, 3, 3]),
                vi("off", T.FLOAT, [1, 18, 2, 2]),
            ],
            [vi("y", T.FLOAT, [1, 2, 2, 2])],
            {},
            19,
            15,
            "DeformConv 'dcn' .* uses GridSample, which exists only from opset 16",
        ),
        (
            [h.make_node("DeformConv", ["x", "w", "off"], ["y"], name="dcn")],
            [
                vi("x", T.FLOAT, [1, 3, "h", "w"]),
                vi("w", T.FLOAT, [2, 3, 3, 3]),
                vi("off", T.FLOAT, [1, 18, "oh", "ow"]),
            ],
            [vi("y", T.FLOAT, [1, 2, "oh", "ow"])],
            {},
            19,
            18,
            "DeformConv 'dcn' .* input X 'x' needs static channels, height and width",
        ),
        (
            [h.make_node("AffineGrid", ["t", "sz"], ["y"], name="ag")],
            [vi("t", T.FLOAT, ["n", "a", "b"]), vi("sz", T.INT64, ["r"])],
            [vi("y", T.FLOAT, ["n", "h", "w", "k"])],
            {},
            20,
            18,
            "AffineGrid 'ag' .* size 'sz' is computed at run time and the grid's rank is unknown",
        ),
        (
            [h.make_node("ReduceMean", ["x", "ax"], ["y"], name="rm")],
            [vi("x", T.FLOAT, [2, 4]), vi("ax", T.INT64, [1])],
            [vi("y", T.FLOAT, ["d0", "d1"])],
            {},
            18,
            17,
            "ReduceMean 'rm' .* axes input 'ax' is computed at run time",
        ),
        (
            [h.make_node("Pad", ["x", "p"], ["y"], mode="wrap", name="pad")],
            _x([2, 4]),
            [vi("y", T.FLOAT, [2, 6])],
            {"p": np.array([0, 1, 0, 1], np.int64)},
            19,
            18,
            "Pad 'pad' .* mode='wrap' exists only from opset 19",
        ),
        (
            [
                h.make_node("Cast", ["x"], ["a"], to=T.INT8, name="to_int8"),
                h.make_node("Relu", ["a"], ["b"], name="relu"),
                h.make_node("Cast", ["b"], ["y"], to=T.FLOAT, name="back"),
            ],
            _x([2, 4]),
            [vi("y", T.FLOAT, [2, 4])],
            {},
            20,
            13,
            "Relu 'relu' .* input 0 \\('a'\\) is INT8, which opset 13 does not accept",
        ),
    ],
)
def test_refusals_name_the_op_and_reason(nodes, inputs, outputs, inits, opset, target, message):
    model = ir.from_proto(
        onnx.shape_inference.infer_shapes(make_model(nodes, inputs, outputs, inits, opset=opset))
    )
    with pytest.raises(PassError, match=f"convert-opset: {message}"):
        ConvertOpset(target=target)(model)


def test_gridsample_below_16_points_at_the_decomposition():
    nodes, inputs, outputs, inits, opset, _, _ = CASES["gridsample"]
    with pytest.raises(
        PassError,
        match=r"GridSample 'gs' .* does not exist at opset 15 .*run decompose-gridsample first",
    ):
        ConvertOpset(target=15)(
            ir.from_proto(make_model(nodes, inputs, outputs, inits, opset=opset))
        )


def test_upgrade_uses_onnx_version_converter_and_keeps_weights():
    w = RNG.standard_normal((6, 6)).astype(
        np.float32
    )  # above LightProto's threshold: stays out of the proto
    proto = make_model(
        [
            h.make_node("MatMul", ["x", "w"], ["a"], name="mm"),
            h.make_node("ReduceSum", ["a"], ["y"], axes=[1], keepdims=1, name="sum"),
        ],
        _x([2, 6]),
        [vi("y", T.FLOAT, [2, 1])],
        {"w": w},
        opset=11,
    )
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    expected = ort_run(proto, {"x": x})["y"]
    model = ir.from_proto(proto)
    result = ConvertOpset(target=18)(model)
    assert result.stats["upgraded_from"] == 11 and model.opset_imports[""] == 18
    reduce = next(n for n in model.graph if n.op_type == "ReduceSum")
    assert len(reduce.inputs) == 2  # ReduceSum-13 takes axes as an input
    assert {n.name for n in model.graph} == {
        "mm",
        "sum",
        "sum/Constant",
    }  # the converter's node is named
    np.testing.assert_array_equal(model.graph.initializers["w"].const_value.numpy(), w)
    np.testing.assert_allclose(ort_run(model, {"x": x})["y"], expected, rtol=1e-6)


def test_functions_are_converted_at_their_own_opset():
    fn = h.make_function(
        "local",
        "F",
        ["a"],
        ["b"],
        [
            h.make_node("ReduceMean", ["a", "ax"], ["b"], name="rm"),
            h.make_node(
                "Constant",
                [],
                ["ax"],
                value=onnx.numpy_helper.from_array(np.array([1], np.int64)),
                name="axc",
            ),
        ][::-1],
        opset_imports=[h.make_opsetid("", 18)],
    )
    proto = make_model(
        [h.make_node("F", ["x"], ["y"], domain="local", name="call")],
        _x([2, 4, 6]),
        [vi("y", T.FLOAT, [2, 1, 6])],
        functions=[fn],
        extra_opsets={"local": 1},
        opset=18,
    )
    expected = ort_run(proto, F3)["y"]
    model = ir.from_proto(proto)
    ConvertOpset(target=13)(model)
    function = model.functions[("local", "F", "")]
    assert function.opset_imports[""] == 13 and [n.op_type for n in function] == ["ReduceMean"]
    np.testing.assert_allclose(ort_run(model, F3)["y"], expected, rtol=1e-6)


def test_target_out_of_range_is_a_pipeline_error():
    with pytest.raises(PipelineError, match="target must be between 7 and"):
        ConvertOpset(target=99)


# ---- torch exports: what torch 2.13 really emits above opset 18 ---------------------------------
#
# (Attention and RMSNormalization from the dynamo exporter at opset 23: test_opset_decompositions.)
# F.affine_grid becomes AffineGrid-20 only with the TorchScript
# exporter (dynamo decomposes it into plain ops). The dynamo exporter always runs onnxscript's version
# converter, whose InlinePass inlines every function, so model-local functions at opset 20 come from
# the TorchScript exporter's export_modules_as_functions.


@pytest.fixture(scope="module")
def torch_functions_opset20():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    class Warp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.theta = torch.nn.Linear(6, 6)

        def forward(self, x):
            theta = self.theta(x.mean(dim=(2, 3))[:, :6]).view(-1, 2, 3)
            grid = F.affine_grid(theta, [2, 6, 3, 5], align_corners=False)
            return F.grid_sample(x, grid, align_corners=False)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.warp, self.act = Warp(), torch.nn.GELU()

        def forward(self, x):
            return self.act(self.warp(x))

    torch.manual_seed(0)
    net = Net().eval()
    f = io.BytesIO()
    x = torch.from_numpy(X4)
    torch.onnx.export(
        net,
        (x,),
        f,
        dynamo=False,
        opset_version=20,
        export_modules_as_functions=True,
        input_names=["x"],
        output_names=["y"],
    )
    with torch.no_grad():
        reference = net(x).numpy()
    return onnx.load_from_string(f.getvalue()), reference


@pytest.mark.torch
def test_torch_opset20_functions_come_out_at_18_in_one_domain(torch_functions_opset20):
    from surgery import apply
    from surgery.passes.inline_functions import InlineFunctions

    proto, reference = torch_functions_opset20
    assert proto.functions and len(proto.opset_import) > 1
    assert {"AffineGrid", "GridSample", "Gelu"} <= set(op_counts(proto))
    feeds = {
        proto.graph.input[0].name: X4
    }  # the whole Net is a function: torch names its output itself
    model, report = apply(ir.from_proto(proto), [InlineFunctions(), ConvertOpset()], inputs=feeds)
    assert dict(model.opset_imports) == {"": 18} and not model.functions
    assert {n.domain for n in model.graph} == {""}
    counts = op_counts(model)
    assert not {"AffineGrid", "Gelu"} & set(counts) and counts["GridSample"] == 1
    assert (
        report.ok and report.steps[-1].parity and all(d.ok for s in report.steps for d in s.parity)
    )
    assert report.steps[-1].stats["decomposed"] == 2  # AffineGrid and Gelu, once inlined
    got = ort_run(model, feeds)[proto.graph.output[0].name]
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5)
