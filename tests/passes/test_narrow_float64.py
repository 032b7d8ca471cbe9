"""narrow-float64: no float64 left anywhere; Casts retargeted, never removed; range errors named."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from surgery.errors import PassError
from surgery.passes.narrow_float64 import NarrowFloat64
from surgery.testing import make_model, op_counts, ort_run, vi
from surgery.verify.reference import run_reference

TOL = NarrowFloat64.default_tolerance


def float64_anywhere(model: ir.Model) -> list[str]:
    """Every place a float64 can hide: value types, initializers, tensor and dtype attributes."""
    found = []
    text = str(ir.to_proto(model))
    if "elem_type: 11" in text or "data_type: 11" in text:
        found.append("a float64 type or tensor in the proto")
    for graph in [model.graph, *model.functions.values()]:
        for node in graph.all_nodes() if hasattr(graph, "all_nodes") else graph:
            for key in ("to", "dtype"):
                attr = node.attributes.get(key)
                if (
                    attr is not None
                    and not attr.is_ref()
                    and attr.type == ir.AttributeType.INT
                    and attr.as_int() == T.DOUBLE
                ):
                    found.append(f"{node.op_type}.{key}")
    return found


def assert_close(actual, expected):
    np.testing.assert_allclose(
        actual.astype(np.float64), expected.astype(np.float64), rtol=TOL.rtol, atol=TOL.atol
    )


def test_every_kind_of_float64_is_narrowed_and_int_casts_stay():
    then_g = h.make_graph(
        [h.make_node("Mul", ["a", "k"], ["t"], name="/then/Mul")],
        "then",
        [],
        [vi("t", T.DOUBLE, [3])],
    )
    else_g = h.make_graph(
        [h.make_node("Neg", ["a"], ["e"], name="/else/Neg")], "else", [], [vi("e", T.DOUBLE, [3])]
    )
    fn = h.make_function(
        "local",
        "AddHalf",
        ["p"],
        ["q"],
        [
            h.make_node(
                "Constant",
                [],
                ["half"],
                value=nh.from_array(np.array(0.5, np.float64)),
                name="half",
            ),
            h.make_node("Add", ["p", "half"], ["q"], name="add"),
        ],
        opset_imports=[h.make_opsetid("", 17)],
    )
    nodes = [
        h.make_node("Cast", ["x"], ["a"], to=T.DOUBLE, name="/pre/Cast"),
        h.make_node(
            "Constant",
            [],
            ["k"],
            value=nh.from_array(np.array([1.5, 2.0, 2.5], np.float64)),
            name="/pre/k",
        ),
        h.make_node("ReduceSum", ["a"], ["s"], keepdims=0, name="/pre/Sum"),
        h.make_node("Greater", ["s", "zero"], ["c"], name="/pre/Greater"),
        h.make_node("If", ["c"], ["b"], then_branch=then_g, else_branch=else_g, name="/branch"),
        h.make_node("AddHalf", ["b"], ["d"], domain="local", name="/call"),
        h.make_node("Shape", ["d"], ["shp"], name="/shape"),
        h.make_node(
            "ConstantOfShape",
            ["shp"],
            ["ones"],
            value=nh.from_array(np.array([1.0], np.float64)),
            name="/ones",
        ),
        h.make_node("Add", ["d", "ones"], ["e"], name="/add1"),
        h.make_node("Mul", ["e", "w"], ["y64"], name="/scale"),
        h.make_node(
            "Cast", ["y64"], ["idx"], to=T.INT64, name="/to_index"
        ),  # Cast(float -> int64) must stay
        h.make_node("Cast", ["y64"], ["y"], to=T.FLOAT, name="/post/Cast"),
    ]
    proto = make_model(
        nodes,
        [vi("x", T.FLOAT, [3])],
        [vi("y", T.FLOAT, [3]), vi("idx", T.INT64, [3])],
        {"zero": np.array(0.0, np.float64), "w": np.array([3.0, -1.0, 0.25], np.float64)},
        functions=[fn],
        extra_opsets={"local": 1},
    )
    x = np.array([0.5, 1.25, -0.5], np.float32)
    expected = ort_run(proto, {"x": x})
    model = ir.from_proto(proto)
    result = NarrowFloat64()(model)
    assert result.modified
    assert (
        result.stats["initializers"] == 2
        and result.stats["tensor_attributes"] == 3
        and result.stats["dtype_attributes"] == 1
    )
    assert float64_anywhere(model) == []
    casts = [n for n in model.graph if n.op_type == "Cast"]
    assert [(n.name, n.attributes["to"].as_int()) for n in casts] == [
        ("/pre/Cast", T.FLOAT),
        ("/to_index", T.INT64),
        ("/post/Cast", T.FLOAT),
    ]
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    got = ort_run(model, {"x": x})
    assert_close(got["y"], expected["y"])
    np.testing.assert_array_equal(got["idx"], expected["idx"])
    assert not NarrowFloat64()(model).modified


def test_random_and_eyelike_dtypes():
    proto = make_model(
        [
            h.make_node("EyeLike", ["x"], ["eye"], dtype=T.DOUBLE, name="eye"),
            h.make_node("RandomNormalLike", ["x"], ["r"], dtype=T.DOUBLE, name="rnd", seed=1.0),
            h.make_node("Mul", ["r", "zero"], ["r0"], name="no_noise"),
            h.make_node("Add", ["eye", "r0"], ["y"], name="add"),
        ],
        [vi("x", T.FLOAT, [3, 3])],
        [vi("y", T.DOUBLE, [3, 3])],
        {"zero": np.array(0.0, np.float64)},
    )
    model = ir.from_proto(proto)
    assert NarrowFloat64()(model).stats["dtype_attributes"] == 2
    assert float64_anywhere(model) == []
    assert model.graph.outputs[0].dtype == ir.DataType.FLOAT
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_array_equal(
        ort_run(model, {"x": np.zeros((3, 3), np.float32)})["y"], np.eye(3, dtype=np.float32)
    )


def test_out_of_range_constant_is_an_error_naming_the_tensor():
    proto = make_model(
        [h.make_node("Mul", ["x", "huge"], ["y"], name="m")],
        [vi("x", T.DOUBLE, [1])],
        [vi("y", T.DOUBLE, [1])],
        {"huge": np.array([1e300], np.float64)},
    )
    with pytest.raises(
        PassError, match="initializer 'huge' holds 1e\\+300, outside float32's range"
    ):
        NarrowFloat64()(ir.from_proto(proto))


def test_infinities_are_fine():
    proto = make_model(
        [h.make_node("Max", ["x", "lo"], ["y"], name="m")],
        [vi("x", T.DOUBLE, [2])],
        [vi("y", T.DOUBLE, [2])],
        {"lo": np.array([-np.inf, 1e-50], np.float64)},
    )
    result = NarrowFloat64()(ir.from_proto(proto))
    assert (
        result.stats["underflowed_elements"] == 1
        and "below float32's resolution" in result.notes[0]
    )


def test_keep_io_casts_at_the_boundary():
    proto = make_model(
        [h.make_node("Mul", ["x", "w"], ["y"], name="m")],
        [vi("x", T.DOUBLE, [2])],
        [vi("y", T.DOUBLE, [2])],
        {"w": np.array([2.0, 3.0], np.float64)},
    )
    model = ir.from_proto(proto)
    result = NarrowFloat64(keep_io=True)(model)
    assert result.stats["boundary_casts"] == 2
    assert [v.dtype for v in model.graph.inputs] == [ir.DataType.DOUBLE]
    assert [v.dtype for v in model.graph.outputs] == [ir.DataType.DOUBLE]
    assert [v.name for v in model.graph.outputs] == ["y"]
    assert op_counts(model) == {"Cast": 2, "Mul": 1}
    assert model.graph.initializers["w"].const_value.dtype == ir.DataType.FLOAT
    x = np.array([1.5, -2.0])
    np.testing.assert_allclose(ort_run(model, {"x": x})["y"], [3.0, -6.0])
    assert not NarrowFloat64(keep_io=True)(model).modified


@pytest.fixture(scope="module")
def torch_float64_models() -> dict[str, onnx.ModelProto]:
    """float64 pre/post-processing inside a float32 model, and a whole .double() model."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class PrePost(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.register_buffer(
                "mean", torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
            )

        def forward(self, img):
            x = (img.double() / 255.0 - self.mean) / 0.226
            y = torch.relu(self.conv(x.float())).mean(dim=(2, 3))
            return torch.softmax(y.double() * 1.5, dim=-1)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.pool = torch.nn.AvgPool2d(2)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.nn.functional.gelu(self.pool(self.conv(x))).mean(dim=(2, 3)))

    out = {}
    for key, module, x in (
        ("prepost", PrePost().eval(), torch.rand(1, 3, 8, 8) * 255),
        ("double", Net().double().eval(), torch.randn(1, 3, 10, 10, dtype=torch.float64)),
    ):
        f = io.BytesIO()
        torch.onnx.export(
            module, (x,), f, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"]
        )
        out[key] = onnx.load_from_string(f.getvalue())
        out[key + "_input"] = x.numpy()
        out[key + "_dynamo"] = torch.onnx.export(
            module, (x,), dynamo=True, opset_version=18, input_names=["x"], output_names=["y"]
        ).model_proto
    return out


@pytest.mark.torch
@pytest.mark.parametrize("key", ["prepost", "double"])
@pytest.mark.parametrize("exporter", ["", "_dynamo"])
def test_torch_exports(torch_float64_models, key, exporter):
    proto = torch_float64_models[key + exporter]
    x = torch_float64_models[key + "_input"]
    if key == "double":
        # onnxruntime has no float64 Conv/AveragePool/Erf kernels: the reference evaluator is the oracle
        with pytest.raises(Exception, match=r"NOT_IMPLEMENTED|Could not find an implementation"):
            ort_run(proto, {"x": x})
        expected = run_reference(ir.from_proto(proto), {"x": x})["y"]
    else:
        expected = ort_run(proto, {"x": x})["y"]
    model = ir.from_proto(proto)
    assert NarrowFloat64()(model).modified
    assert float64_anywhere(model) == []
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    got = ort_run(model, {"x": x.astype(np.float32)})["y"]
    assert got.dtype == np.float32
    assert_close(got, expected)
