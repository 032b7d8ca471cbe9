"""ONNX Runtime in a worker process: weights memory-mapped, crashes turned into errors, one worker per run."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery import model_io
from surgery.cli import main
from surgery.errors import GateError, InputError
from surgery.pass_base import Numerics, SurgeryPass, SurgeryResult
from surgery.testing import make_model, vi
from surgery.verify import worker
from surgery.verify.ort import OrtCrash, OrtSession

INT_MIN = np.int32(-(2**31))


@pytest.fixture(autouse=True)
def fresh_worker():
    worker.shutdown()
    yield
    worker.shutdown()


def _divide(divisor: np.ndarray | None = None) -> onnx.ModelProto:
    """c = a / b (int32). INT_MIN / -1 overflows: x86 raises SIGFPE inside ORT's kernel."""
    if divisor is None:
        return make_model(
            [h.make_node("Div", ["a", "b"], ["c"], name="div")],
            [vi("a", T.INT32, [2]), vi("b", T.INT32, [2])],
            [vi("c", T.INT32, [2])],
        )
    return make_model(
        [h.make_node("Div", ["a", "b"], ["c"], name="div")],
        [vi("a", T.INT32, [2])],
        [vi("c", T.INT32, [2])],
        {"b": divisor},
    )


def _mapped_files(pid: int) -> set[str]:
    return {
        line.split(None, 5)[5].strip()
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if len(line.split(None, 5)) == 6
    }


