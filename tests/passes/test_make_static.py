"""make-static on real exporter output (torch legacy/dynamo, Paddle-style, VAD-style) and its pitfalls.

Each "done when" model goes through fix-shapes (+ pin-inputs) + make-static + assert-static in
``surgery.apply`` with the checker, ORT-load and parity gates on, and must come out with every
tensor of every graph static and outputs within 1e-4 of the original.
"""

from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import PassError, PipelineError
from surgery.passes.assert_static import AssertStatic
from surgery.passes.fix_shapes import FixShapes
from surgery.passes.make_static import MakeStatic
from surgery.passes.pin_inputs import PinInputs
from surgery.shapes.infer import clear_shapes, infer_model
from surgery.shapes.static import find_offenders
from surgery.testing import make_model, op_counts, ort_run, vi

ROOT = Path(__file__).resolve().parents[2]


def _load_builders():
    spec = importlib.util.spec_from_file_location(
        "static_models", ROOT / "examples" / "10_static_shapes" / "build_models.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


B = _load_builders()


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory) -> dict[str, onnx.ModelProto]:
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("exports")
    return {
        "yolo": B.yolo(folder / "yolo.onnx"),
        "legacy": B.transformer(folder / "legacy.onnx", dynamo=False),
        "dynamo": B.transformer(folder / "dynamo.onnx", dynamo=True),
    }


def _gated(proto, passes, verify=None):
    model, report = surgery.apply(ir.from_proto(proto), passes, verify=verify)
    for step in report.steps:
        if step.modified:
            expected = "at end" if verify == "end" else "ok"
            assert (step.checker, step.ort, step.parity_status) == (expected,) * 3, step
        for diff in step.parity:
            assert diff.max_abs <= 1e-4, (step.name, diff)
    assert report.ok
    if verify == "end":
        assert report.final_checks and all("ok" in c for c in report.final_checks), (
            report.final_checks
        )
    return model, report


def _assert_all_static(model: ir.Model) -> None:
    assert find_offenders(model) == []
    AssertStatic()(model)


def _parity(original, model, feeds) -> None:
    want = ort_run(original, feeds)
    got = ort_run(model, feeds)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4, err_msg=name)


# ---------------------------------------------------------------------------------- torch exports


@pytest.mark.torch
@pytest.mark.slow
def test_yolo_dynamo_expression_dims(torch_models):
    proto = torch_models["yolo"]
    dims = [d.dim_param for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert "//" in dims[2] and "height" in dims[2]  # dynamo's expression dims
    model, report = _gated(
        proto, [FixShapes(shapes="images:1,3,160,224"), MakeStatic(), AssertStatic()]
    )
    _assert_all_static(model)
    # 20*28 + 10*14 + 5*7 anchors
    assert list(model.graph.outputs[0].shape) == [1, 6, 735]
    counts = op_counts(model)
    assert counts["Shape"] == 0 and counts["Range"] == 0
    assert report.step("make-static").parity_status == "ok"
    feeds = {"images": np.random.default_rng(0).random((1, 3, 160, 224), dtype=np.float32)}
    _parity(proto, model, feeds)


@pytest.mark.torch
@pytest.mark.slow
def test_pitfall2_inference_alone_is_not_static(torch_models):
    """Fixing inputs + onnx data-propagating inference leaves dims unknown; make-static does not."""
    model = ir.from_proto(torch_models["yolo"])
    FixShapes(shapes="images:1,3,160,224")(model)
    clear_shapes(model)
    infer_model(model)
    assert len(find_offenders(model)) > 10
    MakeStatic()(model)
    assert find_offenders(model) == []


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["legacy", "dynamo"])
def test_transformer_shape_gather_concat_reshape(torch_models, kind):
    proto = torch_models[kind]
    before = op_counts(proto)
    if kind == "legacy":
        assert before["Shape"] >= 2 and before["Concat"] >= 2  # Shape→Gather→Concat→Reshape chains
    model, _report = _gated(
        proto, [FixShapes(dims={"batch": 3, "seq": 5}), MakeStatic(), AssertStatic()]
    )
    _assert_all_static(model)
    after = op_counts(model)
    assert after["Shape"] == 0 and after["Concat"] == 0
    assert (
        after["Reshape"] == before["Reshape"]
    )  # the data reshapes stay, their targets are constants
    assert list(model.graph.outputs[0].shape) == [3, 5, 16]
    feeds = {"x": np.random.default_rng(1).random((3, 5, 16), dtype=np.float32)}
    _parity(proto, model, feeds)
    assert not MakeStatic()(model).modified


