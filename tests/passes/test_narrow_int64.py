"""narrow-int64: only provably-fitting int64 groups become int32; int64 stays where ONNX wants it."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.passes.narrow_int64 import NarrowInt64
from surgery.testing import make_model, ort_run, vi

X = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)


def _shape_path(x_shape) -> onnx.ModelProto:
    """Shape -> Gather -> Mul -> Unsqueeze -> Concat -> Reshape, plus a Gather with constant indices."""
    return make_model(
        [
            h.make_node("Shape", ["x"], ["shp"], name="/shape"),
            h.make_node("Gather", ["shp", "i1"], ["d1"], axis=0, name="/d1"),
            h.make_node("Gather", ["shp", "i2"], ["d2"], axis=0, name="/d2"),
            h.make_node("Mul", ["d1", "d2"], ["prod"], name="/prod"),
            h.make_node("Unsqueeze", ["prod", "ax0"], ["prod1"], name="/unsq"),
            h.make_node("Concat", ["minus1", "prod1"], ["new_shape"], axis=0, name="/concat"),
            h.make_node("Reshape", ["x", "new_shape"], ["flat"], name="/reshape"),
            h.make_node("Gather", ["flat", "cols"], ["y"], axis=1, name="/pick"),
        ],
        [vi("x", T.FLOAT, x_shape)],
        [vi("y", T.FLOAT, [2, 3])],
        {
            "i1": np.array(1, np.int64),
            "i2": np.array(2, np.int64),
            "ax0": np.array([0], np.int64),
            "minus1": np.array([-1], np.int64),
            "cols": np.array([0, 5, 11], np.int64),
        },
        opset=17,
    )


def test_shape_path_and_constant_indices_become_int32():
    proto = _shape_path([2, 3, 4])
    expected = ort_run(proto, {"x": X})["y"]
    model = ir.from_proto(proto)
    result = NarrowInt64()(model)
    assert result.stats == {"values": 9, "constants": 4, "casts_to_int64": 1, "casts_to_int32": 1}
    by_name = {n.name: n for n in model.graph}
    # Shape's output is int64 by schema: a Cast to int32 follows it; Reshape's shape is int64 by schema: a Cast back
    assert by_name["/shape"].outputs[0].dtype == ir.DataType.INT64
    assert by_name["shp/to_int32"].op_type == "Cast"
    assert by_name["/reshape"].inputs[1].producer().name == "new_shape/to_int64"
    assert by_name["/concat"].outputs[0].dtype == ir.DataType.INT32
    assert model.graph.initializers["cols"].const_value.dtype == ir.DataType.INT32
    assert (
        model.graph.initializers["ax0"].const_value.dtype == ir.DataType.INT64
    )  # Unsqueeze's axes is int64 by schema
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], expected)
    assert not NarrowInt64()(model).modified


def test_dynamic_dims_are_not_proven_and_stay_int64():
    model = ir.from_proto(_shape_path(["n", 3, 4]))
    result = NarrowInt64()(model)
    # the shape path depends on a dim with no bound and stays int64 (no Cast); the constant
    # Gather indices (i1, i2, cols) are proven and narrow on their own
    assert result.stats == {"values": 3, "constants": 3}
    assert [n.op_type for n in model.graph].count("Cast") == 0
    assert model.graph.initializers["i1"].const_value.dtype == ir.DataType.INT32
    assert model.graph.initializers["minus1"].const_value.dtype == ir.DataType.INT64
    np.testing.assert_array_equal(
        ort_run(model, {"x": X})["y"], ort_run(_shape_path(["n", 3, 4]), {"x": X})["y"]
    )


def test_out_of_range_values_and_interfaces_stay_int64():
    proto = make_model(
        [
            h.make_node("Add", ["big", "k"], ["s"], name="/add"),
            h.make_node("Add", ["n", "k"], ["m"], name="/add_input"),
            h.make_node("Cast", ["f"], ["fi"], to=T.INT64, name="/from_float"),
            h.make_node("Add", ["fi", "k"], ["g"], name="/add_float"),
        ],
        [vi("n", T.INT64, [1]), vi("f", T.FLOAT, [1])],
        [vi("s", T.INT64, [1]), vi("m", T.INT64, [1]), vi("g", T.INT64, [1])],
        {"big": np.array([3_000_000_000], np.int64), "k": np.array([1], np.int64)},
        opset=17,
    )
    result = NarrowInt64()(ir.from_proto(proto))
    assert (
        not result.modified
    )  # 3e9 does not fit; graph inputs/outputs keep their type; float casts are unbounded


@pytest.mark.torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_index_arithmetic(dynamo):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def forward(self, x, idx):
            b, c, hh, w = x.shape
            y = x.reshape(b, c, hh * w)
            y = y[:, :, torch.arange(0, hh * w, 2)]
            z = y.gather(2, idx.expand(b, c, 3))
            return z.flatten(1), torch.argmax(y, dim=-1) + 1

    x, idx = torch.randn(2, 3, 4, 4), torch.tensor([[[0, 2, 5]]])
    if dynamo:
        proto = torch.onnx.export(
            Net(), (x, idx), dynamo=True, opset_version=18, optimize=False, verbose=False
        ).model_proto
    else:
        f = io.BytesIO()
        torch.onnx.export(Net(), (x, idx), f, dynamo=False, opset_version=17)
        proto = onnx.load_from_string(f.getvalue())
    feeds = {proto.graph.input[0].name: x.numpy(), proto.graph.input[1].name: idx.numpy()}
    expected = ort_run(proto, feeds)
    model = ir.from_proto(proto)
    result = NarrowInt64()(model)
    assert result.stats["values"] >= 5
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    got = ort_run(model, feeds)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])
        assert got[k].dtype == expected[k].dtype
    assert not NarrowInt64()(model).modified


# ---- If/Loop/Scan bodies and model-local functions ----------------------------------------------
def _const(name: str, value, dtype=np.int64) -> onnx.NodeProto:
    return h.make_node(
        "Constant",
        [],
        [name],
        value=onnx.numpy_helper.from_array(np.array(value, dtype), name),
        name=f"/{name}",
    )


def _graph_of(model: ir.Model, owner: str, attr: str) -> ir.Graph:
    node = next(n for g in _all_graphs(model) for n in g if n.name == owner)
    return node.attributes[attr].as_graph()


def _all_graphs(model: ir.Model):
    from surgery.graph import iter_graphs

    return list(iter_graphs(model))


def _by_name(graph) -> dict[str, ir.Node]:
    return {n.name: n for n in graph}


def _kept_int64(node: ir.Node) -> bool:
    """The node's first output was not narrowed (a Constant still holds an int64 tensor)."""
    out = node.outputs[0]
    if node.op_type == "Constant":
        return node.attributes["value"].as_tensor().dtype == ir.DataType.INT64
    return out.dtype in (None, ir.DataType.INT64)  # values without value_info stay untyped


