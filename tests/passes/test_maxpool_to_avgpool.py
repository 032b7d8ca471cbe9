"""maxpool-to-avgpool: same windows, count_include_pad chosen on purpose, refusals with reasons."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import PassError
from surgery.passes.maxpool_to_avgpool import MaxPoolToAvgPool
from surgery.testing import make_model, op_counts, ort_run, vi

X = np.random.default_rng(0).standard_normal((1, 2, 7, 7)).astype(np.float32)


def _pool(op: str, out_hw: int, **attrs) -> onnx.ModelProto:
    return make_model(
        [h.make_node(op, ["x"], ["y"], name="/pool/MaxPool", **attrs)],
        [vi("x", T.FLOAT, [1, 2, 7, 7])],
        [vi("y", T.FLOAT, [1, 2, out_hw, out_hw])],
        opset=17,
    )


@pytest.mark.parametrize(
    "attrs, out_hw",
    [
        ({"kernel_shape": [2, 2], "strides": [2, 2]}, 3),
        ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 4),
        ({"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, 4),
        ({"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}, 7),
    ],
)
@pytest.mark.parametrize("include_pad", [False, True])
def test_equals_an_averagepool_over_the_same_windows(attrs, out_hw, include_pad):
    model = ir.from_proto(_pool("MaxPool", out_hw, **attrs))
    result = MaxPoolToAvgPool(count_include_pad=include_pad)(model)
    assert result.modified and op_counts(model) == {"AveragePool": 1}
    node = model.graph.node(0)
    assert node.name == "/pool/MaxPool/AveragePool"
    assert node.attributes["count_include_pad"].as_int() == int(include_pad)
    expected = ort_run(
        _pool("AveragePool", out_hw, count_include_pad=int(include_pad), **attrs), {"x": X}
    )["y"]
    np.testing.assert_allclose(ort_run(model, {"x": X})["y"], expected, rtol=1e-6)
    assert not MaxPoolToAvgPool()(model).modified


def test_default_ignores_padding_like_maxpool_does():
    # a border window of a padded pool: with count_include_pad=0 a constant image stays constant
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    model = ir.from_proto(_pool("MaxPool", 4, **attrs))
    MaxPoolToAvgPool()(model)
    out = ort_run(model, {"x": np.full((1, 2, 7, 7), 3.0, np.float32)})["y"]
    np.testing.assert_allclose(out, 3.0)


def test_consumed_indices_are_refused_naming_the_consumer():
    proto = make_model(
        [
            h.make_node(
                "MaxPool",
                ["x"],
                ["y", "idx"],
                name="/pool/MaxPool",
                kernel_shape=[2, 2],
                strides=[2, 2],
            ),
            h.make_node(
                "MaxUnpool",
                ["y", "idx"],
                ["z"],
                name="/unpool/MaxUnpool",
                kernel_shape=[2, 2],
                strides=[2, 2],
            ),
        ],
        [vi("x", T.FLOAT, [1, 2, 6, 6])],
        [vi("z", T.FLOAT, [1, 2, 6, 6])],
        opset=17,
    )
    with pytest.raises(
        PassError, match=r"MaxPool '/pool/MaxPool'.*consumed by MaxUnpool '/unpool/MaxUnpool'"
    ):
        MaxPoolToAvgPool()(ir.from_proto(proto))


def test_a_refusal_leaves_the_model_exactly_as_it_was():
    """Two MaxPools, only the second's indices consumed: the PassError comes before any rewrite."""
    proto = make_model(
        [
            h.make_node("MaxPool", ["x"], ["a"], name="/pool1/MaxPool", kernel_shape=[1, 1]),
            h.make_node(
                "MaxPool",
                ["a"],
                ["y", "idx"],
                name="/pool2/MaxPool",
                kernel_shape=[2, 2],
                strides=[2, 2],
            ),
            h.make_node(
                "MaxUnpool",
                ["y", "idx"],
                ["z"],
                name="/unpool/MaxUnpool",
                kernel_shape=[2, 2],
                strides=[2, 2],
            ),
        ],
        [vi("x", T.FLOAT, [1, 2, 6, 6])],
        [vi("z", T.FLOAT, [1, 2, 6, 6])],
        opset=17,
    )
    model = ir.from_proto(proto)
    before = ir.to_proto(model).SerializeToString(deterministic=True)
    with pytest.raises(PassError, match=r"MaxPool '/pool2/MaxPool'.*consumed by MaxUnpool"):
        surgery.apply(model, [MaxPoolToAvgPool()], verify="off")
    assert op_counts(model) == {"MaxPool": 2, "MaxUnpool": 1}  # the first MaxPool was not replaced
    assert ir.to_proto(model).SerializeToString(deterministic=True) == before