# ---------------------------------------------------------------------------------- Paddle style


def test_paddle_minus_one_dims_and_constant_nodes():
    proto = B.paddle(blocks=40)
    assert op_counts(proto)["Constant"] >= 300
    shape = [
        d.dim_value if d.HasField("dim_value") else d.dim_param
        for d in proto.graph.input[0].type.tensor_type.shape.dim
    ]
    assert shape == [-1, 3, "?", "?"]
    model, report = _gated(
        proto, [FixShapes(dims={"x[0]": 1, "x[2]": 24, "x[3]": 32}), MakeStatic(), AssertStatic()]
    )
    _assert_all_static(model)
    counts = op_counts(model)
    assert counts["Shape"] == 0 and counts["Slice"] == 0 and counts["Concat"] == 0
    assert counts["Constant"] <= 40  # only the scalars Mul still reads
    assert list(model.graph.outputs[0].shape) == [1, 4 * 24 * 32]
    stats = report.step("make-static").stats
    assert stats["shape_ops_folded"] >= 80 and stats["rounds"] <= 3
    _parity(proto, model, {"x": np.random.default_rng(2).random((1, 3, 24, 32), dtype=np.float32)})


# ---------------------------------------------------------------------------------- VAD style


def _vad_feeds(sr: int, samples: int = 512):
    rng = np.random.default_rng(3)
    return {
        "input": rng.random((1, samples), dtype=np.float32),
        "sr": np.array(sr, np.int64),
        "state": rng.random((2, 1, 16), dtype=np.float32),
    }


def test_pitfall3_fixing_vad_shapes_alone_breaks_ort_load():
    model = ir.from_proto(B.vad())
    FixShapes(shapes="input:1,512;state:2,1,16")(model)
    with pytest.raises(Exception, match="Incompatible dimensions"):
        ort_run(model, _vad_feeds(16000))


