"""Reachability, data-dependence and cut finding on small hand-written graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.analysis.cuts import (
    NothingToSplit,
    boundary_from_names,
    constant_nodes,
    postprocess_boundary,
    slice_between,
)
from surgery.analysis.dataflow import Dataflow, captured_values
from surgery.analysis.dependence import analyse
from surgery.analysis.views import node_graph, tensor_graph
from surgery.errors import InputError
from surgery.testing import make_model, vi


def _ir(proto: onnx.ModelProto) -> ir.Model:
    return ir.from_proto(proto)


def _const(name: str, array) -> onnx.NodeProto:
    return h.make_node(
        "Constant",
        [],
        [name],
        name=name,
        value=onnx.numpy_helper.from_array(np.asarray(array), name),
    )


def _if_model() -> ir.Model:
    then_g = h.make_graph(
        [h.make_node("Add", ["a", "w"], ["t"], name="then/Add")],
        "then",
        [],
        [vi("t", T.FLOAT, [2])],
    )
    else_g = h.make_graph(
        [h.make_node("Sub", ["a", "w"], ["e"], name="else/Sub")],
        "else",
        [],
        [vi("e", T.FLOAT, [2])],
    )
    nodes = [
        h.make_node("Relu", ["x"], ["a"], name="relu"),
        h.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        h.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
        h.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    return _ir(
        make_model(
            nodes,
            [vi("x", T.FLOAT, [2])],
            [vi("y", T.FLOAT, [2])],
            {"w": np.ones(2, np.float32), "zero": np.array(0.0, np.float32)},
        )
    )


def test_captured_values_make_the_if_a_consumer():
    model = _if_model()
    flow = Dataflow(model.graph)
    if_node = next(n for n in flow.nodes if n.op_type == "If")
    assert {v.name for v in captured_values(if_node)} == {"a", "w"}
    assert if_node in flow.consumers(flow.values["a"])
    assert {n.name for n in flow.ancestors([flow.values["y"]])} == {"relu", "sum", "gt", "if"}
    assert {n.name for n in flow.descendants([flow.values["a"]])} == {"if"}
    # the If's condition comes from input values: a data-dependent branch is hostile
    dep = analyse(model.graph)
    assert [x.node.name for x in dep.hostile] == ["if"]


def test_unknown_and_subgraph_only_names():
    flow = Dataflow(_if_model().graph)
    with pytest.raises(
        InputError, match=r"tensor 'zer0': no such tensor in the model \(did you mean 'zero'\?\)"
    ):
        flow.value("zer0")
    with pytest.raises(InputError, match="only inside a subgraph"):
        flow.value("t")


def _topk_model(k_from_data: bool) -> ir.Model:
    """TopK whose k is min(4, N) from the input shape, or from a reduction of input values."""
    if k_from_data:
        k_nodes = [
            h.make_node("ReduceMax", ["x"], ["mx"], name="kmax", keepdims=0),
            h.make_node("Cast", ["mx"], ["mxi"], name="kcast", to=T.INT64),
            h.make_node("Reshape", ["mxi", "one"], ["k"], name="kreshape"),
        ]
    else:
        k_nodes = [
            h.make_node("Shape", ["x"], ["shp"], name="shape"),
            h.make_node("Gather", ["shp", "idx1"], ["n"], name="gather_n"),
            h.make_node("Concat", ["four", "n"], ["cand"], name="concat", axis=0),
            h.make_node("ReduceMin", ["cand"], ["k"], name="kmin", keepdims=1),
        ]
    nodes = [*k_nodes, h.make_node("TopK", ["x", "k"], ["vals", "idx"], name="topk", axis=1)]
    return _ir(
        make_model(
            nodes,
            [vi("x", T.FLOAT, [1, "n"])],
            [vi("vals", T.FLOAT, [1, "k"]), vi("idx", T.INT64, [1, "k"])],
            {
                "one": np.array([1], np.int64),
                "idx1": np.array([1], np.int64),
                "four": np.array([4], np.int64),
            },
        )
    )


def test_topk_with_shape_derived_k_is_not_hostile():
    dep = analyse(_topk_model(k_from_data=False).graph)
    assert dep.hostile == []
    assert not dep.dynamic  # every shape becomes static once the input shape is fixed


def test_topk_with_data_dependent_k_is_hostile():
    model = _topk_model(k_from_data=True)
    dep = analyse(model.graph)
    assert [(x.node.name, x.node.op_type) for x in dep.hostile] == [("topk", "TopK")]
    assert "k is computed from input values" in dep.hostile[0].reason
    assert {v.name for v in dep.dynamic} == {"vals", "idx"}


def _nonzero_postprocess() -> onnx.ModelProto:
    """scores → NonZero-based selection; shape scalars of the head cross into the tail."""
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["feat"], name="/head/MatMul"),
        h.make_node("Sigmoid", ["feat"], ["scores"], name="/head/Sigmoid"),
        h.make_node("Shape", ["scores"], ["shp"], name="/post/Shape"),
        h.make_node(
            "Gather", ["shp", "i1"], ["ncols"], name="/post/Gather"
        ),  # a shape scalar of the head
        _const("/post/thr", np.array(0.5, np.float32)),
        h.make_node("Greater", ["scores", "/post/thr"], ["mask"], name="/post/Greater"),
        h.make_node("NonZero", ["mask"], ["nz"], name="/post/NonZero"),
        h.make_node("Transpose", ["nz"], ["nzt"], name="/post/Transpose", perm=[1, 0]),
        h.make_node("Gather", ["nzt", "i1"], ["col"], name="/post/GatherCol", axis=1),
        h.make_node("Flatten", ["scores"], ["flat"], name="/post/Flatten", axis=0),
        h.make_node("Mul", ["col", "ncols"], ["lin"], name="/post/Mul"),  # uses the shape scalar
        h.make_node("Squeeze", ["flat", "i0"], ["flat1"], name="/post/Squeeze"),
        h.make_node("Gather", ["flat1", "lin"], ["picked"], name="/post/Pick"),
        h.make_node(
            "Add", ["picked", "bias"], ["dets"], name="/post/Add"
        ),  # bias: a graph input read by the tail
    ]
    return make_model(
        nodes,
        [vi("x", T.FLOAT, [1, 8]), vi("bias", T.FLOAT, [])],
        [vi("scores", T.FLOAT, [1, 6]), vi("dets", T.FLOAT, ["k"])],
        {
            "W": rng.standard_normal((8, 6)).astype(np.float32),
            "i1": np.array(1, np.int64),
            "i0": np.array([0], np.int64),
        },
    )


def test_postprocess_boundary_by_reachability():
    model = _ir(_nonzero_postprocess())
    cut = postprocess_boundary(model.graph, minimize=False)
    assert [x.node.name for x in cut.hostile] == ["/post/NonZero"]
    # the shape scalar, the mask and the squeezed scores cross (not just NonZero's input);
    # the threshold constant does not: it is recomputed where needed
    assert cut.names == ["ncols", "mask", "flat1"] == [v.name for v in cut.naive]
    assert [v.name for v in cut.tail_inputs] == ["bias"]
    tail_names = {n.name for n in cut.tail_nodes}
    assert "/post/NonZero" in tail_names and "/post/Pick" in tail_names
    assert "/post/Gather" not in tail_names and "/post/thr" not in tail_names
    assert "/post/thr" in {n.name for n in constant_nodes(Dataflow(model.graph))}


def test_min_cut_moves_the_boundary_to_the_fewest_bytes():
    """The data-dependent region starts at NonZero, and the tensors crossing into it are the
    shape scalar, the mask and the squeezed scores (8 + 6 + 24 bytes, sized by shape inference);
    one tensor upstream, 'scores' [1, 6] float32 (24 bytes), separates the same region."""
    model = _ir(_nonzero_postprocess())
    naive = postprocess_boundary(model.graph, minimize=False, model=model)
    assert naive.names == ["ncols", "mask", "flat1"] and naive.bytes == 8 + 6 + 24
    cut = postprocess_boundary(model.graph, model=model)
    assert cut.names == ["scores"] and cut.bytes == 24 and cut.sizes[cut.tensors[0]] == 24
    assert [v.name for v in cut.naive] == ["ncols", "mask", "flat1"]
    tail_names = {n.name for n in cut.tail_nodes}
    assert {
        "/post/Shape",
        "/post/Gather",
        "/post/Greater",
        "/post/Flatten",
        "/post/NonZero",
    } <= tail_names
    assert "/head/Sigmoid" not in tail_names and "/head/MatMul" not in tail_names


def _wide_matmul_then_nonzero() -> onnx.ModelProto:
    """x [1, 2] → MatMul (to [1, 100]) → Relu → NonZero: cutting at x would cost 8 bytes, but the
    MatMul is the NPU's work; the cheapest cut after it is Relu's input or output (400 bytes)."""
    w = np.arange(200, dtype=np.float32).reshape(2, 100) - 100
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["feat"], name="mm"),
        h.make_node("Relu", ["feat"], ["act"], name="relu"),
        h.make_node("NonZero", ["act"], ["nz"], name="nz"),
    ]
    return make_model(nodes, [vi("x", T.FLOAT, [1, 2])], [vi("nz", T.INT64, [2, None])], {"W": w})


def test_min_cut_keeps_compute_ops_in_the_head_and_prefers_the_cut_nearest_the_tail():
    model = _ir(_wide_matmul_then_nonzero())
    cut = postprocess_boundary(model.graph, model=model)
    # 'feat' and 'act' both weigh 400 bytes: of equal cuts the one nearest the tail is taken
    assert cut.names == ["act"] and cut.bytes == 400
    assert {n.name for n in cut.tail_nodes} == {"nz"}


def test_user_boundary_must_separate():
    model = _ir(_nonzero_postprocess())
    with pytest.raises(
        InputError, match=r"the tail also reads 'ncols' from the head; add them to the boundary"
    ):
        boundary_from_names(model.graph, ["mask", "flat1"])
    with pytest.raises(
        InputError, match="'mask', 'ncols', 'flat1' are computed from another boundary tensor"
    ):
        boundary_from_names(model.graph, ["scores", "mask", "ncols", "flat1"])
    cut = boundary_from_names(model.graph, ["mask", "ncols", "flat1"])
    assert cut.names == ["ncols", "mask", "flat1"] and cut.hostile == []


def test_no_hostile_op_means_nothing_to_split():
    with pytest.raises(NothingToSplit, match="no data-dependent or NPU-hostile op"):
        postprocess_boundary(_topk_model(k_from_data=False).graph)


def test_slice_that_does_not_separate_names_the_leaking_input_and_a_path():
    model = _ir(_nonzero_postprocess())
    flow = Dataflow(model.graph)
    with pytest.raises(InputError, match=r"graph input 'bias' reaches an output .*bias → dets"):
        slice_between(flow, [flow.values["scores"]], [flow.values["dets"]])
    part = slice_between(flow, [flow.values["scores"], flow.values["bias"]], [flow.values["dets"]])
    assert part.nodes[0].name == "/post/Shape" and part.nodes[-1].name == "/post/Add"
    assert {v.name for v in part.initializers} == {"i1", "i0"}


def test_networkx_views():
    model = _ir(_nonzero_postprocess())
    g = node_graph(model.graph)
    assert g.number_of_nodes() == len(model.graph)
    assert g.has_edge("/head/Sigmoid", "/post/Greater") and g.edges[
        "/head/Sigmoid", "/post/Greater"
    ]["tensors"] == ["scores"]
    t = tensor_graph(model.graph)
    import networkx as nx

    assert nx.has_path(t, "x", "dets") and not nx.has_path(t, "dets", "x")


def test_slicing_a_long_chain_keeps_every_node_between_the_cuts():
    # Timing figures live in bench/bench_partition.py: a test must not assert wall time.
    def chain(n: int) -> ir.Model:
        nodes = [
            h.make_node("Relu" if i % 2 else "Neg", [f"t{i}"], [f"t{i + 1}"], name=f"n{i}")
            for i in range(n)
        ]
        return _ir(make_model(nodes, [vi("t0", T.FLOAT, [4])], [vi(f"t{n}", T.FLOAT, [4])]))

    for n in (10_000, 40_000):
        model = chain(n)
        flow = Dataflow(model.graph)
        part = slice_between(flow, [flow.values["t10"]], [flow.values[f"t{n - 10}"]])
        assert len(part.nodes) == n - 20
        names = {node.name for node in part.nodes}
        assert (
            "n10" in names
            and f"n{n - 11}" in names
            and "n9" not in names
            and f"n{n - 10}" not in names
        )


def test_min_cut_looks_at_most_max_cut_depth_producer_steps_up(monkeypatch):
    import surgery.analysis.cuts as cuts

    model = _ir(_nonzero_postprocess())
    # one step: Gather, Greater, Squeeze may move, but moving any of them alone crosses as many bytes or more
    monkeypatch.setattr(cuts, "MAX_CUT_DEPTH", 1)
    assert postprocess_boundary(model.graph, model=model).names == ["ncols", "mask", "flat1"]
    monkeypatch.setattr(cuts, "MAX_CUT_DEPTH", 2)  # Shape and Flatten too: 'scores' alone separates
    assert postprocess_boundary(model.graph, model=model).names == ["scores"]
    monkeypatch.setattr(
        cuts, "MAX_CUT_DEPTH", 0
    )  # nothing may move: the tensors crossing into NonZero's region
    assert postprocess_boundary(model.graph, model=model).names == ["ncols", "mask", "flat1"]
