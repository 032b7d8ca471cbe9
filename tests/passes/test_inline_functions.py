"""inline-functions: model-local functions disappear, names follow the call sites, domains go."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.errors import PassError
from surgery.passes.inline_functions import InlineFunctions
from surgery.testing import make_model, op_counts, ort_run, vi

X = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)


def _scale_fn(opset: int = 17) -> onnx.FunctionProto:
    """Scale(a; alpha) = a * alpha, with alpha an attribute parameter with a default."""
    fn = h.make_function(
        "lib",
        "Scale",
        ["a"],
        ["b"],
        [h.make_node("Constant", [], ["k"], name="k", value_float=0.0)],
        opset_imports=[h.make_opsetid("", opset)],
        attributes=[],
    )
    const = h.make_node("Constant", [], ["k"], name="k")
    const.attribute.append(
        onnx.AttributeProto(
            name="value_float", ref_attr_name="alpha", type=onnx.AttributeProto.FLOAT
        )
    )
    del fn.node[:]
    fn.node.extend([const, h.make_node("Mul", ["a", "k"], ["b"], name="mul")])
    fn.attribute_proto.append(h.make_attribute("alpha", 2.0))
    return fn


def _block_fn() -> onnx.FunctionProto:
    """Block(x) = Relu(Scale(x)) and an If inside, calling another function."""
    then_g = h.make_graph(
        [h.make_node("Scale", ["r"], ["t"], domain="lib", name="inner_scale", alpha=3.0)],
        "then",
        [],
        [vi("t", T.FLOAT, [2, 4])],
    )
    else_g = h.make_graph(
        [h.make_node("Identity", ["r"], ["e"], name="inner_id")],
        "else",
        [],
        [vi("e", T.FLOAT, [2, 4])],
    )
    return h.make_function(
        "mods",
        "Block",
        ["x", "flag"],
        ["y"],
        [
            h.make_node("Scale", ["x"], ["s"], domain="lib", name="scale"),
            h.make_node("Relu", ["s"], ["r"], name="relu"),
            h.make_node(
                "If", ["flag"], ["y"], then_branch=then_g, else_branch=else_g, name="branch"
            ),
        ],
        opset_imports=[h.make_opsetid("", 17), h.make_opsetid("lib", 1)],
    )


def _model() -> onnx.ModelProto:
    return make_model(
        [
            h.make_node("Block", ["x", "flag"], ["b1"], domain="mods", name="/layer1"),
            h.make_node("Block", ["b1", "flag"], ["y"], domain="mods", name="/layer2"),
        ],
        [vi("x", T.FLOAT, [2, 4]), vi("flag", T.BOOL, [])],
        [vi("y", T.FLOAT, [2, 4])],
        functions=[_scale_fn(), _block_fn()],
        extra_opsets={"mods": 1, "lib": 1, "unused.domain": 3},
    )


def test_nested_functions_and_subgraphs_are_inlined():
    proto = _model()
    feeds = {"x": X, "flag": np.array(True)}
    expected = ort_run(proto, feeds)["y"]
    model = ir.from_proto(proto)
    result = InlineFunctions()(model)
    assert result.stats == {"inlined_calls": 6, "functions_removed": 2, "opsets_dropped": 3}
    assert dict(model.opset_imports) == {"": 17}
    assert not model.functions
    assert op_counts(model) == {"Constant": 4, "Mul": 4, "Relu": 2, "If": 2, "Identity": 2}
    names = {n.name for n in model.graph}
    assert "/layer1/scale/mul" in names and "/layer2/relu" in names
    inner = next(n for n in model.graph if n.op_type == "If").attributes["then_branch"].as_graph()
    assert sorted(n.name for n in inner) == ["/layer1/inner_scale/k", "/layer1/inner_scale/mul"]
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_allclose(ort_run(model, feeds)["y"], expected, rtol=1e-6)
    np.testing.assert_allclose(
        expected, np.maximum(np.maximum(X * 2, 0) * 3 * 2, 0) * 3
    )  # alpha default 2, then 3
    assert not InlineFunctions()(model).modified


def test_unused_domains_go_even_without_functions():
    proto = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [2, 4])],
        [vi("y", T.FLOAT, [2, 4])],
        extra_opsets={"com.microsoft": 1},
    )
    model = ir.from_proto(proto)
    result = InlineFunctions()(model)
    assert result.stats == {"opsets_dropped": 1} and dict(model.opset_imports) == {"": 17}


def _unchecked(nodes, inputs, outputs, functions, opsets) -> onnx.ModelProto:
    """onnx's checker refuses a function whose ai.onnx import differs from the model's; exporters write them."""
    proto = h.make_model(
        h.make_graph(nodes, "g", inputs, outputs),
        opset_imports=[h.make_opsetid(d, v) for d, v in opsets.items()],
        functions=functions,
    )
    proto.ir_version = 9
    return proto


def test_newer_function_opset_is_converted_down():
    fn = h.make_function(
        "lib",
        "Act",
        ["a"],
        ["b"],
        [h.make_node("Gelu", ["a"], ["b"], name="gelu")],
        opset_imports=[h.make_opsetid("", 20)],
    )
    proto = _unchecked(
        [h.make_node("Act", ["x"], ["y"], domain="lib", name="/act")],
        [vi("x", T.FLOAT, [2, 4])],
        [vi("y", T.FLOAT, [2, 4])],
        [fn],
        {"": 18, "lib": 1},
    )
    model = ir.from_proto(proto)
    InlineFunctions()(model)
    assert dict(model.opset_imports) == {"": 18} and "Gelu" not in op_counts(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    gelu = 0.5 * X * (1 + np.vectorize(__import__("math").erf)(X / np.sqrt(2)))
    np.testing.assert_allclose(ort_run(model, {"x": X})["y"], gelu, atol=1e-6)


def test_older_function_that_would_change_meaning_is_refused():
    fn = h.make_function(
        "lib",
        "Mean",
        ["a"],
        ["b"],
        [h.make_node("ReduceMean", ["a"], ["b"], axes=[1], name="rm")],
        opset_imports=[h.make_opsetid("", 13)],
    )
    proto = _unchecked(
        [h.make_node("Mean", ["x"], ["y"], domain="lib", name="/m")],
        [vi("x", T.FLOAT, [2, 4])],
        [vi("y", T.FLOAT, [2, 1])],
        [fn],
        {"": 18, "lib": 1},
    )
    with pytest.raises(PassError, match=r"function lib::Mean uses ai.onnx 13 .* ReduceMean"):
        InlineFunctions()(ir.from_proto(proto))


def test_recursion_is_refused():
    fn = h.make_function(
        "lib",
        "Loop",
        ["a"],
        ["b"],
        [h.make_node("Loop", ["a"], ["b"], domain="lib", name="again")],
        opset_imports=[h.make_opsetid("", 17), h.make_opsetid("lib", 1)],
    )
    proto = _unchecked(
        [h.make_node("Loop", ["x"], ["y"], domain="lib", name="call")],
        [vi("x", T.FLOAT, [1])],
        [vi("y", T.FLOAT, [1])],
        [fn],
        {"": 17, "lib": 1},
    )
    with pytest.raises(
        PassError, match="recursive functions cannot be inlined: lib::Loop -> lib::Loop"
    ):
        InlineFunctions()(ir.from_proto(proto))


@pytest.fixture(scope="module")
def torch_modules_as_functions() -> onnx.ModelProto:
    """torch 2.13's dynamo exporter inlines functions itself; the TorchScript exporter at opset 20 keeps them."""
    torch = pytest.importorskip("torch")

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.act = torch.nn.GELU()

        def forward(self, x):
            return self.act(self.fc(x))

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.norm = Block(), Block(), torch.nn.LayerNorm(4)

        def forward(self, x):
            return self.norm(self.b(self.a(x)))

    torch.manual_seed(0)
    f = io.BytesIO()
    torch.onnx.export(
        Net().eval(),
        (torch.from_numpy(X),),
        f,
        dynamo=False,
        opset_version=20,
        export_modules_as_functions=True,
        input_names=["x"],
        output_names=["y"],
    )
    return onnx.load_from_string(f.getvalue())


@pytest.mark.torch
def test_torch_modules_as_functions(torch_modules_as_functions):
    proto = torch_modules_as_functions
    assert len(proto.functions) >= 4 and len(proto.opset_import) > 1
    feeds = {proto.graph.input[0].name: X}
    out = proto.graph.output[0].name
    expected = ort_run(proto, feeds)[out]
    model = ir.from_proto(proto)
    InlineFunctions()(model)
    assert dict(model.opset_imports) == {"": 20} and not model.functions
    assert op_counts(model) == {"Gemm": 2, "Gelu": 2, "LayerNormalization": 1}
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_allclose(ort_run(model, feeds)[out], expected, rtol=1e-6, atol=1e-6)
