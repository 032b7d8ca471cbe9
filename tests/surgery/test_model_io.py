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
    return make_model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [vi("x", T.FLOAT, [1, 64])],
                      [vi("y", T.FLOAT, [1, 64])], {"W": w}, ir_version=8, opset=13)


def _save_external(proto: onnx.ModelProto, path) -> None:
    onnx.save(proto, path, save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data",
              size_threshold=0)


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
    np.testing.assert_array_equal(ort_run(str(out_dir / "out.onnx"), {"x": x})["y"], ort_run(str(src), {"x": x})["y"])
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

    proto = make_model([h.make_node("Add", ["x", "b"], ["y"], name="add")], [vi("x", T.FLOAT, [4])], [vi("y", T.FLOAT, [4])],
                       {"b": np.arange(4, dtype=np.float32)})
    folder = tmp_path / "models"
    folder.mkdir()
    _save_external(proto, folder / "m.onnx")
    model = model_io.load(folder / "m.onnx")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    light = model_io.LightProto(model)
    assert checker.check(light)
    np.testing.assert_array_equal(run_model(model, {"x": np.zeros(4, np.float32)})["y"], np.arange(4, dtype=np.float32))