def test_session_runs_in_the_worker_and_maps_the_external_data_file(tmp_path):
    # a Gather table (MatMul weights would be prepacked, i.e. copied, by ORT whatever feeds them)
    w = np.arange(256 * 1024, dtype=np.float32).reshape(256, 1024)
    proto = make_model(
        [h.make_node("Gather", ["W", "i"], ["y"], name="gather")],
        [vi("i", T.INT64, [2])],
        [vi("y", T.FLOAT, [2, 1024])],
        {"W": w},
    )
    onnx.save(
        proto,
        tmp_path / "m.onnx",
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    model = model_io.load(tmp_path / "m.onnx")
    session = OrtSession(model)
    try:
        pid = worker.get_worker().pid
        assert pid is not None and pid != os.getpid()
        # the worker reads the weights from the user's own file, memory-mapped (not sent through the pipe)
        assert str((tmp_path / "weights.bin").resolve()) in _mapped_files(pid)
        assert worker.get_worker().spill.bytes_written == 0
        np.testing.assert_array_equal(session.run({"i": np.array([3, 255])})["y"], w[[3, 255]])
    finally:
        session.close()


def test_in_memory_weights_are_spilled_once_for_consecutive_sessions():
    w = np.random.default_rng(0).standard_normal((128, 64)).astype(np.float32)
    model = ir.from_proto(
        make_model(
            [h.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
            [vi("x", T.FLOAT, [2, 128])],
            [vi("y", T.FLOAT, [2, 64])],
            {"W": w},
        )
    )
    x = np.ones((2, 128), np.float32)
    pids = set()
    for _ in range(3):
        session = OrtSession(model)
        pids.add(worker.get_worker().pid)
        np.testing.assert_allclose(session.run({"x": x})["y"], x @ w, rtol=1e-5)
        session.close()
    assert len(pids) == 1  # one worker, reused
    assert worker.get_worker().spill.bytes_written == w.nbytes  # written once, mapped three times
    spill = next(worker.get_worker().folder.glob("w*.bin"))
    # a new tensor (a pass replaced the weight) is spilled; the old one's file goes with the tensor
    model.graph.initializers["W"].const_value = ir.tensor(w * 2, name="W")
    import gc

    gc.collect()
    assert not spill.exists()
    session = OrtSession(model)
    np.testing.assert_allclose(session.run({"x": x})["y"], x @ (w * 2), rtol=1e-5)
    session.close()


def test_an_inline_weight_is_copied_out_of_its_protobuf_once_for_all_sessions(monkeypatch):
    """A weight held inline (an ``onnx_ir.serde.TensorProtoTensor``) costs a copy of its bytes each
    time its array is asked for: on the 1.4 GB decoder that was 1.4 s per session opened. After
    the first spill its file is reused without asking again; the sessions still compute right."""
    from onnx_ir.serde import TensorProtoTensor

    w = np.random.default_rng(1).standard_normal((128, 64)).astype(np.float32)
    model = ir.from_proto(
        make_model(
            [h.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
            [vi("x", T.FLOAT, [2, 128])],
            [vi("y", T.FLOAT, [2, 64])],
            {"W": w},
        )
    )
    assert isinstance(model.graph.initializers["W"].const_value, TensorProtoTensor)
    copies = []
    original_numpy = TensorProtoTensor.numpy

    def counted(self):
        copies.append(self.name)
        return original_numpy(self)

    monkeypatch.setattr(TensorProtoTensor, "numpy", counted)
    x = np.ones((2, 128), np.float32)
    for _ in range(3):
        session = OrtSession(model)
        np.testing.assert_allclose(session.run({"x": x})["y"], x @ w, rtol=1e-5)
        session.close()
    assert copies.count("W") == 1
    assert worker.get_worker().spill.bytes_written == w.nbytes


def test_gate_sessions_do_not_prepack_weights():
    """A gate session runs a few samples and closes: prepacking its weights (a copy of each while
    the session opens; 2.3 s of 3.9 s on the 1.4 GB decoder) never pays back, so it is off."""
    proto = make_model(
        [h.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        [vi("x", T.FLOAT, [2, 8])],
        [vi("y", T.FLOAT, [2, 4])],
        {"W": np.ones((8, 4), np.float32)},
    )
    session = worker.build_session(proto.SerializeToString(), ())
    options = session.get_session_options()
    assert options.get_session_config_entry("session.disable_prepacking") == "1"
    out = session.run(None, {"x": np.ones((2, 8), np.float32)})[0]
    np.testing.assert_array_equal(out, np.full((2, 4), 8, np.float32))


def test_an_ort_crash_is_an_exception_naming_signal_model_and_shapes():
    session = OrtSession(ir.from_proto(_divide()))
    pid = worker.get_worker().pid
    ok = session.run({"a": np.array([7, 8], np.int32), "b": np.array([2, -1], np.int32)})
    np.testing.assert_array_equal(ok["c"], [3, -8])
    with pytest.raises(OrtCrash) as info:
        session.run({"a": np.array([INT_MIN, 2], np.int32), "b": np.array([-1, -1], np.int32)})
    text = str(info.value)
    assert info.value.signal_name == "SIGFPE"
    assert (
        "SIGFPE" in text and "model 'g'" in text and "a[2] int32" in text and "b[2] int32" in text
    )
    assert not _alive(pid)
    # the next session gets a new worker
    again = OrtSession(ir.from_proto(_divide()))
    assert worker.get_worker().pid != pid
    np.testing.assert_array_equal(
        again.run({"a": np.array([9, 9], np.int32), "b": np.array([3, 3], np.int32)})["c"], [3, 3]
    )
    again.close()


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


class _DivideByMinusOne(SurgeryPass):
    """Test-only: replaces the divisor [2, 2] by [-1, -1] (INT_MIN / -1 then crashes ORT)."""

    name = "test-divide-by-minus-one"
    numerics = Numerics.EXACT

    def call(self, model: ir.Model) -> SurgeryResult:
        model.graph.initializers["b"].const_value = ir.tensor(
            np.array([-1, -1], np.int32), name="b"
        )
        return SurgeryResult(model, True)


def test_original_that_crashes_ort_is_an_input_error():
    feeds = {"a": np.array([INT_MIN, 4], np.int32), "b": np.array([-1, 2], np.int32)}
    with pytest.raises(InputError) as info:
        surgery.apply(_divide(), [_DivideByMinusOne()], inputs=feeds)
    text = str(info.value)
    assert info.value.exit_code == 2
    assert (
        "the original model crashes onnxruntime" in text
        and "SIGFPE" in text
        and "a[2] int32" in text
    )


def test_new_model_that_crashes_ort_fails_the_ort_gate(tmp_path):
    original = _divide(np.array([2, 2], np.int32))
    with pytest.raises(GateError) as info:
        surgery.apply(
            original,
            [_DivideByMinusOne()],
            inputs={"a": np.array([INT_MIN, 4], np.int32)},
            reproducer_dir=tmp_path / "repro",
        )
    err = info.value
    # loading is the ort gate; a crash while running the parity samples is reported by the parity gate
    assert (
        err.exit_code == 1
        and err.gate in ("ort", "parity")
        and err.pass_name == "test-divide-by-minus-one"
    )
    assert "SIGFPE" in str(err) and "a[2] int32" in str(err)
    assert (tmp_path / "repro" / "model.onnx").is_file()


def test_cli_reports_a_crash_of_the_original_in_one_line_with_exit_2(tmp_path, capsys):
    onnx.save(_divide(), tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", a=np.array([INT_MIN, 1], np.int32), b=np.array([-1, 1], np.int32))
    (tmp_path / "p.toml").write_text('[inputs]\ndata = "in.npz"\n[[pass]]\nname = "cleanup"\n')
    code = main(
        [
            "apply",
            str(tmp_path / "p.toml"),
            str(tmp_path / "m.onnx"),
            "-o",
            str(tmp_path / "out.onnx"),
            "-q",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "SIGFPE" in err[0] and "a[2] int32" in err[0]
    assert not (tmp_path / "out.onnx").exists()
    # the reproducer: the original, the inputs it crashed on and the pipeline, named in the line
    repro = tmp_path / "out.onnx.repro"
    assert f"(reproducer: {repro})" in err[0]
    _assert_replays_the_crash(repro, {"a": [INT_MIN, 1], "b": [-1, 1]}, "cleanup")


def _assert_replays_the_crash(repro: Path, feeds: dict, pass_name: str) -> None:
    """The reproducer folder holds what replays the crash: the model, the crashing inputs, the pass."""
    import tomllib

    saved = np.load(repro / "inputs.npz")
    assert {k: saved[k].tolist() for k in saved.files} == feeds
    assert [p["name"] for p in tomllib.loads((repro / "passes.toml").read_text())["pass"]] == [
        pass_name
    ]
    assert [n.op_type for n in onnx.load(repro / "model.onnx").graph.node] == ["Div"]
    assert "SIGFPE" in (repro / "README.txt").read_text()
    # replaying it crashes the same way, in the worker: exit 2 again, nothing written
    code = main(
        [
            "apply",
            str(repro / "passes.toml"),
            str(repro / "model.onnx"),
            "-o",
            str(repro.parent / "replay.onnx"),
            "--repro",
            str(repro.parent / "replay.repro"),
            "-q",
        ]
    )
    assert code == 2 and not (repro.parent / "replay.onnx").exists()


def test_api_writes_a_reproducer_when_the_original_crashes(tmp_path):
    feeds = {"a": np.array([INT_MIN, 4], np.int32), "b": np.array([-1, 2], np.int32)}
    with pytest.raises(InputError) as info:
        surgery.apply(
            _divide(), [_DivideByMinusOne()], inputs=feeds, reproducer_dir=tmp_path / "repro"
        )
    assert info.value.exit_code == 2 and info.value.reproducer == str(tmp_path / "repro")
    assert f"(reproducer: {tmp_path / 'repro'})" in str(info.value)
    _assert_replays_the_crash(
        tmp_path / "repro", {"a": [INT_MIN, 4], "b": [-1, 2]}, "test-divide-by-minus-one"
    )


def test_cli_reports_a_crash_of_the_new_model_with_exit_1_and_a_reproducer(tmp_path, capsys):
    """The original runs; the pass's output crashes ORT (SIGFPE): exit 1, one line, the reproducer replays the pass."""
    original = _divide(np.array([2, 2], np.int32))
    onnx.save(original, tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", a=np.array([INT_MIN, 4], np.int32))
    (tmp_path / "p.toml").write_text('[inputs]\ndata = "in.npz"\n[[pass]]\nname = "cleanup"\n')
    # the pass comes from a plug-in file (user code: run with --allow-code)
    (tmp_path / "divide.py").write_text(
        textwrap.dedent('''
        import numpy as np
        import onnx_ir as ir
        from surgery import Numerics, SurgeryPass, SurgeryResult, register

        @register
        class DivideByMinusOne(SurgeryPass):
            """Test plug-in: the divisor becomes [-1, -1] (INT_MIN / -1 then crashes ORT)."""
            name = "test-plugin-divide-by-minus-one"
            numerics = Numerics.EXACT

            def call(self, model):
                model.graph.initializers["b"].const_value = ir.tensor(np.array([-1, -1], np.int32), name="b")
                return SurgeryResult(model, True)
    ''')
    )
    (tmp_path / "p.toml").write_text(
        '[inputs]\ndata = "in.npz"\n[[pass]]\nname = "test-plugin-divide-by-minus-one"\n'
    )
    try:
        code = main(
            [
                "apply",
                str(tmp_path / "p.toml"),
                str(tmp_path / "m.onnx"),
                "-o",
                str(tmp_path / "out.onnx"),
                "--plugin",
                str(tmp_path / "divide.py"),
                "--allow-code",
                "-q",
            ]
        )
    finally:
        from surgery import registry

        registry.unregister("test-plugin-divide-by-minus-one")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert (
        "SIGFPE" in err[0]
        and "a[2] int32" in err[0]
        and "test-plugin-divide-by-minus-one" in err[0]
    )
    assert not (tmp_path / "out.onnx").exists()
    repro = tmp_path / "out.onnx.repro"
    assert f"(reproducer: {repro})" in err[0]
    assert (repro / "model.onnx").is_file() and (repro / "inputs.npz").is_file()
    # the reproducer's model is the one BEFORE the pass: it runs (the divisor is still [2, 2])
    assert onnx.numpy_helper.to_array(
        onnx.load(repro / "model.onnx").graph.initializer[0]
    ).tolist() == [2, 2]


def test_one_worker_per_run_killed_at_the_end(mlp, test_passes):
    seen: list[int | None] = []

    def progress(_message: str) -> None:
        if worker._worker is not None:
            seen.append(worker._worker.pid)

    surgery.apply(
        mlp,
        [test_passes["test-scale-output"](), test_passes["test-perturb-weight"](delta=0.0)],
        progress=progress,
    )
    pids = {p for p in seen if p is not None}
    assert len(pids) == 1 and len(seen) >= 3
    assert worker._worker is None and not _alive(pids.pop())


def test_worker_does_not_import_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "onnxruntime.py").write_text("raise SystemExit('planted module imported')\n")
    (tmp_path / "numpy.py").write_text("raise SystemExit('planted module imported')\n")
    monkeypatch.chdir(tmp_path)
    session = OrtSession(ir.from_proto(_divide()))
    np.testing.assert_array_equal(
        session.run({"a": np.array([4, 4], np.int32), "b": np.array([2, 2], np.int32)})["c"], [2, 2]
    )
    session.close()


@pytest.mark.parametrize("isolated", [True, False], ids=["worker", "in-process"])
@pytest.mark.parametrize(
    ("elem", "dtype", "values"),
    [
        (T.BFLOAT16, ml_dtypes.bfloat16, [[1.5, -2.0, 3.0], [0.25, 0.0, -7.0]]),
        (T.FLOAT8E4M3FN, ml_dtypes.float8_e4m3fn, [[1.5, -2.0, 3.0], [0.25, 0.0, -7.0]]),
        (T.INT4, ml_dtypes.int4, [[1, -2, 3], [-8, 0, 7]]),
        (T.UINT4, ml_dtypes.uint4, [[1, 2, 3], [15, 0, 7]]),
    ],
    ids=["bfloat16", "float8e4m3fn", "int4", "uint4"],
)
def test_low_precision_inputs_and_outputs(isolated, elem, dtype, values):
    # Cast to float shows what ORT read; the low-precision output comes back with its own dtype
    nodes = [h.make_node("Cast", ["x"], ["f"], to=T.FLOAT, name="cast")]
    outputs = [vi("f", T.FLOAT, [2, 3])]
    if elem in (T.BFLOAT16, T.FLOAT8E4M3FN):
        nodes.append(h.make_node("Cast", ["f"], ["back"], to=elem, name="back"))
        outputs.append(vi("back", elem, [2, 3]))
    model = ir.from_proto(
        make_model(nodes, [vi("x", elem, [2, 3])], outputs, opset=21, ir_version=10)
    )
    x = np.array(values, np.float32).astype(dtype)
    with worker.isolation(isolated):
        session = OrtSession(model)
        out = session.run({"x": x})
        session.close()
    np.testing.assert_array_equal(out["f"], np.array(values, np.float32))
    if "back" in out:
        assert out["back"].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out["back"].astype(np.float32), np.array(values, np.float32))


def test_int4_initializer_is_packed_for_ort():
    w = np.array([[1, -2, 3, -4]] * 300, np.float32).astype(
        ml_dtypes.int4
    )  # 1200 elements: above the light threshold
    model = ir.Model(ir.Graph([], [], nodes=[], name="g", opset_imports={"": 21}), ir_version=10)
    value = ir.Value(
        name="W",
        const_value=ir.tensor(w, name="W"),
        type=ir.TensorType(ir.DataType.INT4),
        shape=ir.Shape(w.shape),
    )
    model.graph.register_initializer(value)
    node = ir.node("Cast", [value], attributes={"to": ir.DataType.FLOAT}, name="cast")
    model.graph.append(node)
    node.outputs[0].name = "y"
    node.outputs[0].dtype = ir.DataType.FLOAT
    node.outputs[0].shape = ir.Shape(w.shape)
    model.graph.outputs.append(node.outputs[0])
    for isolated in (True, False):
        with worker.isolation(isolated):
            session = OrtSession(model)
            np.testing.assert_array_equal(session.run({})["y"], w.astype(np.float32))
            session.close()


def test_sessions_lost_with_a_crashed_worker_say_so():
    crashing = OrtSession(ir.from_proto(_divide()))
    other = OrtSession(ir.from_proto(_divide(np.array([2, 2], np.int32))))
    with pytest.raises(OrtCrash, match="SIGFPE"):
        crashing.run({"a": np.array([INT_MIN, 2], np.int32), "b": np.array([-1, -1], np.int32)})
    with pytest.raises(OrtCrash, match="was lost"):
        other.run({"a": np.array([4, 4], np.int32)})
    other.close()
    crashing.close()