@pytest.mark.parametrize(
    "sr, taken", [(16000, {"MatMul": 2, "Tanh": 1}), (8000, {"Slice": 1, "Neg": 1})]
)
def test_vad_nested_ifs_are_inlined(sr, taken):
    proto = B.vad()
    passes = [
        PinInputs(values={"sr": sr}),
        FixShapes(shapes="input:1,512;state:2,1,16"),
        MakeStatic(),
        AssertStatic(),
    ]
    # fix-shapes alone makes the untaken branch ill-typed, so gates run once the Ifs are gone
    model, report = _gated(proto, passes, verify="end")
    counts = op_counts(model)
    assert counts["If"] == 0 and counts["Equal"] == 0 and counts["Shape"] == 0
    for op, n in taken.items():
        assert counts[op] == n
    assert report.step("make-static").stats["ifs_inlined"] == 2
    _assert_all_static(model)
    assert [v.name for v in model.graph.inputs] == ["input", "state"]
    assert [v.name for v in model.graph.outputs] == ["prob", "new_state"]
    feeds = _vad_feeds(sr)
    got = ort_run(model, {k: v for k, v in feeds.items() if k != "sr"})
    want = ort_run(proto, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    # names of the taken branch survive
    names = {n.name for n in model.graph}
    assert ("l/matmul" in names) if sr == 16000 else ("sr8/decimate" in names)
    assert not MakeStatic()(model).modified


def test_outer_scope_passthrough_output_keeps_its_name():
    """The 16 kHz short path returns the outer ``state`` through an Identity: still named new_state."""
    proto = B.vad()
    model = ir.from_proto(proto)
    PinInputs(values={"sr": 16000})(model)
    FixShapes(shapes="input:1,256;state:2,1,16")(model)
    MakeStatic()(model)
    assert op_counts(model)["If"] == 0
    assert [v.name for v in model.graph.outputs] == ["prob", "new_state"]
    feeds = _vad_feeds(16000, samples=256)
    got = ort_run(model, {k: v for k, v in feeds.items() if k != "sr"})
    np.testing.assert_array_equal(got["new_state"], feeds["state"])
    np.testing.assert_allclose(got["prob"], ort_run(proto, feeds)["prob"], rtol=1e-6)


# ---------------------------------------------------------------------------------- pitfalls 13, 14


def test_pitfall14_shape_start_end():
    model_proto = make_model(
        [
            h.make_node("Shape", ["x"], ["mid"], start=1, end=-1, name="shape_mid"),
            h.make_node("Shape", ["x"], ["tail"], start=-1, name="shape_tail"),
            h.make_node("Concat", ["tail", "mid"], ["target"], axis=0, name="cat"),
            h.make_node("Reshape", ["x", "target"], ["y"], name="reshape"),
        ],
        [vi("x", T.FLOAT, ["n", "a", "b", "c"])],
        [vi("y", T.FLOAT, ["p", "q", "r"])],
    )
    model = ir.from_proto(model_proto)
    FixShapes(shapes="x:1,2,3,4")(model)
    MakeStatic()(model)
    target = model.graph.initializers["target"].const_value.numpy()
    np.testing.assert_array_equal(target, [4, 2, 3])
    assert list(model.graph.outputs[0].shape) == [4, 2, 3]
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    _parity(model_proto, model, {"x": x})


def _tied_embedding_model(vocab=64, dim=32, out=8):
    rng = np.random.default_rng(4)
    return make_model(
        [
            h.make_node("Gather", ["emb", "ids"], ["tok"], name="embed"),
            h.make_node("Transpose", ["emb"], ["emb_t"], perm=[1, 0], name="lm_head/transpose"),
            h.make_node("MatMul", ["tok", "emb_t"], ["logits"], name="lm_head"),
            h.make_node("Transpose", ["proj"], ["proj_t"], perm=[1, 0], name="proj/transpose"),
            h.make_node("MatMul", ["logits", "proj_t"], ["out"], name="proj"),
            h.make_node(
                "ConstantOfShape",
                ["big_shape"],
                ["big"],
                name="big",
                value=onnx.numpy_helper.from_array(np.ones(1, np.float32)),
            ),
            h.make_node("ReduceSum", ["big"], ["big_sum"], keepdims=0, name="big_sum"),
            h.make_node("Add", ["out", "big_sum"], ["y"], name="add"),
        ],
        [vi("ids", T.INT64, ["n"])],
        [vi("y", T.FLOAT, ["n", out])],
        {
            "emb": rng.random((vocab, dim), dtype=np.float32),
            "proj": rng.random((out, vocab), dtype=np.float32),
            "big_shape": np.array([1024, 512], np.int64),
        },
    )


def test_pitfall13_size_aware_folding():
    proto = _tied_embedding_model()
    model = ir.from_proto(proto)
    FixShapes(shapes="ids:3")(model)
    result = MakeStatic(size_limit=4096)(model)
    counts = op_counts(model)
    # the tied 8 KiB weight is over the limit: never read, never duplicated by folding its transpose
    assert counts["Transpose"] == 1 and "lm_head/transpose" in {n.name for n in model.graph}
    # a small single-use weight's transpose costs nothing net: folded (its input is freed)
    assert "proj" not in model.graph.initializers and "proj_t" in model.graph.initializers
    # a 2 MiB ConstantOfShape is never materialized, yet its shape is known
    assert counts["ConstantOfShape"] == 1
    assert result.stats["skipped_for_size"] == 2
    assert result.stats["size_delta_bytes"] == 0
    assert any("2 folds skipped for size_limit=4096" in n for n in result.notes)
    _assert_all_static(model)
    feeds = {"ids": np.array([0, 5, 63])}
    _parity(proto, model, feeds)


def test_size_limit_default_folds_small_things_and_reports_growth():
    proto = _tied_embedding_model(vocab=16, dim=8)
    model = ir.from_proto(proto)
    FixShapes(shapes="ids:2")(model)
    result = MakeStatic()(model)
    assert op_counts(model)["Transpose"] == 0  # 512 bytes of growth is under 1 MiB
    assert result.stats["size_delta_bytes"] == 16 * 8 * 4  # + emb_t (proj_t replaces proj: net 0)
    assert op_counts(model)["ConstantOfShape"] == 1  # 2 MiB: over the default 1 MiB
    _parity(proto, model, {"ids": np.array([1, 2])})


# ---------------------------------------------------------------------------------- structure


def test_non_constant_if_keeps_branches_but_makes_them_static():
    then_g = h.make_graph(
        [
            h.make_node("Shape", ["x"], ["s_t"], name="t/shape"),
            h.make_node("Concat", ["s_t", "one"], ["tgt_t"], axis=0, name="t/cat"),
            h.make_node("Reshape", ["x", "tgt_t"], ["r_t"], name="t/reshape"),
        ],
        "then",
        [],
        [vi("r_t", T.FLOAT, None)],
    )
    else_g = h.make_graph(
        [h.make_node("Unsqueeze", ["x", "neg1"], ["r_e"], name="e/unsqueeze")],
        "else",
        [],
        [vi("r_e", T.FLOAT, None)],
    )
    proto = make_model(
        [
            h.make_node("ReduceSum", ["x"], ["total"], keepdims=0, name="sum"),
            h.make_node("Greater", ["total", "zero"], ["positive"], name="positive"),
            h.make_node(
                "If", ["positive"], ["y"], name="if_sign", then_branch=then_g, else_branch=else_g
            ),
        ],
        [vi("x", T.FLOAT, ["n", 3])],
        [vi("y", T.FLOAT, [None, None, None])],
        {
            "one": np.array([1], np.int64),
            "neg1": np.array([-1], np.int64),
            "zero": np.array(0, np.float32),
        },
    )
    model = ir.from_proto(proto)
    FixShapes(shapes="x:2,3")(model)
    MakeStatic()(model)
    counts = op_counts(model)
    assert counts["If"] == 1 and counts["Shape"] == 0 and counts["Concat"] == 0
    _assert_all_static(model)
    assert list(model.graph.outputs[0].shape) == [2, 3, 1]
    for sign in (1, -1):
        _parity(proto, model, {"x": sign * np.ones((2, 3), np.float32)})


def _loop_model():
    body = h.make_graph(
        [
            h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT, name="b/cast"),
            h.make_node("Add", ["acc_in", "fi"], ["acc_out"], name="b/add"),
            h.make_node("Mul", ["acc_out", "x"], ["scan_out"], name="b/mul"),
            h.make_node("Identity", ["cond_in"], ["cond_out"], name="b/cond"),
        ],
        "body",
        [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("acc_in", T.FLOAT, [2])],
        [vi("cond_out", T.BOOL, []), vi("acc_out", T.FLOAT, [2]), vi("scan_out", T.FLOAT, [2])],
    )
    return make_model(
        [h.make_node("Loop", ["trip", "", "x"], ["acc", "scans"], body=body, name="loop")],
        [vi("x", T.FLOAT, [2])],
        [vi("acc", T.FLOAT, [2]), vi("scans", T.FLOAT, [None, 2])],
        {"trip": np.array(3, np.int64)},
    )