def _casts(graph) -> list[ir.Node]:
    return [n for n in graph if n.op_type == "Cast"]


def _if_model() -> onnx.ModelProto:
    """Both If branches compute Gather indices with int64 arithmetic on constants and Shape(x)."""
    then_graph = h.make_graph(
        [
            h.make_node(
                "Shape", ["x"], ["t_shp"], name="/then/shape"
            ),  # x: static [2, 3, 4], outer scope
            _const("t_two", 2),
            h.make_node("Gather", ["t_shp", "t_two"], ["t_last"], axis=0, name="/then/last"),  # 4
            _const("t_one", 1),
            h.make_node("Mul", ["t_last", "t_one"], ["t_m"], name="/then/mul"),
            _const("t_offs", [1, 3]),
            h.make_node("Sub", ["t_m", "t_offs"], ["t_idx"], name="/then/sub"),  # [3, 1]
            h.make_node("Gather", ["x", "t_idx"], ["t_out"], axis=2, name="/then/pick"),
        ],
        "then_branch",
        [],
        [vi("t_out", T.FLOAT, [2, 3, 2])],
    )
    else_graph = h.make_graph(
        [
            _const("e_base", [0, 1]),
            _const("e_step", 2),
            h.make_node("Mul", ["e_base", "e_step"], ["e_m"], name="/else/mul"),
            h.make_node(
                "Add", ["e_m", "k"], ["e_idx"], name="/else/add"
            ),  # k: outer-scope initializer [1]
            h.make_node("Gather", ["x", "e_idx"], ["e_out"], axis=2, name="/else/pick"),  # [1, 3]
        ],
        "else_branch",
        [],
        [vi("e_out", T.FLOAT, [2, 3, 2])],
    )
    return make_model(
        [
            h.make_node(
                "If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph, name="/if"
            )
        ],
        [vi("x", T.FLOAT, [2, 3, 4]), vi("c", T.BOOL, [])],
        [vi("y", T.FLOAT, [2, 3, 2])],
        {"k": np.array([1], np.int64)},
        opset=17,
    )


