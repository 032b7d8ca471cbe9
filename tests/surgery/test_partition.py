"""surgery.partition: extract and split on small graphs (contract, errors, sharing, types)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery import model_io
from surgery.analysis.cuts import NothingToSplit
from surgery.errors import InputError
from surgery.partition import (
    extract,
    extract_part,
    parse_type_spec,
    slice_reference,
    split,
    write_manifest,
)
from surgery.runtime import SplitRunner
from surgery.testing import make_model, ort_run, vi


def _conv_net(value_info: bool = False) -> onnx.ModelProto:
    """Conv → Relu → Conv → GlobalAveragePool → Flatten → Gemm, no value_info (like a legacy export)."""
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node(
            "Conv",
            ["images", "c1.w", "c1.b"],
            ["/c1/Conv_output_0"],
            name="/c1/Conv",
            pads=[1, 1, 1, 1],
        ),
        h.make_node("Relu", ["/c1/Conv_output_0"], ["/c1/Relu_output_0"], name="/c1/Relu"),
        h.make_node(
            "Conv",
            ["/c1/Relu_output_0", "c2.w"],
            ["/c2/Conv_output_0"],
            name="/c2/Conv",
            strides=[2, 2],
        ),
        h.make_node("GlobalAveragePool", ["/c2/Conv_output_0"], ["/pool/Out"], name="/pool/GAP"),
        h.make_node("Flatten", ["/pool/Out"], ["/flat/Out"], name="/flat/Flatten"),
        h.make_node("Gemm", ["/flat/Out", "fc.w", "fc.b"], ["logits"], name="/fc/Gemm", transB=1),
    ]
    inits = {
        "c1.w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "c1.b": rng.standard_normal(8).astype(np.float32),
        "c2.w": rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
        "fc.w": rng.standard_normal((5, 16)).astype(np.float32),
        "fc.b": rng.standard_normal(5).astype(np.float32),
    }
    model = make_model(
        nodes,
        [vi("images", T.FLOAT, ["batch", 3, 16, 16])],
        [vi("logits", T.FLOAT, ["batch", 5])],
        inits,
        opset=13,
        ir_version=8,
    )
    if value_info:
        model = onnx.shape_inference.infer_shapes(model)
    return model


FEEDS = {"images": np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)}


def test_extract_a_middle_part_types_inputs_by_inference_and_shares_weights():
    model = ir.from_proto(_conv_net())
    assert model.graph.node(2).inputs[0].type is None  # nothing typed in the source
    part = extract(model, ["/c1/Relu_output_0"], ["/pool/Out"])
    assert [n.name for n in part.graph] == ["/c2/Conv", "/pool/GAP"]
    (inp,) = part.graph.inputs
    assert inp.name == "/c1/Relu_output_0" and inp.dtype == ir.DataType.FLOAT
    assert [d if isinstance(d, int) else d.value for d in inp.shape] == ["batch", 8, 16, 16]
    assert part.graph.outputs[0].dtype == ir.DataType.FLOAT
    assert part.ir_version == 8 and part.opset_imports == {"": 13}
    assert list(part.graph.initializers) == ["c2.w"]
    # the weight tensor object is shared, not copied
    assert (
        part.graph.initializers["c2.w"].const_value is model.graph.initializers["c2.w"].const_value
    )
    # the source model is untouched
    assert len(model.graph) == 6 and [v.name for v in model.graph.outputs] == ["logits"]
    onnx.checker.check_model(ir.to_proto(part), full_check=True)
    feeds, expected = slice_reference(model, part, FEEDS)
    got = ort_run(part, feeds)
    np.testing.assert_array_equal(got["/pool/Out"], expected["/pool/Out"])


def test_extract_errors_are_clear():
    model = ir.from_proto(_conv_net())
    with pytest.raises(
        InputError,
        match=r"input '/c1/Relu_output': no such tensor in the model \(did you mean '/c1/Relu_output_0'\?\)",
    ):
        extract(model, ["/c1/Relu_output"], ["logits"])
    with pytest.raises(InputError, match=r"output 'logit': no such tensor .*did you mean 'logits'"):
        extract(model, ["images"], ["logit"])
    with pytest.raises(
        InputError,
        match=r"does not separate .*graph input 'images' reaches an output .*images → /c1/Conv_output_0",
    ):
        extract(model, ["/c2/Conv_output_0"], ["/c1/Relu_output_0", "logits"])
    with pytest.raises(InputError, match="give at least one output"):
        extract(model, ["images"], [])
    with pytest.raises(InputError, match="a type is given for 'feat'"):
        extract(model, ["images"], ["logits"], input_types={"feat": (ir.DataType.FLOAT, [1])})


def test_extract_keeps_unused_inputs_with_a_note():
    model = ir.from_proto(_conv_net())
    part, cut, notes = extract_part(
        model, ["/c1/Relu_output_0", "/flat/Out"], ["/c2/Conv_output_0"]
    )
    assert [v.name for v in part.graph.inputs] == ["/c1/Relu_output_0", "/flat/Out"]
    assert [v.name for v in cut.unused_inputs] == ["/flat/Out"]
    assert any("'/flat/Out' is not needed" in n for n in notes)


def test_explicit_input_type_for_an_untyped_custom_op_output():
    nodes = [
        h.make_node("Mystery", ["x"], ["m"], name="custom", domain="vendor"),
        h.make_node("Relu", ["m"], ["y"], name="relu"),
    ]
    proto = h.make_model(
        h.make_graph(nodes, "g", [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])]),
        opset_imports=[h.make_opsetid("", 17), h.make_opsetid("vendor", 1)],
    )
    proto.ir_version = 9
    model = ir.from_proto(proto)
    with pytest.raises(
        InputError, match=r"input 'm' has no type .*give it explicitly, e.g. m:float32"
    ):
        extract(model, ["m"], ["y"])
    name, spec = parse_type_spec("m:float16[2]")
    part = extract(model, ["m"], ["y"], input_types={name: spec})
    assert part.graph.inputs[0].dtype == ir.DataType.FLOAT16 and list(
        part.graph.inputs[0].shape
    ) == [2]
    assert part.opset_imports == {"": 17, "vendor": 1}
    with pytest.raises(InputError, match="unknown element type 'floot32'"):
        parse_type_spec("m:floot32[2]")
    assert parse_type_spec("a:b:[1,?,n]") == ("a:b", (None, [1, None, "n"]))


def test_extract_keeps_only_the_functions_it_calls_and_handles_captures():
    add_one = h.make_function(
        "custom",
        "AddOne",
        ["a"],
        ["b"],
        [
            h.make_node("Constant", [], ["one"], value=h.make_tensor("one", T.FLOAT, [], [1.0])),
            h.make_node("Add", ["a", "one"], ["b"]),
        ],
        opset_imports=[h.make_opsetid("", 17)],
    )
    then_g = h.make_graph(
        [h.make_node("Mul", ["r", "r"], ["t"], name="then/Mul")],
        "then",
        [],
        [vi("t", T.FLOAT, [2])],
    )
    else_g = h.make_graph(
        [h.make_node("Neg", ["r"], ["e"], name="else/Neg")], "else", [], [vi("e", T.FLOAT, [2])]
    )
    nodes = [
        h.make_node("AddOne", ["x"], ["p"], name="plus", domain="custom"),
        h.make_node("Relu", ["p"], ["r"], name="relu"),
        h.make_node("If", ["flag"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    proto = make_model(
        nodes,
        [vi("x", T.FLOAT, [2]), vi("flag", T.BOOL, [])],
        [vi("y", T.FLOAT, [2])],
        functions=[add_one],
        extra_opsets={"custom": 1},
    )
    model = ir.from_proto(proto)
    # the If reads r from inside its branches: r must be a part input for the part to separate
    with pytest.raises(InputError, match="graph input 'x' reaches an output"):
        extract(model, ["flag"], ["y"])
    tail = extract(model, ["r", "flag"], ["y"])
    assert [n.name for n in tail.graph] == ["if"] and not tail.functions
    head = extract(model, ["x"], ["r"])
    assert [n.name for n in head.graph] == ["plus", "relu"] and len(head.functions) == 1
    feeds = {"x": np.array([-3.0, 2.0], np.float32), "flag": np.array(True)}
    ref = ort_run(model, feeds)["y"]
    r = ort_run(head, {"x": feeds["x"]})["r"]
    np.testing.assert_array_equal(ort_run(tail, {"r": r, "flag": feeds["flag"]})["y"], ref)


def test_extract_from_external_data_keeps_it_external(tmp_path):
    model = ir.from_proto(_conv_net())
    src = tmp_path / "src" / "net.onnx"
    src.parent.mkdir()
    model_io.save(model, src, external_data=True, size_threshold_bytes=100)
    loaded = model_io.load(src)
    weight = loaded.graph.initializers["c2.w"].const_value
    assert isinstance(weight, ir.ExternalTensor)
    part = extract(loaded, ["/c1/Relu_output_0"], ["/c2/Conv_output_0"])
    assert part.graph.initializers["c2.w"].const_value is weight  # still the lazy external tensor
    out = tmp_path / "part.onnx"
    written = model_io.save(part, out)
    assert [p.name for p in written] == ["part.onnx", "part.onnx.data"]
    assert (tmp_path / "part.onnx.data").stat().st_size >= weight.nbytes
    saved = onnx.load(out, load_external_data=False)
    assert saved.graph.initializer[0].data_location == T.EXTERNAL and saved.ir_version == 8
    feeds, expected = slice_reference(loaded, part, FEEDS)
    np.testing.assert_array_equal(
        ort_run(str(out), feeds)["/c2/Conv_output_0"], expected["/c2/Conv_output_0"]
    )


# -- split ---------------------------------------------------------------------------------------
def _detector_like() -> onnx.ModelProto:
    """MatMul head, then NonZero selection reading a shape scalar of the head and a graph input."""
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["feat"], name="/head/MatMul"),
        h.make_node("Sigmoid", ["feat"], ["scores"], name="/head/Sigmoid"),
        h.make_node(
            "Constant",
            [],
            ["i1"],
            name="/post/i1",
            value=onnx.numpy_helper.from_array(np.array(1, np.int64)),
        ),
        h.make_node("Shape", ["scores"], ["shp"], name="/post/Shape"),
        h.make_node("Gather", ["shp", "i1"], ["ncols"], name="/post/Gather"),
        h.make_node(
            "Constant",
            [],
            ["thr"],
            name="/post/thr",
            value=onnx.numpy_helper.from_array(np.array(0.5, np.float32)),
        ),
        h.make_node("Greater", ["scores", "thr"], ["mask"], name="/post/Greater"),
        h.make_node("NonZero", ["mask"], ["nz"], name="/post/NonZero"),
        h.make_node("Transpose", ["nz"], ["nzt"], name="/post/Transpose", perm=[1, 0]),
        h.make_node("Gather", ["nzt", "i1"], ["col"], name="/post/GatherCol", axis=1),
        h.make_node("Flatten", ["scores"], ["flat"], name="/post/Flatten", axis=0),
        h.make_node("Mul", ["col", "ncols"], ["lin"], name="/post/Mul"),
        h.make_node("Squeeze", ["flat", "i0"], ["flat1"], name="/post/Squeeze"),
        h.make_node("Gather", ["flat1", "col"], ["picked"], name="/post/Pick"),
        h.make_node("Add", ["picked", "bias"], ["dets"], name="/post/Add"),
        h.make_node("Add", ["lin", "lin"], ["lin2"], name="/post/Lin2"),
    ]
    return make_model(
        nodes,
        [vi("x", T.FLOAT, [1, 8]), vi("bias", T.FLOAT, [])],
        [vi("scores", T.FLOAT, [1, 6]), vi("dets", T.FLOAT, ["k"]), vi("lin2", T.INT64, ["k"])],
        {"W": rng.standard_normal((8, 6)).astype(np.float32), "i0": np.array([0], np.int64)},
    )


def _feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((1, 8)).astype(np.float32), "bias": np.array(0.25, np.float32)}


def test_split_contract_and_exact_reproduction(tmp_path):
    model = ir.from_proto(_detector_like())
    # the minimum cut: 'scores' (24 bytes) instead of the 3 tensors crossing into NonZero's region
    assert split(model).boundary == ["scores"] and split(model).total_bytes == 24
    parts = split(model, minimize=False)  # the contract with shape scalars crossing
    assert parts.source == "auto" and parts.hostile[0]["node"] == "/post/NonZero"
    assert parts.boundary == ["ncols", "mask", "flat1"]
    head, tail = parts.head, parts.tail
    assert "NonZero" not in {n.op_type for n in head.graph}
    assert [v.name for v in head.graph.inputs] == ["x"]  # bias is read only by the tail
    # boundary names on both sides; the tail keeps the original input bias under its name
    assert [v.name for v in head.graph.outputs] == ["scores", "ncols", "mask", "flat1"]
    assert [v.name for v in tail.graph.inputs] == ["ncols", "mask", "flat1", "bias"]
    # the union of the outputs is the original outputs
    assert {v.name for v in tail.graph.outputs} | {"scores"} == {"scores", "dets", "lin2"}
    # constants never cross: one read on both sides is duplicated, others go where they are read
    assert "/post/i1" in {n.name for n in head.graph} and "/post/i1" in {n.name for n in tail.graph}
    assert "/post/thr" in {n.name for n in head.graph} and "/post/thr" not in {
        n.name for n in tail.graph
    }
    assert not tail.graph.initializers and list(head.graph.initializers) == ["W", "i0"]
    assert all(v.type is not None for v in tail.graph.inputs)
    assert head.ir_version == tail.ir_version == 9
    runner = SplitRunner([head, tail], outputs=parts.outputs)
    for seed in range(4):  # different numbers of selected entries
        feeds = _feeds(seed)
        ref = ort_run(model, feeds)
        got = runner.run(feeds)
        assert list(got) == ["scores", "dets", "lin2"]
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key])
    # manifest → files → runner built from the manifest
    model_io.save(head, tmp_path / "h.onnx")
    model_io.save(tail, tmp_path / "t.onnx")
    data = parts.manifest(files={"head": "h.onnx", "tail": "t.onnx"})
    write_manifest(tmp_path / "m.json", data)
    loaded = json.loads((tmp_path / "m.json").read_text())
    assert loaded["outputs"] == ["scores", "dets", "lin2"]
    assert [b["name"] for b in loaded["boundary"]] == ["ncols", "mask", "flat1"]
    assert loaded["boundary"][1] == {"name": "mask", "dtype": "bool", "shape": [1, 6], "bytes": 6}
    assert [(p["name"], p["produces"]) for p in loaded["parts"]] == [
        ("head", ["scores"]),
        ("tail", ["dets", "lin2"]),
    ]
    assert loaded["parts"][1]["inputs"][-1] == {"name": "bias", "dtype": "float32", "shape": []}
    got = SplitRunner.from_manifest(tmp_path / "m.json").run(_feeds(7))
    ref = ort_run(model, _feeds(7))
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key])


def test_split_at_a_user_boundary_and_refusals():
    model = ir.from_proto(_detector_like())
    parts = split(model, ["mask", "ncols", "flat1"])
    assert (
        parts.source == "user" and parts.boundary == ["ncols", "mask", "flat1"] and not parts.notes
    )
    with pytest.raises(InputError, match="the tail also reads 'ncols'"):
        split(model, ["mask", "flat1"])
    with pytest.raises(
        InputError, match=r"boundary tensor 'mask2': no such tensor .*did you mean 'mask'"
    ):
        split(model, ["mask2"])
    # a user boundary that leaves NonZero in the head is accepted, with a note
    parts = split(model, ["nz", "ncols", "flat1"])
    assert any("still contains" in n and "NonZero" in n for n in parts.notes)


def test_split_refuses_a_model_without_post_processing():
    model = ir.from_proto(_conv_net())
    with pytest.raises(NothingToSplit, match="no data-dependent or NPU-hostile op"):
        split(model)


def test_dead_hostile_nodes_do_not_split():
    proto = _conv_net()
    proto.graph.node.append(
        h.make_node("NonZero", ["/pool/Out"], ["dead_nz"], name="/dead/NonZero")
    )
    with pytest.raises(NothingToSplit):
        split(ir.from_proto(proto))


def test_a_function_call_holding_nonzero_goes_to_the_tail_with_its_function():
    select = h.make_function(
        "custom",
        "Select",
        ["s"],
        ["n"],
        [
            h.make_node("NonZero", ["s"], ["nz"]),
            h.make_node("ReduceSum", ["nz"], ["n"], keepdims=0),
        ],
        opset_imports=[h.make_opsetid("", 17)],
    )
    scale = h.make_function(
        "custom",
        "Scale",
        ["a"],
        ["b"],
        [h.make_node("Add", ["a", "a"], ["b"])],
        opset_imports=[h.make_opsetid("", 17)],
    )
    nodes = [
        h.make_node("Scale", ["x"], ["s"], name="scale", domain="custom"),
        h.make_node("Select", ["s"], ["n"], name="select", domain="custom"),
    ]
    proto = make_model(
        nodes,
        [vi("x", T.FLOAT, [4])],
        [vi("n", T.INT64, [])],
        functions=[select, scale],
        extra_opsets={"custom": 1},
    )
    model = ir.from_proto(proto)
    parts = split(model)
    assert (
        parts.hostile[0]["node"] == "select"
        and "function body contains NonZero" in parts.hostile[0]["reason"]
    )
    assert [k[1] for k in parts.head.functions] == ["Scale"] and [
        k[1] for k in parts.tail.functions
    ] == ["Select"]
    feeds = {"x": np.array([1.0, 0.0, 2.0, 0.0], np.float32)}
    got = SplitRunner([parts.head, parts.tail], outputs=["n"]).run(feeds)
    np.testing.assert_array_equal(got["n"], ort_run(model, feeds)["n"])
