"""``surgery prepare``: one command from an export to a compiler-ready model, and the apply one-liners."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from surgery.cli import main
from surgery.preparation import pipeline_path, prepare
from surgery.testing import op_counts, ort_run

ROOT = Path(__file__).resolve().parents[2]
DOCTOR_MODEL = ROOT / "examples" / "40_doctor" / "model.onnx"


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _branchy(path: Path) -> Path:
    """``y = x * 2`` when ``sr == 16000``, else ``-x``: a sample-rate input that selects a branch."""
    then_g = h.make_graph(
        [h.make_node("Mul", ["x", "two"], ["y_then"], name="then_mul")],
        "then",
        [],
        [h.make_tensor_value_info("y_then", T.FLOAT, ["batch", 4])],
    )
    else_g = h.make_graph(
        [h.make_node("Neg", ["x"], ["y_else"], name="else_neg")],
        "else",
        [],
        [h.make_tensor_value_info("y_else", T.FLOAT, ["batch", 4])],
    )
    graph = h.make_graph(
        [
            h.make_node("Equal", ["sr", "k16000"], ["is16k"], name="/sr/Equal"),
            h.make_node(
                "If", ["is16k"], ["y"], then_branch=then_g, else_branch=else_g, name="/sr/If"
            ),
        ],
        "branchy",
        [
            h.make_tensor_value_info("x", T.FLOAT, ["batch", 4]),
            h.make_tensor_value_info("sr", T.INT64, []),
        ],
        [h.make_tensor_value_info("y", T.FLOAT, ["batch", 4])],
        [
            nh.from_array(np.array(16000, np.int64), "k16000"),
            nh.from_array(np.array(2, np.float32), "two"),
        ],
    )
    return _save(graph, path)


def test_missing_shape_decision_stops_before_writing(tmp_path, capsys):
    out = tmp_path / "out.onnx"
    code = main(["prepare", str(DOCTOR_MODEL), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    # one line, naming the flag and the value prepare would have guessed
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--input-shape images:1,3,32,32" in lines[0] and "batch" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_prepare_writes_ready_model_and_the_pipeline_it_ran(tmp_path, capsys):
    out = tmp_path / "out.onnx"
    code = main(
        [
            "prepare",
            str(DOCTOR_MODEL),
            "-o",
            str(out),
            "--input-shape",
            "images:1,3,32,32",
            "--soc",
            "Ascend310P3",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "ready for ATC" in captured.out
    assert "atc: atc --model=" in captured.out and "--input_shape=images:1,3,32,32" in captured.out
    assert "--soc_version=Ascend310P3" in captured.out
    model = onnx.load(out)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32]
    assert all(
        d.HasField("dim_value") for v in model.graph.output for d in v.type.tensor_type.shape.dim
    )
    # parity with the original on the same input
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(
        ort_run(model, {"images": x})["out"],
        ort_run(onnx.load(DOCTOR_MODEL), {"images": x})["out"],
        rtol=1e-5,
        atol=1e-6,
    )
    # the pipeline file replays with `surgery apply` to the same model
    toml = pipeline_path(out)
    assert toml == tmp_path / "out.passes.toml" and toml.is_file()
    replay = tmp_path / "replay.onnx"
    assert main(["apply", str(toml), str(DOCTOR_MODEL), "-o", str(replay), "-q"]) == 0
    assert op_counts(onnx.load(replay)) == op_counts(model)
    # and the doctor finds nothing that will fail on the result
    assert main(["doctor", str(out)]) == 0


def test_pin_turns_the_branch_input_into_a_constant(tmp_path):
    src = _branchy(tmp_path / "branchy.onnx")
    out = tmp_path / "out.onnx"
    result = prepare(src, out, input_shapes="x:1,4", pins={"sr": 16000})
    assert result.ready and result.exit_code == 0
    model = onnx.load(out)
    assert [i.name for i in model.graph.input] == ["x"]
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.testing.assert_array_equal(ort_run(model, {"x": x})["y"], x * 2)  # the 16 kHz branch
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    steps = tomllib.loads(pipeline_path(out).read_text())["pass"]
    names = [s["name"] for s in steps]
    assert names.index("pin-inputs") < names.index("fix-shapes")
    assert steps[names.index("pin-inputs")]["values"] == {"sr": 16000}


def test_pin_and_shape_of_unknown_inputs_are_named(tmp_path, capsys):
    src = _branchy(tmp_path / "branchy.onnx")
    assert (
        main(
            [
                "prepare",
                str(src),
                "-o",
                str(tmp_path / "o.onnx"),
                "--input-shape",
                "x:1,4",
                "--pin",
                "rate=1",
            ]
        )
        == 2
    )
    assert "--pin: no input named 'rate'" in capsys.readouterr().err
    assert main(["prepare", str(src), "-o", str(tmp_path / "o.onnx"), "--pin", "sr=abc"]) == 2
    assert "--pin sr=abc" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "o.passes.toml").exists()


def test_not_ready_exits_1_naming_what_will_fail(tmp_path, capsys):
    # MatMulInteger has no ATC parser and no pass rewrites it: prepare verifies, writes, and says so
    graph = h.make_graph(
        [h.make_node("MatMulInteger", ["a", "b"], ["y"], name="mmi")],
        "mmi",
        [
            h.make_tensor_value_info("a", T.UINT8, [2, 3]),
            h.make_tensor_value_info("b", T.UINT8, [3, 2]),
        ],
        [h.make_tensor_value_info("y", T.INT32, [2, 2])],
    )
    src = _save(graph, tmp_path / "mmi.onnx", opset=13)
    out = tmp_path / "out.onnx"
    code = main(["prepare", str(src), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "not ready for ATC" in err and "MatMulInteger" in err
    assert out.is_file()


def test_prepare_never_writes_over_its_input(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    src.write_bytes(DOCTOR_MODEL.read_bytes())
    before = src.read_bytes()
    assert main(["prepare", str(src), "-o", str(src), "--input-shape", "images:1,3,32,32"]) == 2
    assert src.read_bytes() == before


# -- apply one-liners -------------------------------------------------------------------------


def test_apply_takes_a_list_of_pass_names_and_input_shape(tmp_path, capsys):
    out = tmp_path / "o.onnx"
    code = main(
        [
            "apply",
            "make-static,cleanup",
            str(DOCTOR_MODEL),
            "-o",
            str(out),
            "--input-shape",
            "images:1,3,32,32",
            "-q",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # -q hides the table but never the compiler command
    assert "fix-shapes" not in captured.out and captured.out.startswith("atc: atc --model=")
    model = onnx.load(out)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]


def test_apply_one_liner_options_through_set(tmp_path, capsys):
    out = tmp_path / "o.onnx"
    code = main(
        [
            "apply",
            "fix-shapes,make-static",
            str(DOCTOR_MODEL),
            "-o",
            str(out),
            "--set",
            'fix-shapes.shapes="images:2,3,32,32"',
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert onnx.load(out).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


@pytest.mark.parametrize(
    ("pipeline", "extra", "message"),
    [
        ("make-statc,cleanup", [], "unknown pass 'make-statc' (did you mean 'make-static'?)"),
        ("cleanup", ["--set", "make-static.max_unroll=3"], "no pass 'make-static' in the pipeline"),
        ("fix-shapes", [], "fix-shapes: give 'shapes' or 'dims'"),
    ],
)
def test_apply_one_liner_bad_input_is_one_line_exit_2(tmp_path, capsys, pipeline, extra, message):
    out = tmp_path / "o.onnx"
    assert main(["apply", pipeline, str(DOCTOR_MODEL), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_input_shape_overrides_the_files_fix_shapes(tmp_path, capsys):
    toml = tmp_path / "p.toml"
    toml.write_text(
        'schema_version = 1\n[[pass]]\nname = "fix-shapes"\nshapes = "images:4,3,32,32"\n'
        '[[pass]]\nname = "make-static"\n'
    )
    out = tmp_path / "o.onnx"
    assert (
        main(
            [
                "apply",
                str(toml),
                str(DOCTOR_MODEL),
                "-o",
                str(out),
                "--input-shape",
                "images:1,3,32,32",
                "-q",
            ]
        )
        == 0
    )
    assert onnx.load(out).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_prepare_runs_from_the_installed_command(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "surgery",
            "prepare",
            str(DOCTOR_MODEL),
            "-o",
            str(tmp_path / "o.onnx"),
            "--input-shape",
            "images:1,3,32,32",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("atc: atc --model=")


def test_branch_selecting_input_without_pin_stops_naming_the_value(tmp_path, capsys):
    src = _branchy(tmp_path / "branchy.onnx")
    out = tmp_path / "out.onnx"
    assert main(["prepare", str(src), "-o", str(out), "--input-shape", "x:1,4", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "add --pin sr=16000" in err[0] and "/sr/If" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["branchy.onnx"]


def test_prepare_splits_nms_off_and_the_head_is_ready(tmp_path, capsys):
    """Issue 13 item 9: NMS computing an output kept the emitted pipeline from a static model; now
    prepare splits it off (after make-static), the head is ready and head then tail is the original."""
    inits = [
        nh.from_array(np.array([5], np.int64), "max_out"),
        nh.from_array(np.array([0.5], np.float32), "iou"),
        nh.from_array(np.array([0.1], np.float32), "thr"),
        nh.from_array(np.array([0, 2, 1], np.int64), "perm"),
    ]
    nodes = [
        h.make_node("Sigmoid", ["x"], ["boxes"], name="boxes"),
        h.make_node("ReduceMax", ["x"], ["best"], name="best", axes=[2], keepdims=1),
        h.make_node("Transpose", ["best"], ["scores"], name="scores", perm=[0, 2, 1]),
        h.make_node(
            "NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "thr"], ["sel"], name="nms"
        ),
    ]
    graph = h.make_graph(
        nodes,
        "det",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 8, 4])],
        [h.make_tensor_value_info("sel", T.INT64, [None, 3])],
        inits,
    )
    src = _save(graph, tmp_path / "det.onnx")
    out = tmp_path / "out.onnx"
    code = main(["prepare", str(src), "-o", str(out), "--input-shape", "x:1,8,4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "ready for ATC" in captured.out and "split-postprocess" in captured.out
    head, tail = onnx.load(out), onnx.load(tmp_path / "out.tail.onnx")
    assert "NonMaxSuppression" not in {n.op_type for n in head.graph.node}
    assert all(
        d.HasField("dim_value") for v in head.graph.output for d in v.type.tensor_type.shape.dim
    )
    x = np.random.default_rng(3).uniform(0, 1, (1, 8, 4)).astype(np.float32)
    mid = ort_run(head, {"x": x})
    got = ort_run(
        tail, {k: v for k, v in {**mid, "x": x}.items() if k in {i.name for i in tail.graph.input}}
    )
    np.testing.assert_array_equal(got["sel"], ort_run(onnx.load(src), {"x": x})["sel"])


def test_composed_pipeline_puts_pins_first_and_the_users_passes_last_in_one_file():
    from surgery import registry
    from surgery.doctor.pipeline import EmittedPipeline
    from surgery.pipeline import Pipeline, Step
    from surgery.preparation import _compose_text

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    hostile = 'sr\n[[pass]]\nname = "rewrite"'
    doctored = Pipeline([Step(registry.get("cleanup")())])
    emitted = EmittedPipeline(
        text="",
        steps=["cleanup"],
        missing=[],
        commented=["x"],
        problems=[],
        pipeline=doctored,
        header=["doctor's header"],
        notes={0: ["fixes: a"], 1: ["Optional: b", "[[pass]]", 'name = "x"', ""]},
    )
    text = _compose_text(
        emitted,
        {hostile: 16000},
        Path("/data/in.npz"),
        "prepare's header",
        plugins=[Path("/p/plug.py")],
        extra=[Step(registry.get("cleanup")(fuse=False))],
    )
    assert text.startswith("# prepare's header\n# doctor's header\n")
    doc = tomllib.loads(text)
    assert [p["name"] for p in doc["pass"]] == ["pin-inputs", "cleanup", "cleanup"]
    assert doc["pass"][0]["values"] == {hostile: 16000} and doc["pass"][2] == {
        "name": "cleanup",
        "fuse": False,
    }
    assert doc["inputs"] == {"data": "/data/in.npz"} and doc["plugins"] == ["/p/plug.py"]
    # the doctor's optional block, then one empty line, then the user's passes
    assert '# name = "x"\n\n# passes given on the command line (--pass)\n[[pass]]' in text