def _parity(proto: onnx.ModelProto, model: ir.Model, feeds_list) -> None:
    for feeds in feeds_list:
        expected, got = ort_run(proto, feeds), ort_run(model, feeds)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k])
            assert got[k].dtype == expected[k].dtype


def test_if_branches_are_narrowed_at_their_own_level():
    proto = _if_model()
    model = ir.from_proto(proto)
    result = NarrowInt64()(model)
    assert result.modified
    then_g, else_g = _graph_of(model, "/if", "then_branch"), _graph_of(model, "/if", "else_branch")
    t, e = _by_name(then_g), _by_name(else_g)
    # then: Shape's output is int64 by schema -> one Cast to int32 after it; the rest is int32
    assert [c.name for c in _casts(then_g)] == ["t_shp/to_int32"]
    assert t["/then/shape"].outputs[0].dtype == ir.DataType.INT64
    for name in ("/then/last", "/then/mul", "/then/sub", "/t_two", "/t_one", "/t_offs"):
        assert t[name].outputs[0].dtype == ir.DataType.INT32, name
    assert t["/then/pick"].inputs[1].dtype == ir.DataType.INT32
    # else: k is an outer-scope initializer: it keeps int64 and the branch reads it through a Cast
    assert [c.name for c in _casts(else_g)] == ["k/to_int32"]
    assert model.graph.initializers["k"].const_value.dtype == ir.DataType.INT64
    for name in ("/else/mul", "/else/add", "/e_base", "/e_step"):
        assert e[name].outputs[0].dtype == ir.DataType.INT32, name
    assert [n.op_type for n in model.graph] == ["If"]  # the main graph has nothing to narrow
    assert result.stats == {"values": 10, "constants": 5, "casts_to_int32": 2, "bodies": 2}
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    _parity(proto, model, [{"x": X, "c": np.array(True)}, {"x": X, "c": np.array(False)}])
    assert not NarrowInt64()(model).modified