def test_loop_unrolling_with_constant_trip_count():
    proto = _loop_model()
    kept = ir.from_proto(proto)
    MakeStatic()(kept)
    assert op_counts(kept)["Loop"] == 1  # off by default
    model = ir.from_proto(proto)
    result = MakeStatic(unroll_loops=True)(model)
    assert result.stats["loops_unrolled"] == 1
    counts = op_counts(model)
    assert counts["Loop"] == 0 and counts["Add"] == 3
    assert [v.name for v in model.graph.outputs] == ["acc", "scans"]
    assert list(model.graph.outputs[1].shape) == [3, 2]
    _assert_all_static(model)
    _parity(proto, model, {"x": np.array([1.0, -2.0], np.float32)})
    small = ir.from_proto(proto)
    MakeStatic(unroll_loops=True, max_unroll=2)(small)
    assert op_counts(small)["Loop"] == 1


def test_stale_output_annotation_is_rebuilt():
    proto = make_model(
        [h.make_node("Transpose", ["x"], ["y"], perm=[1, 0], name="t")],
        [vi("x", T.FLOAT, ["n", 4])],
        [vi("y", T.FLOAT, ["n", 4])],  # wrong: the exporter's stale guess
    )
    model = ir.from_proto(proto)
    FixShapes(shapes="x:2,4")(model)
    assert list(model.graph.outputs[0].shape) == [2, 4]  # substituted, still wrong
    MakeStatic()(model)
    assert list(model.graph.outputs[0].shape) == [4, 2]


