"""`surgery doctor`: exit 0/1/2, table by default, --json, --emit-pipeline."""

import json

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

from surgery.cli import main
from surgery.testing import make_model, vi


def _save(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _failing(tmp_path):
    return _save(
        tmp_path,
        make_model(
            [h.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="pool")],
            [vi("x", T.FLOAT, ["n", 1, 4, 4])],
            [vi("y", T.FLOAT, ["n", 1, 3, 3])],
        ),
    )


def test_will_fail_exits_1_with_the_table(tmp_path, capsys):
    assert main(["doctor", str(_failing(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "maxpool-indices" in out and "dynamic-dims" in out and "drop-maxpool-indices" in out
    assert "ATC will fail on this model (exit 1)" in out


def test_clean_model_exits_0(tmp_path, capsys):
    path = _save(
        tmp_path,
        make_model(
            [h.make_node("Relu", ["x"], ["y"], name="r")],
            [vi("x", T.FLOAT, [1, 2])],
            [vi("y", T.FLOAT, [1, 2])],
        ),
    )
    assert main(["doctor", str(path)]) == 0
    assert "No findings" in capsys.readouterr().out


def test_json_to_stdout_and_to_a_file(tmp_path, capsys):
    path = _failing(tmp_path)
    assert main(["doctor", str(path), "--report", "-", "--soc", "Ascend310"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["soc_family"] == "Ascend310" and data["summary"]["will-fail"] == 2
    out = tmp_path / "r.json"
    assert main(["doctor", str(path), "--report", str(out)]) == 1
    assert "SEVERITY" in capsys.readouterr().out
    assert json.loads(out.read_text())["model"] == str(path)


def test_emit_pipeline_writes_a_loadable_file(tmp_path, capsys):
    path = _failing(tmp_path)
    toml = tmp_path / "p.toml"
    assert main(["doctor", str(path), "--emit-pipeline", str(toml), "--dim", "n=2"]) == 1
    err = capsys.readouterr().err
    assert f"wrote {toml}" in err
    text = toml.read_text()
    assert 'shapes = { "x" = [2, 1, 4, 4] }' in text
    from surgery.pipeline import load_pipeline

    steps = [s.name for s in load_pipeline(toml).steps]
    assert steps[steps.index("fix-shapes") :] == [
        "fix-shapes",
        "make-static",
        "cleanup",
        "assert-static",
    ]
    # drop-maxpool-indices is a step when this build registers it, else named as needed
    assert ("drop-maxpool-indices" in steps) != (
        "# NEEDED, not available in this build: drop-maxpool-indices" in text
    )


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    cases = [
        ["doctor", str(tmp_path / "missing.onnx")],
        ["doctor", str(_failing(tmp_path)), "--soc", "gpu"],
        ["doctor", str(_failing(tmp_path)), "--dim", "batch"],
        ["doctor", str(_failing(tmp_path)), "--emit-pipeline", str(tmp_path / "no" / "p.toml")],
        ["doctor", str(_failing(tmp_path)), "--input-shape", "nope:1,1,4,4"],
    ]
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    cases.append(["doctor", str(tmp_path / "junk.onnx")])
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("surgery: error:"), (argv, err)


def test_input_shape_in_atc_syntax(tmp_path, capsys):
    toml = tmp_path / "p.toml"
    model = make_model(
        [h.make_node("Add", ["a", "b"], ["y"], name="add")],
        [vi("a", T.FLOAT, ["n", 3]), vi("b", T.FLOAT, ["n", 3])],
        [vi("y", T.FLOAT, ["n", 3])],
        {"unused": np.zeros(1, np.float32)},
    )
    assert (
        main(
            [
                "doctor",
                str(_save(tmp_path, model)),
                "--emit-pipeline",
                str(toml),
                "--input-shape",
                "a:8,3;b:8,3",
            ]
        )
        == 1
    )
    capsys.readouterr()
    assert 'shapes = { "a" = [8, 3], "b" = [8, 3] }' in toml.read_text()