def _loop_model() -> onnx.ModelProto:
    """A Loop (trip count 3) whose body picks a column with int64 index math on its counter, an outer
    value (``last``, computed in the main graph from Shape(x)) and constants, and carries an int64 counter."""
    body = h.make_graph(
        [
            _const("b_one", 1),
            h.make_node("Add", ["i", "b_one"], ["b_col"], name="/body/col"),  # 1, 2, 3
            h.make_node("Gather", ["x", "b_col"], ["b_sel"], axis=2, name="/body/sel"),
            _const("b_two", 2),
            h.make_node(
                "Sub", ["last", "b_two"], ["b_lc"], name="/body/last_col"
            ),  # outer value: 4 - 2
            h.make_node("Gather", ["x", "b_lc"], ["b_sel2"], axis=2, name="/body/sel2"),
            h.make_node("Add", ["b_sel", "b_sel2"], ["b_both"], name="/body/both"),
            h.make_node("Add", ["acc", "b_both"], ["acc_out"], name="/body/acc"),
            _const("b_step", 1),
            h.make_node(
                "Add", ["cnt", "b_step"], ["cnt_out"], name="/body/cnt"
            ),  # carried: stays int64
            h.make_node("Identity", ["cond_in"], ["cond_out"], name="/body/cond"),
        ],
        "body",
        [
            vi("i", T.INT64, []),
            vi("cond_in", T.BOOL, []),
            vi("acc", T.FLOAT, [2, 3]),
            vi("cnt", T.INT64, [1]),
        ],
        [vi("cond_out", T.BOOL, []), vi("acc_out", T.FLOAT, [2, 3]), vi("cnt_out", T.INT64, [1])],
    )
    return make_model(
        [
            h.make_node("Shape", ["x"], ["shp"], name="/shape"),
            h.make_node("Gather", ["shp", "i2"], ["last"], axis=0, name="/last"),
            h.make_node(
                "Loop",
                ["trip", "true", "acc0", "cnt0"],
                ["acc_final", "cnt_final"],
                body=body,
                name="/loop",
            ),
        ],
        [vi("x", T.FLOAT, [2, 3, 4])],
        [vi("acc_final", T.FLOAT, [2, 3]), vi("cnt_final", T.INT64, [1])],
        {
            "i2": np.array(2, np.int64),
            "trip": np.array(3, np.int64),
            "true": np.array(True),
            "acc0": np.zeros((2, 3), np.float32),
            "cnt0": np.array([0], np.int64),
        },
        opset=17,
    )


def test_loop_body_is_narrowed_and_its_boundary_kept():
    proto = _loop_model()
    model = ir.from_proto(proto)
    result = NarrowInt64()(model)
    body = _graph_of(model, "/loop", "body")
    b = _by_name(body)
    # formal inputs/outputs of the body keep their types
    assert [v.dtype for v in body.inputs] == [
        ir.DataType.INT64,
        ir.DataType.BOOL,
        ir.DataType.FLOAT,
        ir.DataType.INT64,
    ]
    assert body.outputs[2].dtype == ir.DataType.INT64
    assert _kept_int64(b["/body/cnt"]) and _kept_int64(b["/b_step"])
    # the counter (range [0, 3) from the constant trip count) and the outer `last` are read through Casts
    assert sorted(c.name for c in _casts(body)) == ["i/to_int32", "last/to_int32"]
    for name in ("/body/col", "/b_one", "/body/last_col", "/b_two"):
        assert b[name].outputs[0].dtype == ir.DataType.INT32, name
    # the main graph: `last` is read by the body and stays int64; the Loop's inputs stay int64
    main = _by_name(model.graph)
    assert main["/last"].outputs[0].dtype == ir.DataType.INT64
    assert model.graph.initializers["trip"].const_value.dtype == ir.DataType.INT64
    assert model.graph.initializers["cnt0"].const_value.dtype == ir.DataType.INT64
    assert (
        model.graph.initializers["i2"].const_value.dtype == ir.DataType.INT32
    )  # a Gather index of its own
    assert result.stats["bodies"] == 1 and result.stats["casts_to_int32"] == 2
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    _parity(proto, model, [{"x": X}])
    assert not NarrowInt64()(model).modified


def test_loop_counter_without_a_proven_trip_count_stays_int64():
    proto = _loop_model()
    proto.graph.initializer.remove(next(t for t in proto.graph.initializer if t.name == "trip"))
    proto.graph.input.append(vi("trip", T.INT64, []))
    model = ir.from_proto(proto)
    NarrowInt64()(model)
    body = _graph_of(model, "/loop", "body")
    b = _by_name(body)
    assert [c.name for c in _casts(body)] == ["last/to_int32"]
    assert _kept_int64(b["/body/col"]) and _kept_int64(b["/b_one"])  # i + 1: i is unbounded
    assert b["/body/last_col"].outputs[0].dtype == ir.DataType.INT32
    _parity(proto, model, [{"x": X, "trip": np.array(2, np.int64)}])
    assert not NarrowInt64()(model).modified