def _chain(blocks: int):
    """x → blocks × (Shape → Gather → Div → Unsqueeze → Concat → Reshape); Div defeats data propagation."""
    nodes, inits = (
        [],
        {
            "i1": np.array(1, np.int64),
            "two": np.array(2, np.int64),
            "ax": np.array([0], np.int64),
            "lead": np.array([2], np.int64),
        },
    )
    cur = "x"
    for b in range(blocks):
        nodes += [
            h.make_node("Shape", [cur], [f"s{b}"], name=f"shape{b}"),
            h.make_node("Gather", [f"s{b}", "i1"], [f"d{b}"], axis=0, name=f"gather{b}"),
            h.make_node("Div", [f"d{b}", "two"], [f"h{b}"], name=f"div{b}"),
            h.make_node("Mul", [f"h{b}", "two"], [f"m{b}"], name=f"mul{b}"),
            h.make_node("Unsqueeze", [f"m{b}", "ax"], [f"u{b}"], name=f"unsq{b}"),
            h.make_node("Concat", ["lead", f"u{b}"], [f"t{b}"], axis=0, name=f"cat{b}"),
            h.make_node("Reshape", [cur, f"t{b}"], [f"r{b}"], name=f"reshape{b}"),
        ]
        cur = f"r{b}"
    nodes.append(h.make_node("Relu", [cur], ["y"], name="relu"))
    return make_model(nodes, [vi("x", T.FLOAT, [2, "n"])], [vi("y", T.FLOAT, [None, None])], inits)


@pytest.mark.parametrize("blocks", [20, 200])
def test_chains_resolve_in_one_sweep(blocks):
    """A shape chain crossing ops onnx cannot propagate folds in one inference round whatever its length."""
    proto = _chain(blocks)
    model = ir.from_proto(proto)
    FixShapes(shapes="x:2,6")(model)
    result = MakeStatic()(model)
    assert result.stats["rounds"] == 1
    assert op_counts(model) == collections.Counter({"Reshape": blocks, "Relu": 1})
    _assert_all_static(model)


def test_bad_options():
    with pytest.raises(PipelineError):
        MakeStatic(size_limit=-1)
    with pytest.raises(PipelineError):
        MakeStatic(max_rounds=0)


def test_growing_loop_carried_shapes_are_not_folded():
    """onnx infers a Loop body from the carried values' initial shapes: Shape of a growing tensor must stay."""
    body = h.make_graph(
        [
            h.make_node("Concat", ["acc_in", "one_f"], ["acc_out"], axis=0, name="b/grow"),
            h.make_node("Shape", ["acc_out"], ["len"], name="b/shape"),
            h.make_node("Identity", ["cond_in"], ["cond_out"], name="b/cond"),
        ],
        "body",
        # the exporter's trace-time annotation: the first iteration's shape
        [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("acc_in", T.FLOAT, [1])],
        [vi("cond_out", T.BOOL, []), vi("acc_out", T.FLOAT, [None]), vi("len", T.INT64, [1])],
    )
    proto = make_model(
        [h.make_node("Loop", ["trip", "", "x"], ["acc", "lens"], body=body, name="loop")],
        [vi("x", T.FLOAT, [1])],
        [vi("acc", T.FLOAT, [None]), vi("lens", T.INT64, [None, 1])],
        {"trip": np.array(3, np.int64), "one_f": np.array([1.0], np.float32)},
    )
    model = ir.from_proto(proto)
    MakeStatic()(model)
    assert op_counts(model)["Shape"] == 1
    _parity(proto, model, {"x": np.array([5.0], np.float32)})
    unrolled = ir.from_proto(proto)
    MakeStatic(unroll_loops=True)(unrolled)  # unrolled, every iteration's shape is known
    assert op_counts(unrolled)["Loop"] == 0 and op_counts(unrolled)["Shape"] == 0
    _assert_all_static(unrolled)
    _parity(proto, unrolled, {"x": np.array([5.0], np.float32)})