def test_dilations_below_opset_19_are_refused():
    proto = make_model(
        [h.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2], dilations=[2, 2])],
        [vi("x", T.FLOAT, [1, 2, 7, 7])],
        [vi("y", T.FLOAT, [1, 2, 5, 5])],
        opset=18,
    )
    with pytest.raises(PassError, match=r"dilations .* only from opset 19"):
        MaxPoolToAvgPool()(ir.from_proto(proto))


def test_integer_maxpool_is_refused():
    proto = make_model(
        [h.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2])],
        [vi("x", T.UINT8, [1, 1, 4, 4])],
        [vi("y", T.UINT8, [1, 1, 3, 3])],
        opset=17,
    )
    with pytest.raises(PassError, match="UINT8"):
        MaxPoolToAvgPool()(ir.from_proto(proto))


def test_only_the_named_nodes():
    proto = make_model(
        [
            h.make_node("MaxPool", ["x"], ["a"], name="keep", kernel_shape=[2, 2]),
            h.make_node("MaxPool", ["a"], ["y"], name="swap", kernel_shape=[2, 2]),
        ],
        [vi("x", T.FLOAT, [1, 2, 7, 7])],
        [vi("y", T.FLOAT, [1, 2, 5, 5])],
        opset=17,
    )
    model = ir.from_proto(proto)
    MaxPoolToAvgPool(nodes=["swap"])(model)
    assert [n.op_type for n in model.graph] == ["MaxPool", "AveragePool"]


@pytest.fixture(scope="module")
def torch_maxpools() -> dict[str, onnx.ModelProto]:
    """nn.MaxPool2d(return_indices=True) with the indices thrown away, and returned."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self, return_indices: bool) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
            self.pool = torch.nn.MaxPool2d(2, return_indices=True)
            self.return_indices = return_indices

        def forward(self, x):
            y, idx = self.pool(self.conv(x))
            return (y, idx) if self.return_indices else y

    torch.manual_seed(0)
    out = {}
    for key, flag in (("unused", False), ("returned", True)):
        f = io.BytesIO()
        torch.onnx.export(
            Net(flag).eval(),
            (torch.from_numpy(X[:, :, :6, :6].copy()),),
            f,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y", "idx"] if flag else ["y"],
        )
        out[key] = onnx.load_from_string(f.getvalue())
    return out


@pytest.mark.torch
def test_torch_maxpool_deviation_is_reported(torch_maxpools):
    proto = torch_maxpools["unused"]
    x = X[:, :, :6, :6].copy()
    model, report = surgery.apply(proto, [MaxPoolToAvgPool()], inputs={"x": x})
    step = report.steps[0]
    assert step.modified and step.parity_status == "deviation reported"
    assert "MaxPool" not in op_counts(model) and op_counts(model)["AveragePool"] == 1
    # the reported deviation is the real one
    deviation = np.abs(ort_run(model, {"x": x})["y"] - ort_run(proto, {"x": x})["y"]).max()
    assert deviation > 1e-3


@pytest.mark.torch
def test_torch_returned_indices_are_refused(torch_maxpools):
    proto = torch_maxpools["returned"]
    # torch turns its per-channel indices into ONNX's flat ones with a second MaxPool and a Sub
    consumers = [n for n in proto.graph.node if n.op_type == "Sub"]
    assert consumers
    with pytest.raises(PassError, match=f"consumed by Sub '{consumers[0].name}'"):
        MaxPoolToAvgPool()(ir.from_proto(proto))
