"""The write plan and the atomic commit of a run's files (surgery/writeplan.py, model_io.Transaction)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery import api, model_io
from surgery.errors import GateError, InputError
from surgery.passes.cleanup import Cleanup
from surgery.testing import make_model, ort_run, vi
from surgery.writeplan import WritePlan

X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)


def _mlp(scale: float = 1.0, batch: str | int = 1) -> onnx.ModelProto:
    w = (np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096) * scale
    return make_model(
        [h.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        [vi("x", T.FLOAT, [batch, 64])],
        [vi("y", T.FLOAT, [batch, 64])],
        {"W": w},
        ir_version=8,
        opset=13,
    )


def _save_external(proto: onnx.ModelProto, path: Path, location: str | None = None) -> None:
    onnx.save(
        proto,
        path,
        save_as_external_data=True,
        location=location or path.name + ".data",
        size_threshold=0,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- the plan ------------------------------------------------------------------------------------


def test_plan_compares_by_path_and_by_inode(tmp_path):
    _save_external(_mlp(), tmp_path / "m.onnx", "weights.bin")
    model = model_io.load(tmp_path / "m.onnx")
    os.link(tmp_path / "weights.bin", tmp_path / "hard.bin")
    os.symlink(tmp_path / "m.onnx", tmp_path / "sym.onnx")
    plan = WritePlan()
    plan.set_model(model, tmp_path / "m.onnx")
    assert [e.path.name for e in plan.reads] == ["m.onnx", "weights.bin"]
    with pytest.raises(
        InputError,
        match=r"hard.bin would overwrite the external data file .*weights.bin of the input model",
    ):
        plan.write(tmp_path / "hard.bin", "the report")
    with pytest.raises(InputError, match="the output path is the input model"):
        plan.write_model(tmp_path / "sym.onnx")
    plan.write_model(tmp_path / "out.onnx")
    with pytest.raises(InputError, match="are the same file"):
        plan.write(tmp_path / "." / "out.onnx", "the report")
    # a read declared after a write is checked too
    with pytest.raises(InputError, match="would overwrite"):
        plan.read(tmp_path / "out.onnx", "the input arrays")


def test_in_place_allows_only_the_model_itself(tmp_path):
    _save_external(_mlp(), tmp_path / "m.onnx")
    model = model_io.load(tmp_path / "m.onnx")
    plan = WritePlan(in_place=True)
    plan.set_model(model, tmp_path / "m.onnx")
    plan.write_model(tmp_path / "m.onnx")
    with pytest.raises(InputError, match=r"m\.onnx\.data"):
        plan.write(tmp_path / "m.onnx.data", "the report")


def test_reproducer_folder_checks(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    plan = WritePlan()
    plan.read(tmp_path / "model.onnx", "the input model")
    with pytest.raises(InputError, match="new or empty"):
        plan.reproducer(tmp_path, explicit=True)
    old = tmp_path / "out.onnx.repro"
    old.mkdir()
    (old / "model.onnx").write_bytes(b"previous reproducer")
    (old / "inputs.npz").write_bytes(b"previous reproducer")
    plan.reproducer(old, explicit=False)  # the default folder may hold a previous reproducer
    with pytest.raises(InputError, match="new or empty"):
        plan.reproducer(old, explicit=True)
    plan.reproducer(tmp_path / "new", explicit=True)
    with pytest.raises(InputError, match="would overwrite the input model"):
        _plan_with_input_inside(tmp_path)


def _plan_with_input_inside(folder: Path) -> None:
    repro = folder / "r"
    repro.mkdir()
    plan = WritePlan()
    plan.reproducer(repro, explicit=True)
    plan.read(repro / "model.onnx", "the input model")


def test_api_refuses_output_onto_its_input(tmp_path):
    _save_external(_mlp(), tmp_path / "m.onnx", "weights.bin")
    before = _files(tmp_path)
    with pytest.raises(InputError, match=r"weights\.bin"):
        api.apply(tmp_path / "m.onnx", [Cleanup()], verify="off", output=tmp_path / "weights.bin")
    with pytest.raises(InputError, match="the output path is the input model"):
        api.apply(tmp_path / "m.onnx", [Cleanup()], verify="off", output=tmp_path / "m.onnx")
    model = model_io.load(tmp_path / "m.onnx")  # an ir.Model's external data is an input as well
    with pytest.raises(InputError, match=r"weights\.bin"):
        api.apply(model, [Cleanup()], verify="off", output=tmp_path / "weights.bin")
    assert _files(tmp_path) == before


# -- the commit ----------------------------------------------------------------------------------


def test_failure_between_renames_leaves_old_model_and_old_data(tmp_path, monkeypatch):
    target = tmp_path / "out.onnx"
    model_io.save(ir.from_proto(_mlp(1.0)), target, external_data=True)
    before = _files(tmp_path)
    expected = ort_run(str(target), {"x": X})["y"]
    real = os.replace

    def failing(src, dst, *args, **kwargs):
        if Path(dst) == target:
            raise OSError(28, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(InputError, match="No space left"):
        model_io.save(ir.from_proto(_mlp(2.0)), target, external_data=True)
    monkeypatch.setattr(os, "replace", real)
    # the new data file was linked in first (under a fresh name) and is gone again; old model reads old data
    assert _files(tmp_path) == before
    np.testing.assert_array_equal(ort_run(str(target), {"x": X})["y"], expected)


def test_second_model_failing_puts_the_first_back(tmp_path, monkeypatch):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    model_io.save(ir.from_proto(_mlp(1.0)), a, external_data=True)
    before = _files(tmp_path)
    real = os.replace

    def failing(src, dst, *args, **kwargs):
        if Path(dst) == b:
            raise KeyboardInterrupt  # a signal between the renames
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
    tx = model_io.Transaction()
    tx.add_model(ir.from_proto(_mlp(3.0)), a, external_data=True)
    tx.add_model(ir.from_proto(_mlp(4.0)), b, external_data=True)
    with pytest.raises(KeyboardInterrupt):
        tx.commit()
    monkeypatch.setattr(os, "replace", real)
    assert not tx.committed
    assert _files(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(model_io.STAGING_PREFIX)]
    np.testing.assert_allclose(
        ort_run(str(a), {"x": X})["y"],
        X @ (np.arange(4096, dtype=np.float32).reshape(64, 64) / 4096),
        rtol=1e-6,
    )


def test_replacing_a_model_removes_its_old_data_only_after(tmp_path):
    target = tmp_path / "out.onnx"
    names = []
    for scale in (1.0, 2.0, 3.0):
        written = model_io.save(ir.from_proto(_mlp(scale)), target, external_data=True)
        names.append(written[1].name)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.onnx", written[1].name])
        np.testing.assert_allclose(
            ort_run(str(target), {"x": X})["y"],
            X @ (np.arange(4096, dtype=np.float32).reshape(64, 64) / 4096 * scale),
            rtol=1e-6,
        )
    assert names[0] == names[2] == "out.onnx.data" and names[1] != "out.onnx.data"


def test_a_data_file_an_input_uses_is_never_removed(tmp_path):
    # a.onnx reads b.onnx.data; writing b.onnx over an old b.onnx must not take a.onnx's weights
    _save_external(_mlp(), tmp_path / "a.onnx", "b.onnx.data")
    onnx.save(
        onnx.load(tmp_path / "a.onnx", load_external_data=False), tmp_path / "b.onnx"
    )  # names b.onnx.data too
    model = model_io.load(tmp_path / "a.onnx")
    api.apply(model, [Cleanup()], verify="off", output=tmp_path / "b.onnx")
    assert (tmp_path / "b.onnx.data").exists()
    ort_run(str(tmp_path / "a.onnx"), {"x": X})
    ort_run(str(tmp_path / "b.onnx"), {"x": X})


def test_unchanged_weights_are_copied_by_the_kernel(tmp_path, monkeypatch):
    _save_external(_mlp(), tmp_path / "src.onnx")
    model = model_io.load(tmp_path / "src.onnx")
    calls: list[int] = []
    real = os.copy_file_range

    def counting(src, dst, count, offset_src=None, offset_dst=None):
        calls.append(count)
        return real(src, dst, count, offset_src, offset_dst)

    def no_read(self):  # the bytes of an unchanged external tensor never pass through Python
        raise AssertionError("external tensor read into memory")

    monkeypatch.setattr(os, "copy_file_range", counting)
    monkeypatch.setattr(ir.ExternalTensor, "tobytes", no_read)
    (tmp_path / "out").mkdir()
    written = model_io.save(model, tmp_path / "out" / "m.onnx")
    monkeypatch.undo()
    assert sum(calls) == 64 * 64 * 4
    np.testing.assert_array_equal(
        ort_run(str(written[0]), {"x": X})["y"], ort_run(str(tmp_path / "src.onnx"), {"x": X})["y"]
    )


def test_stale_staging_folders_are_cleaned_when_their_owner_is_gone(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f"{model_io.STAGING_PREFIX}{dead.pid}-0000abcd"
        live = tmp_path / f"{model_io.STAGING_PREFIX}{alive.pid}-0000abcd"
        for folder in (stale, live):
            folder.mkdir()
            (folder / "0-out.onnx.data").write_bytes(b"\0" * 1000)
        model_io.save(ir.from_proto(_mlp()), tmp_path / "out.onnx")
        assert not stale.exists() and live.exists()
    finally:
        alive.kill()
        alive.wait()


def test_failing_bucket_leaves_no_file_of_the_earlier_buckets(tmp_path, monkeypatch):
    from surgery import buckets
    from surgery.passes.make_static import MakeStatic

    onnx.save(_mlp(batch="batch"), tmp_path / "m.onnx")
    before = _files(tmp_path)
    real = api.Runner.run
    calls = []

    def second_fails(self, model, report):
        calls.append(1)
        if len(calls) == 2:
            raise GateError("parity failed on the second bucket", gate="parity")
        return real(self, model, report)

    monkeypatch.setattr(api.Runner, "run", second_fails)
    with pytest.raises(GateError, match="bucket batch2"):
        buckets.apply_buckets(
            tmp_path / "m.onnx",
            [MakeStatic()],
            "batch=1,2",
            verify="off",
            output=tmp_path / "out.onnx",
        )
    assert _files(tmp_path) == before and len(calls) == 2
    monkeypatch.setattr(api.Runner, "run", real)
    result = buckets.apply_buckets(
        tmp_path / "m.onnx", [MakeStatic()], "batch=1,2", verify="off", output=tmp_path / "out.onnx"
    )
    assert [r.output.name for r in result.runs] == ["out.batch1.onnx", "out.batch2.onnx"]
    assert all(r.output.exists() for r in result.runs)


def test_save_reports_an_unwritable_target_as_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        model_io.save(ir.from_proto(_mlp()), tmp_path / "missing" / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_python_callers_text_files_go_through_the_one_output_check(tmp_path):
    """write_manifest and write_keep_dtype (for Python callers managing their own files) refuse
    what check_output_file refuses, in one line, and write nothing: a folder given as the file
    (it was an IsADirectoryError traceback) and a missing folder."""
    from surgery.partition import write_manifest
    from surgery.precision import write_keep_dtype

    for call in (
        lambda p: write_manifest(p, {"parts": []}),
        lambda p: write_keep_dtype(p, ["node_a"]),
    ):
        with pytest.raises(InputError, match="is a folder"):
            call(tmp_path)
        with pytest.raises(InputError, match="does not exist"):
            call(tmp_path / "missing" / "x.txt")
        assert sorted(p.name for p in tmp_path.iterdir()) == []
    written = write_manifest(tmp_path / "m.json", {"parts": []})
    assert written.read_text() == '{\n  "parts": []\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