def test_folded_chains_materialize_only_their_surviving_constants():
    """Intermediate results of a folded chain never become constants: only what an unfolded node reads does.

    Main graph: each block's Shape → Gather → Div → Mul → Unsqueeze → Concat leaves one int64[2]
    initializer (named after the Concat output) for its Reshape. In an If branch the survivor is a
    single Constant node keeping the folded Concat's name.
    """
    from surgery.shapes.fold import Folder

    blocks = 3
    proto = _chain(blocks)
    model = ir.from_proto(proto)
    FixShapes(shapes="x:2,6")(model)
    clear_shapes(model)
    infer_model(model)
    folder = Folder(model)
    assert folder.sweep()
    assert not folder.sweep()  # idempotent
    assert sorted(model.graph.initializers) == [f"t{b}" for b in range(blocks)]
    assert all(
        model.graph.initializers[f"t{b}"].const_value.numpy().tolist() == [2, 6]
        for b in range(blocks)
    )
    assert folder.stats.bytes_added == blocks * 16  # one int64[2] per block, nothing intermediate
    assert folder.stats.bytes_freed == 4 * 8  # the four scalar/[1] int64 inputs of the chains
    assert folder.stats.folded_nodes + folder.stats.shape_ops_folded == 6 * blocks
    assert folder.stats.removed_nodes == 6 * blocks
    assert op_counts(model) == collections.Counter({"Reshape": blocks, "Relu": 1})
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)}
    _parity(proto, model, feeds)

    then_branch = h.make_graph(
        [
            h.make_node("Shape", ["x"], ["ts"], name="t_shape"),
            h.make_node("Gather", ["ts", "one"], ["td"], axis=0, name="t_gather"),
            h.make_node("Mul", ["td", "two"], ["tm"], name="t_mul"),
            h.make_node("Unsqueeze", ["tm", "ax"], ["tu"], name="t_unsq"),
            h.make_node("Concat", ["one1", "tu"], ["tt"], axis=0, name="t_cat"),
            h.make_node("Reshape", ["x", "tt"], ["t_out"], name="t_reshape"),
        ],
        "then",
        [],
        [h.make_tensor_value_info("t_out", T.FLOAT, None)],
    )
    else_branch = h.make_graph(
        [h.make_node("Reshape", ["x", "flat"], ["e_out"], name="e_reshape")],
        "else",
        [],
        [h.make_tensor_value_info("e_out", T.FLOAT, None)],
    )
    proto = make_model(
        [
            h.make_node(
                "If", ["c"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch
            )
        ],
        [vi("x", T.FLOAT, [2, "n"]), vi("c", T.BOOL, [])],
        [vi("y", T.FLOAT, [None, None])],
        {
            "one": np.array(1, np.int64),
            "two": np.array(2, np.int64),
            "ax": np.array([0], np.int64),
            "one1": np.array([1], np.int64),
            "flat": np.array([1, -1], np.int64),
        },
    )
    model = ir.from_proto(proto)
    FixShapes(shapes="x:2,6")(model)
    result = MakeStatic()(model)
    assert result.stats["folded_nodes"] + result.stats["shape_ops_folded"] == 5
    assert result.stats["nodes_removed"] == 5
    body = model.graph.node(0).attributes["then_branch"].as_graph()
    assert [(n.op_type, n.name) for n in body] == [("Constant", "t_cat"), ("Reshape", "t_reshape")]
    assert body.node(0).attributes["value"].as_tensor().numpy().tolist() == [1, 12]
    assert sorted(model.graph.initializers) == ["flat"]  # the chain's inputs went with it
    assert not MakeStatic()(model).modified
    for cond in (True, False):
        _parity(proto, model, {"x": feeds["x"], "c": np.array(cond)})


def _scan_model(length: int = 5, *, reverse: bool = False) -> onnx.ModelProto:
    """A running sum over time (the recurrence audio front ends and CRNN heads write as a Scan):
    state ``acc`` [2]; scan inputs ``a`` [T, 2] (axis 0) and ``b`` [2, T] (axis 1, optionally
    reversed); scan outputs stacked on axis 0 and on axis -1 (optionally reversed)."""
    body = h.make_graph(
        [
            h.make_node("Add", ["acc_in", "a_t"], ["s"], name="b/add"),
            h.make_node("Mul", ["s", "b_t"], ["acc_out"], name="b/mul"),
            h.make_node("Neg", ["acc_out"], ["y_t"], name="b/neg"),
            h.make_node("Identity", ["a_t"], ["z_t"], name="b/id"),
        ],
        "body",
        [vi("acc_in", T.FLOAT, [2]), vi("a_t", T.FLOAT, [2]), vi("b_t", T.FLOAT, [2])],
        [vi("acc_out", T.FLOAT, [2]), vi("y_t", T.FLOAT, [2]), vi("z_t", T.FLOAT, [2])],
    )
    scan = h.make_node(
        "Scan",
        ["acc0", "a", "b"],
        ["acc", "ys", "zs"],
        body=body,
        num_scan_inputs=2,
        name="scan",
        scan_input_axes=[0, 1],
        scan_input_directions=[0, 1 if reverse else 0],
        scan_output_axes=[0, -1],
        scan_output_directions=[0, 1 if reverse else 0],
    )
    return make_model(
        [scan],
        [vi("acc0", T.FLOAT, [2]), vi("a", T.FLOAT, [length, 2]), vi("b", T.FLOAT, [2, length])],
        [vi("acc", T.FLOAT, [2]), vi("ys", T.FLOAT, [length, 2]), vi("zs", T.FLOAT, [2, length])],
    )


def _scan_feeds(length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "acc0": rng.standard_normal(2).astype(np.float32),
        "a": rng.standard_normal((length, 2)).astype(np.float32),
        "b": rng.uniform(0.5, 1.0, (2, length)).astype(np.float32),
    }


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_unrolling_with_static_length(reverse):
    proto = _scan_model(5, reverse=reverse)
    kept = ir.from_proto(proto)
    MakeStatic()(kept)
    assert op_counts(kept)["Scan"] == 1  # off by default
    model = ir.from_proto(proto)
    result = MakeStatic(unroll_loops=True)(model)
    assert result.stats["scans_unrolled"] == 1
    counts = op_counts(model)
    assert counts["Scan"] == 0 and counts["Add"] == 5 and counts["Gather"] == 10
    assert [v.name for v in model.graph.outputs] == ["acc", "ys", "zs"]
    assert [list(v.shape) for v in model.graph.outputs] == [[2], [5, 2], [2, 5]]
    _assert_all_static(model)
    _parity(proto, model, _scan_feeds(5))
    small = ir.from_proto(proto)
    MakeStatic(unroll_loops=True, max_unroll=4)(small)
    assert op_counts(small)["Scan"] == 1


def test_scan_of_98_steps_is_unrolled_verified_and_assert_static_refuses_a_kept_scan():
    # before: the Scan stayed and assert-static accepted the model
    proto = _scan_model(98)
    with pytest.raises(PassError, match=r"op 'scan'.*Scan left in the model"):
        surgery.apply(ir.from_proto(proto), [MakeStatic(), AssertStatic()], inputs=_scan_feeds(98))
    model, report = surgery.apply(
        ir.from_proto(proto),
        [MakeStatic(unroll_loops=True, max_unroll=128), AssertStatic()],
        inputs=_scan_feeds(98),
    )
    assert (
        report.ok
        and report.steps[0].parity_status == "ok"
        and report.steps[0].stats["scans_unrolled"] == 1
    )
    assert op_counts(model)["Scan"] == 0 and op_counts(model)["Mul"] == 98
    _parity(proto, model, _scan_feeds(98))


def test_assert_static_refuses_a_loop_with_a_constant_trip_count():
    with pytest.raises(PassError, match=r"op 'loop'.*Loop left in the model"):
        AssertStatic()(ir.from_proto(_loop_model()))


def test_gather_elements_of_constants_folds_when_indices_are_smaller_than_data():
    """BERT's legacy export: token_type_ids = GatherElements(expanded buffer [1, 64], arange [1, 16]).
    onnx's reference evaluator raises on indices smaller than data off the axis, so the Gather of the
    token-type embedding behind it never folded either (2 nodes more than onnxslim)."""
    buffer = np.zeros((1, 64), np.int64)
    buffer[0, 3] = 1
    idx = np.arange(16, dtype=np.int64).reshape(1, 16)
    table = np.arange(8, dtype=np.float32).reshape(2, 4)
    nodes = [
        h.make_node("GatherElements", ["buffer", "idx"], ["types"], name="token_types", axis=1),
        h.make_node("Gather", ["table", "types"], ["emb"], name="type_embedding"),
        h.make_node("Add", ["x", "emb"], ["y"], name="add"),
    ]
    proto = make_model(
        nodes,
        [vi("x", T.FLOAT, [1, 16, 4])],
        [vi("y", T.FLOAT, [1, 16, 4])],
        {"buffer": buffer, "idx": idx, "table": table},
    )
    model = ir.from_proto(proto)
    MakeStatic()(model)
    assert op_counts(model) == {"Add": 1}
    x = np.random.default_rng(0).standard_normal((1, 16, 4)).astype(np.float32)
    np.testing.assert_array_equal(ort_run(model, {"x": x})["y"], ort_run(proto, {"x": x})["y"])
