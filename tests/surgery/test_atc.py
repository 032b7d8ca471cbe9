"""The atc command line: syntax, formats, placeholders, dynamic gears; printed and reported by apply."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from surgery.atc import SOC_PLACEHOLDER, atc_command, dynamic_batch_command
from surgery.cli import main
from surgery.testing import make_model, vi

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "10_static_shapes"


def _builders():
    spec = importlib.util.spec_from_file_location("static_models_atc", EXAMPLE / "build_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _model(inputs):
    first = inputs[0].type.tensor_type
    out = h.make_tensor_value_info("y", first.elem_type, [d.dim_value or d.dim_param for d in first.shape.dim])
    return ir.from_proto(make_model([h.make_node("Identity", [inputs[0].name], ["y"], name="id")], inputs, [out]))


def test_image_model_line():
    model = _model([vi("images", T.FLOAT, [1, 3, 224, 224]), vi("scale", T.FLOAT, [])])
    cmd = atc_command(model, "/out/det.onnx", soc_version="Ascend310P3")
    argv = shlex.split(cmd.line())
    assert argv == [
        "atc", "--model=/out/det.onnx", "--framework=5", "--output=/out/det", "--input_format=NCHW",
        "--input_shape=images:1,3,224,224;scale:", "--soc_version=Ascend310P3",
    ]
    assert cmd.dynamic_inputs == ()


def test_nd_format_placeholder_and_dynamic_inputs_flagged():
    model = _model([vi("tokens", T.INT64, [1, "seq"])])
    cmd = atc_command(model, "m.onnx")
    assert cmd.input_format == "ND" and cmd.input_shape == "tokens:1,-1"
    assert cmd.soc_version == SOC_PLACEHOLDER and cmd.dynamic_inputs == ("tokens",)
    assert shlex.split(cmd.line())[-1] == f"--soc_version={SOC_PLACEHOLDER}"


def test_dynamic_batch_gears():
    model = _model([vi("x", T.FLOAT, [4, 3, 32, 32]), vi("m", T.FLOAT, [4, 10])])
    cmd = dynamic_batch_command(model, "src.onnx", [1, 4, 8], soc_version="Ascend310")
    assert cmd.input_shape == "x:-1,3,32,32;m:-1,10"
    assert "--dynamic_batch_size=1,4,8" in cmd.argv() and cmd.output == "src_dynamic_batch"


def test_apply_prints_atc_and_reports_it(tmp_path, capsys):
    B = _builders()
    onnx.save(B.vad(), tmp_path / "vad.onnx")
    out = tmp_path / "vad_static.onnx"
    code = main(["apply", str(EXAMPLE / "passes.toml"), str(tmp_path / "vad.onnx"), "-o", str(out),
                 "--soc-version", "Ascend310B1", "--report", str(tmp_path / "r.json")])
    printed = capsys.readouterr().out
    assert code == 0
    line = next(l for l in printed.splitlines() if l.startswith("atc: "))
    assert shlex.split(line[5:]) == [
        "atc", f"--model={out}", "--framework=5", f"--output={tmp_path / 'vad_static'}", "--input_format=ND",
        "--input_shape=input:1,512;state:2,1,16", "--soc_version=Ascend310B1",
    ]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] and report["atc"][0]["command"] == line[5:]
    written = onnx.load(out)
    assert not any(n.op_type == "If" for n in written.graph.node)
    assert [i.name for i in written.graph.input] == ["input", "state"]
    # the written model runs and matches the original at sr=16000
    from surgery.testing import ort_run

    feeds = {"input": np.random.default_rng(0).random((1, 512), dtype=np.float32),
             "state": np.zeros((2, 1, 16), np.float32)}
    want = ort_run(B.vad(), {**feeds, "sr": np.array(16000)})
    got = ort_run(written, feeds)
    np.testing.assert_allclose(got["prob"], want["prob"], rtol=1e-5)