def test_scan_slices_take_the_scan_inputs_range():
    """A Scan over constant int64 columns: each slice lies in the scan input's range, so the body's
    index arithmetic on it narrows; a slice of an unbounded graph input does not."""
    body = h.make_graph(
        [
            _const("s_one", 1),
            h.make_node("Add", ["j", "s_one"], ["s_col"], name="/scan/col"),
            h.make_node("Gather", ["x", "s_col"], ["s_sel"], axis=2, name="/scan/sel"),
            h.make_node("Add", ["acc", "s_sel"], ["acc_out"], name="/scan/acc"),
            _const("s_two", 2),
            h.make_node(
                "Mul", ["u", "s_two"], ["s_u2"], name="/scan/u2"
            ),  # u: slice of an unbounded input
            h.make_node("Gather", ["x", "s_u2"], ["s_sel2"], axis=2, name="/scan/sel2"),
            h.make_node("Add", ["acc_out", "s_sel2"], ["acc_out2"], name="/scan/acc2"),
        ],
        "body",
        [vi("acc", T.FLOAT, [2, 3]), vi("j", T.INT64, []), vi("u", T.INT64, [])],
        [vi("acc_out2", T.FLOAT, [2, 3])],
    )
    proto = make_model(
        [
            h.make_node(
                "Scan",
                ["acc0", "cols", "us"],
                ["acc_final"],
                body=body,
                num_scan_inputs=2,
                name="/scan",
            )
        ],
        [vi("x", T.FLOAT, [2, 3, 4]), vi("us", T.INT64, [3])],
        [vi("acc_final", T.FLOAT, [2, 3])],
        {"acc0": np.zeros((2, 3), np.float32), "cols": np.array([0, 2, 1], np.int64)},
        opset=17,
    )
    model = ir.from_proto(proto)
    result = NarrowInt64()(model)
    body_g = _graph_of(model, "/scan", "body")
    b = _by_name(body_g)
    assert [c.name for c in _casts(body_g)] == ["j/to_int32"]
    assert (
        b["/scan/col"].outputs[0].dtype == ir.DataType.INT32
        and b["/s_one"].outputs[0].dtype == ir.DataType.INT32
    )
    assert _kept_int64(b["/scan/u2"]) and _kept_int64(b["/s_two"])
    assert [v.dtype for v in body_g.inputs] == [
        ir.DataType.FLOAT,
        ir.DataType.INT64,
        ir.DataType.INT64,
    ]
    assert model.graph.initializers["cols"].const_value.dtype == ir.DataType.INT64
    assert result.stats["bodies"] == 1
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    _parity(proto, model, [{"x": X, "us": np.array([1, 0, 1], np.int64)}])
    assert not NarrowInt64()(model).modified


