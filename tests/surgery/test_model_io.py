"""Model I/O: loading errors, atomic saves, external data, kept ir_version, determinism."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery import model_io
from surgery.errors import InputError
from surgery.testing import make_model, ort_run, vi


def _big_model() -> onnx.ModelProto:
    w = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096
    return make_model(
        [h.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        [vi("x", T.FLOAT, [1, 64])],
        [vi("y", T.FLOAT, [1, 64])],
        {"W": w},
        ir_version=8,
        opset=13,
    )


def _save_external(proto: onnx.ModelProto, path) -> None:
    onnx.save(
        proto,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=0,
    )


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        model_io.load(tmp_path / "nope.onnx")


def test_empty_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        model_io.load(empty)
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n" * 10)
    with pytest.raises(InputError, match="not"):
        model_io.load(text)


def test_truncated_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_big_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"not a valid ONNX model|truncated|not an ONNX model"):
        model_io.load(path)


def test_missing_and_truncated_external_data(tmp_path):
    path = tmp_path / "m.onnx"
    _save_external(_big_model(), path)
    data = tmp_path / "m.onnx.data"
    content = data.read_bytes()
    data.write_bytes(content[:100])
    with pytest.raises(InputError, match="truncated"):
        model_io.load(path)
    data.unlink()
    with pytest.raises(InputError, match="missing"):
        model_io.load(path)


def test_save_keeps_ir_version_and_opsets_and_external_data(tmp_path):
    src = tmp_path / "src.onnx"
    _save_external(_big_model(), src)
    model = model_io.load(src)
    out_dir = tmp_path / "elsewhere"
    out_dir.mkdir()
    written = model_io.save(model, out_dir / "out.onnx")
    assert [p.name for p in written] == ["out.onnx", "out.onnx.data"]
    saved = onnx.load(out_dir / "out.onnx", load_external_data=False)
    assert saved.ir_version == 8
    assert {o.domain: o.version for o in saved.opset_import} == {"": 13}
    assert saved.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL
    # pitfall 15: the weights are next to the new model, not left behind
    x = np.ones((1, 64), np.float32)
    np.testing.assert_array_equal(
        ort_run(str(out_dir / "out.onnx"), {"x": x})["y"], ort_run(str(src), {"x": x})["y"]
    )
    assert not list(out_dir.glob(".*tmp"))  # no staging folder left behind


def test_save_is_deterministic(tmp_path):
    model = ir.from_proto(_big_model())
    model_io.save(model, tmp_path / "a.onnx")
    model_io.save(model, tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_save_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    model = ir.from_proto(_big_model())
    target = tmp_path / "out.onnx"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save", boom)
    with pytest.raises(InputError, match=r"out\.onnx: cannot write: disk full"):
        model_io.save(model, target)
    assert list(tmp_path.iterdir()) == []


def test_light_proto_leaves_out_large_weights_and_restores_model():
    model = ir.from_proto(_big_model())
    light = model_io.LightProto(model)
    assert "W" in light.tensors
    init = light.proto.graph.initializer[0]
    assert init.data_location == onnx.TensorProto.EXTERNAL and not init.raw_data
    assert isinstance(model.graph.initializers["W"].const_value, ir.TensorProtocol)
    assert not isinstance(model.graph.initializers["W"].const_value, ir.ExternalTensor)
    onnx.checker.check_model(light.for_checker(), full_check=True)
    rebuilt = light.full_model()
    x = np.ones((1, 64), np.float32)
    np.testing.assert_array_equal(ort_run(rebuilt, {"x": x})["y"], ort_run(model, {"x": x})["y"])


def test_to_ir_rejects_other_types():
    with pytest.raises(InputError):
        model_io.to_ir(42)  # type: ignore[arg-type]


def test_small_external_tensors_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    # dynamo exports keep even tiny tensors in the .data file; gates must not look for it in the cwd
    from surgery.instruments import checker
    from surgery.verify.ort import run_model

    proto = make_model(
        [h.make_node("Add", ["x", "b"], ["y"], name="add")],
        [vi("x", T.FLOAT, [4])],
        [vi("y", T.FLOAT, [4])],
        {"b": np.arange(4, dtype=np.float32)},
    )
    folder = tmp_path / "models"
    folder.mkdir()
    _save_external(proto, folder / "m.onnx")
    model = model_io.load(folder / "m.onnx")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    light = model_io.LightProto(model)
    assert checker.check(light)
    np.testing.assert_array_equal(
        run_model(model, {"x": np.zeros(4, np.float32)})["y"], np.arange(4, dtype=np.float32)
    )


def _if_and_loop_with_external_body_weights(folder) -> tuple[np.ndarray, np.ndarray]:
    """m.onnx: y = If(c, then: x @ W_then, else: -x); z = Loop 2 times over s += x @ W_loop.
    Both body weights are saved in folder/w.bin, as an exporter keeps them."""
    from onnx import numpy_helper as nh

    w_then = (np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 1000).astype(np.float32)
    w_loop = np.eye(64, dtype=np.float32) * 0.5
    then_g = h.make_graph(
        [h.make_node("MatMul", ["x", "W_then"], ["yt"], name="then_mm")],
        "then",
        [],
        [vi("yt", T.FLOAT, [2, 64])],
        [nh.from_array(w_then, "W_then")],
    )
    else_g = h.make_graph(
        [h.make_node("Neg", ["x"], ["ye"], name="else_neg")],
        "else",
        [],
        [vi("ye", T.FLOAT, [2, 64])],
    )
    body = h.make_graph(
        [
            h.make_node("MatMul", ["x", "W_loop"], ["xw"], name="loop_mm"),
            h.make_node("Add", ["s_in", "xw"], ["s_out"], name="loop_add"),
            h.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond"),
        ],
        "body",
        [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("s_in", T.FLOAT, [2, 64])],
        [vi("cond_out", T.BOOL, []), vi("s_out", T.FLOAT, [2, 64])],
        [nh.from_array(w_loop, "W_loop")],
    )
    graph = h.make_graph(
        [
            h.make_node("Identity", ["x0"], ["x"], name="id"),
            h.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
            h.make_node("Loop", ["trips", "", "zeros"], ["z"], name="loop", body=body),
        ],
        "main",
        [vi("x0", T.FLOAT, [2, 64]), vi("c", T.BOOL, [])],
        [vi("y", T.FLOAT, [2, 64]), vi("z", T.FLOAT, [2, 64])],
        [
            nh.from_array(np.array(2, np.int64), "trips"),
            nh.from_array(np.zeros((2, 64), np.float32), "zeros"),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(
        model, folder / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=1024
    )
    body_weights = [
        t
        for n in onnx.load(folder / "m.onnx", load_external_data=False).graph.node
        for a in n.attribute
        if a.HasField("g")
        for t in a.g.initializer
    ]
    assert {t.name for t in body_weights} == {"W_then", "W_loop"}
    assert all(t.data_location == T.EXTERNAL for t in body_weights)
    return w_then, w_loop


def test_subgraph_initializers_in_external_data_load_verify_and_save(tmp_path, monkeypatch):
    """If/Loop bodies whose weights live in the external-data file: checker, ORT and the saved output
    used to look for w.bin in the working directory (a proto carries no folder)."""
    import surgery
    from surgery.cli import main
    from surgery.instruments import checker

    folder = tmp_path / "models"
    folder.mkdir()
    w_then, w_loop = _if_and_loop_with_external_body_weights(folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = model_io.load(folder / "m.onnx")
    assert checker.check(model_io.LightProto(model))
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    out = ort_run(model, {"x0": x, "c": np.array(True)})
    np.testing.assert_allclose(out["y"], x @ w_then, rtol=1e-5)
    np.testing.assert_allclose(out["z"], 2 * (x @ w_loop), rtol=1e-5)
    # the model keeps its memory-mapped tensors after the light proto was built
    body = next(n for n in model.graph if n.op_type == "Loop").attributes["body"].as_graph()
    assert isinstance(body.initializers["W_loop"].const_value, ir.ExternalTensor)
    # apply with every gate (the then-branch taken by a declared input), save to a third folder
    (elsewhere / "p.toml").write_text('[verify]\nsamples = 1\n[[pass]]\nname = "cleanup"\n')
    (tmp_path / "out").mkdir()
    _, report = surgery.apply(
        folder / "m.onnx",
        elsewhere / "p.toml",
        inputs={"x0": x, "c": np.array(True)},
        output=tmp_path / "out" / "o.onnx",
    )
    assert report.ok and report.oracle == "onnxruntime"
    saved = onnx.load(tmp_path / "out" / "o.onnx", load_external_data=False)
    locations = {
        e.value
        for n in saved.graph.node
        for a in n.attribute
        if a.HasField("g")
        for t in a.g.initializer
        for e in t.external_data
        if e.key == "location"
    }
    assert locations == {"o.onnx.data"}
    again = ort_run(model_io.load(tmp_path / "out" / "o.onnx"), {"x0": x, "c": np.array(True)})
    np.testing.assert_array_equal(again["y"], out["y"])
    np.testing.assert_array_equal(again["z"], out["z"])
    assert main(["check", str(tmp_path / "out" / "o.onnx")]) == 0


def test_subgraph_external_data_outside_the_folder_is_refused(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    _if_and_loop_with_external_body_weights(folder)
    proto = onnx.load(folder / "m.onnx", load_external_data=False)
    loop = next(n for n in proto.graph.node if n.op_type == "Loop")
    for e in loop.attribute[0].g.initializer[0].external_data:
        if e.key == "location":
            e.value = "../w.bin"
    onnx.save(proto, folder / "escape.onnx")
    with pytest.raises(InputError, match=r"\.\./w\.bin"):
        model_io.load(folder / "escape.onnx")


def test_the_data_file_is_reserved_before_the_copy_and_a_full_disk_fails_first(
    tmp_path, monkeypatch
):
    """The new data file gets its blocks in one fallocate (faster kernel copies on ext4, and a full
    disk is found before gigabytes are copied): nothing is copied then, nothing is left behind."""
    import errno

    src = tmp_path / "src"
    src.mkdir()
    w = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)
    proto = make_model(
        [h.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        [vi("x", T.FLOAT, [1, 256])],
        [vi("y", T.FLOAT, [1, 256])],
        {"W": w},
    )
    onnx.save(
        proto, src / "m.onnx", save_as_external_data=True, location="m.onnx.data", size_threshold=0
    )
    model = model_io.load(src / "m.onnx")
    calls: list[int] = []
    real = model_io._reserve

    def reserve(fd, size):
        calls.append(size)
        return real(fd, size)

    monkeypatch.setattr(model_io, "_reserve", reserve)
    model_io.save(model, tmp_path / "a.onnx")
    assert calls == [w.nbytes]
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(onnx.load(tmp_path / "a.onnx").graph.initializer[0]), w
    )

    copied: list[int] = []
    real_copy = model_io._copy_range
    monkeypatch.setattr(model_io, "_reserve", lambda fd, size: errno.ENOSPC)
    monkeypatch.setattr(model_io, "_copy_range", lambda *args: copied.append(1))
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match=r"b\.onnx: cannot write: No space left on device"):
        model_io.save(model, tmp_path / "out" / "b.onnx")
    assert copied == [] and list((tmp_path / "out").iterdir()) == []
    # a file system without fallocate just skips the reservation
    monkeypatch.setattr(model_io, "_reserve", lambda fd, size: errno.EOPNOTSUPP)
    monkeypatch.setattr(model_io, "_copy_range", real_copy)
    model_io.save(model, tmp_path / "out" / "c.onnx")
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(onnx.load(tmp_path / "out" / "c.onnx").graph.initializer[0]), w
    )


@pytest.mark.parametrize(
    "dtype", ["float32", "float16", "bfloat16", "float8e4m3fn", "bool", "int4", "int64"]
)
def test_in_memory_weights_of_every_width_are_saved_byte_for_byte(tmp_path, dtype):
    """Weights built in memory are written from their array's own buffer (no tobytes copy) where
    its layout is the file's; packed 4-bit and other layouts still go through tobytes."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    kind = {"float32": ir.DataType.FLOAT, "float8e4m3fn": ir.DataType.FLOAT8E4M3FN}.get(
        dtype
    ) or ir.DataType[dtype.upper()]
    if dtype == "bool":
        array = rng.integers(0, 2, (70, 300)).astype(bool)
    elif dtype == "int4":
        array = rng.integers(-8, 8, (70, 301)).astype(ml_dtypes.int4)
    elif dtype == "int64":
        array = rng.integers(-(2**62), 2**62, (70, 300))
    else:
        np_dtype = getattr(ml_dtypes, dtype.replace("e4m3fn", "_e4m3fn"), None) or np.dtype(dtype)
        array = rng.standard_normal((70, 300)).astype(np.float32).astype(np_dtype)
    value = ir.Value(
        name="w",
        type=ir.TensorType(kind),
        shape=ir.Shape(array.shape),
        const_value=ir.Tensor(array, name="w"),
    )
    graph = ir.Graph([], [value], nodes=[], initializers=[value], opset_imports={"": 21})
    model = ir.Model(graph, ir_version=10)
    out = tmp_path / "m.onnx"
    assert model_io.save(model, out, external_data=True) == [out, tmp_path / "m.onnx.data"]
    saved = onnx.load(out, load_external_data=False)
    assert saved.graph.initializer[0].data_location == T.EXTERNAL
    expected = ir.Tensor(array).tobytes()
    assert model_io.load(out).graph.initializers["w"].const_value.tobytes() == expected