def _function_model(shapes=((2, 3, 4),)) -> onnx.ModelProto:
    """A model-local function doing Shape -> Gather -> Add -> Concat -> Reshape, called once per shape."""
    fn = h.make_function(
        "custom.fn",
        "FoldLast",
        ["X", "off"],
        ["Y", "off_out"],
        [
            h.make_node("Shape", ["X"], ["s"], name="/fn/shape"),
            _const("f_last", [2]),
            h.make_node("Gather", ["s", "f_last"], ["d"], axis=0, name="/fn/dim"),
            h.make_node("Add", ["d", "d"], ["dd"], name="/fn/double"),
            _const("f_minus1", [-1]),
            h.make_node("Concat", ["f_minus1", "dd"], ["new_shape"], axis=0, name="/fn/concat"),
            h.make_node("Reshape", ["X", "new_shape"], ["Y"], name="/fn/reshape"),
            _const("f_one", [1]),
            h.make_node(
                "Add", ["off", "f_one"], ["off_out"], name="/fn/off"
            ),  # boundary in and out: int64
        ],
        opset_imports=[h.make_opsetid("", 17)],
    )
    nodes, inputs, outputs = [], [], []
    for j, shape in enumerate(shapes):
        folded = [int(np.prod(shape)) // (2 * shape[-1]), 2 * shape[-1]]
        nodes.append(
            h.make_node(
                "FoldLast",
                [f"x{j}", "off"],
                [f"y{j}", f"o{j}"],
                domain="custom.fn",
                name=f"/call{j}",
            )
        )
        inputs.append(vi(f"x{j}", T.FLOAT, list(shape)))
        outputs += [vi(f"y{j}", T.FLOAT, folded), vi(f"o{j}", T.INT64, [1])]
    return make_model(
        nodes,
        inputs,
        outputs,
        {"off": np.array([5], np.int64)},
        opset=17,
        functions=[fn],
        extra_opsets={"custom.fn": 1},
    )


def test_function_body_is_narrowed_inside_its_int64_boundary():
    proto = _function_model()
    model = ir.from_proto(proto)
    result = NarrowInt64()(model)
    fn = model.functions[("custom.fn", "FoldLast", "")]
    f = _by_name(fn)
    assert sorted(c.name for c in _casts(fn)) == ["new_shape/to_int64", "s/to_int32"]
    assert f["/fn/reshape"].inputs[1].producer().name == "new_shape/to_int64"
    for name in ("/fn/dim", "/fn/double", "/fn/concat", "/f_last", "/f_minus1"):
        assert f[name].outputs[0].dtype == ir.DataType.INT32, name
    # the boundary: off (range [5, 5] from the call) is read through a Cast only if that pays; here its
    # Add feeds the formal output off_out, so the whole group keeps int64
    assert _kept_int64(f["/fn/off"]) and _kept_int64(f["/f_one"])
    assert model.graph.initializers["off"].const_value.dtype == ir.DataType.INT64
    assert result.stats == {
        "values": 5,
        "constants": 2,
        "casts_to_int64": 1,
        "casts_to_int32": 1,
        "bodies": 1,
    }
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    x0 = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    _parity(proto, model, [{"x0": x0}])
    assert not NarrowInt64()(model).modified


def test_function_called_with_different_shapes_is_not_narrowed():
    # the calls disagree on X's shape, so Shape(X) is unproven inside the body: only constants narrow
    proto = _function_model(shapes=((2, 3, 4), (1, 2, 6)))
    model = ir.from_proto(proto)
    NarrowInt64()(model)
    fn = model.functions[("custom.fn", "FoldLast", "")]
    f = _by_name(fn)
    assert _casts(fn) == []
    for name in ("/fn/dim", "/fn/double", "/fn/concat", "/f_minus1"):
        assert _kept_int64(f[name]), name
    assert f["/f_last"].outputs[0].dtype == ir.DataType.INT32  # a Gather index: proven on its own
    feeds = {"x0": np.ones((2, 3, 4), np.float32), "x1": np.ones((1, 2, 6), np.float32)}
    _parity(proto, model, [feeds])
    assert not NarrowInt64()(model).modified


def test_unproven_value_read_across_the_boundary_keeps_the_body_int64():
    then_graph = h.make_graph(
        [
            _const("t_one", [1]),
            h.make_node(
                "Add", ["n", "t_one"], ["t_idx"], name="/then/add"
            ),  # n: an int64 graph input, unbounded
            h.make_node("Gather", ["x", "t_idx"], ["t_out"], axis=2, name="/then/pick"),
        ],
        "then_branch",
        [],
        [vi("t_out", T.FLOAT, [2, 3, 1])],
    )
    else_graph = h.make_graph(
        [h.make_node("Gather", ["x", "n"], ["e_out"], axis=2, name="/else/pick")],
        "else_branch",
        [],
        [vi("e_out", T.FLOAT, [2, 3, 1])],
    )
    proto = make_model(
        [
            h.make_node(
                "If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph, name="/if"
            )
        ],
        [vi("x", T.FLOAT, [2, 3, 4]), vi("c", T.BOOL, []), vi("n", T.INT64, [1])],
        [vi("y", T.FLOAT, [2, 3, 1])],
        opset=17,
    )
    model = ir.from_proto(proto)
    result = NarrowInt64()(model)
    assert not result.modified
    t = _by_name(_graph_of(model, "/if", "then_branch"))
    assert _kept_int64(t["/then/add"]) and _kept_int64(t["/t_one"])
    assert "Cast" not in [n.op_type for g in _all_graphs(model) for n in g]


def test_nested_bodies_read_outer_values_through_their_own_casts():
    """An If inside a Loop body reads the body's value and the main graph's: both stay int64 where defined."""
    inner_then = h.make_graph(
        [
            h.make_node(
                "Add", ["lc", "bias"], ["it_idx"], name="/inner/add"
            ),  # lc: Loop body, bias: main graph
            h.make_node("Gather", ["x", "it_idx"], ["it_out"], axis=2, name="/inner/pick"),
        ],
        "inner_then",
        [],
        [vi("it_out", T.FLOAT, [2, 3])],
    )
    inner_else = h.make_graph(
        [h.make_node("Gather", ["x", "lc"], ["ie_out"], axis=2, name="/inner/pick_else")],
        "inner_else",
        [],
        [vi("ie_out", T.FLOAT, [2, 3])],
    )
    body = h.make_graph(
        [
            _const("b_zero", 0),
            h.make_node(
                "Add", ["i", "b_zero"], ["lc"], name="/body/lc"
            ),  # read by the nested If: stays int64
            h.make_node(
                "If",
                ["flag"],
                ["sel"],
                then_branch=inner_then,
                else_branch=inner_else,
                name="/body/if",
            ),
            h.make_node("Add", ["acc", "sel"], ["acc_out"], name="/body/acc"),
            h.make_node("Identity", ["cond_in"], ["cond_out"], name="/body/cond"),
        ],
        "body",
        [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("acc", T.FLOAT, [2, 3])],
        [vi("cond_out", T.BOOL, []), vi("acc_out", T.FLOAT, [2, 3])],
    )
    proto = make_model(
        [h.make_node("Loop", ["trip", "", "acc0"], ["acc_final"], body=body, name="/loop")],
        [vi("x", T.FLOAT, [2, 3, 4]), vi("flag", T.BOOL, [])],
        [vi("acc_final", T.FLOAT, [2, 3])],
        {
            "trip": np.array(3, np.int64),
            "bias": np.array(1, np.int64),
            "acc0": np.zeros((2, 3), np.float32),
        },
        opset=17,
    )
    model = ir.from_proto(proto)
    result = NarrowInt64()(model)
    body_g = _graph_of(model, "/loop", "body")
    inner = _graph_of(model, "/body/if", "then_branch")
    assert _by_name(body_g)["/body/lc"].outputs[0].dtype == ir.DataType.INT64
    assert model.graph.initializers["bias"].const_value.dtype == ir.DataType.INT64
    assert sorted(c.name for c in _casts(inner)) == ["bias/to_int32", "lc/to_int32"]
    assert _by_name(inner)["/inner/add"].outputs[0].dtype == ir.DataType.INT32
    # the else branch reads lc straight into Gather's indices: a Cast alone would gain nothing
    assert _casts(_graph_of(model, "/body/if", "else_branch")) == []
    assert _casts(body_g) == [] and _kept_int64(
        _by_name(body_g)["/b_zero"]
    )  # bound to lc, which stays int64
    assert result.stats["bodies"] == 1
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    _parity(proto, model, [{"x": X, "flag": np.array(True)}, {"x": X, "flag": np.array(False)}])
    assert not NarrowInt64()(model).modified


@pytest.mark.parametrize("build", [_if_model, _loop_model, _function_model])
def test_gated_pipeline_run(build):
    import surgery

    proto = build()
    feeds = (
        {"x": X, "c": np.array(True)}
        if build is _if_model
        else ({"x0": X} if build is _function_model else {"x": X})
    )
    model, report = surgery.apply(
        ir.from_proto(proto), [NarrowInt64()], inputs=feeds, verify="each"
    )
    step = report.steps[0]
    assert step.modified
    assert step.checker == "ok", step
    assert step.ort.startswith("ok"), step
    assert step.parity_status == "ok", step
    assert model.ir_version == proto.ir_version
