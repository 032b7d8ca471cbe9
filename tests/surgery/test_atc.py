"""The atc command line: syntax, formats, placeholders, gears, ranges, precision; printed and reported by apply.

``validate`` is a small checker written from ATC's documented syntax (canncommercial 850
atlasatcparam_16_0020 and 0074, the precision pages): every atc line the tool prints in these tests
goes through it. No ATC is needed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.atc import (
    SOC_PLACEHOLDER,
    atc_command,
    dynamic_batch_command,
    dynamic_dims_command,
    input_roles,
    precision_flags,
    range_command,
)
from surgery.cli import main
from surgery.errors import InputError
from surgery.testing import make_model, vi

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "10_static_shapes"

# -- a validator from the documented syntax ------------------------------------------------------
_DIM = r"(?:-1|\d+|\d+~(?:\d+|-1))"
_NAME = r"[^;,\n\r]+"
_SHAPE_ENTRY = re.compile(rf"^{_NAME}:(?:{_DIM}(?:,{_DIM})*)?$")
_KNOWN = {
    "model",
    "framework",
    "output",
    "input_format",
    "input_shape",
    "dynamic_batch_size",
    "dynamic_dims",
    "out_nodes",
    "precision_mode",
    "precision_mode_v2",
    "keep_dtype",
    "soc_version",
    "insert_op_conf",
}
_V1 = {
    "force_fp16",
    "force_fp32",
    "cube_fp16in_fp32out",
    "allow_fp32_to_fp16",
    "must_keep_origin_dtype",
    "allow_mix_precision",
    "allow_mix_precision_fp16",
    "allow_mix_precision_bf16",
}
_V2 = {"fp16", "origin", "cube_fp16in_fp32out", "mixed_float16", "mixed_bfloat16"}


def validate(line: str) -> dict[str, str]:
    """Parse one printed atc line; assert every documented rule; return its options."""
    argv = shlex.split(line)
    assert argv[0] == "atc"
    opts: dict[str, str] = {}
    for arg in argv[1:]:
        m = re.match(r"^--([a-z_0-9]+)=(.*)$", arg, re.DOTALL)
        assert m, f"not --key=value: {arg!r}"
        key, value = m.groups()
        assert key in _KNOWN, key
        assert key not in opts, f"--{key} given twice"
        assert "\n" not in value and "\r" not in value
        opts[key] = value
    for key in ("model", "framework", "output", "input_shape", "soc_version"):
        assert key in opts, f"--{key} missing"
    assert opts["framework"] == "5"
    assert opts["input_format"] in {"NCHW", "ND", "NHWC", "NCDHW"}
    entries = opts["input_shape"].split(";")
    assert all(_SHAPE_ENTRY.match(e) for e in entries), opts["input_shape"]
    dims = [e.rsplit(":", 1)[1].split(",") if e.rsplit(":", 1)[1] else [] for e in entries]
    minus = sum(d == "-1" for ds in dims for d in ds)
    ranged = any("~" in d for ds in dims for d in ds)
    gears = [k for k in ("dynamic_batch_size", "dynamic_dims") if k in opts]
    assert len(gears) <= 1, "dynamic_batch_size and dynamic_dims are mutually exclusive"
    if "dynamic_batch_size" in opts:
        sizes = opts["dynamic_batch_size"].split(",")
        assert 2 <= len(sizes) <= 100 and all(s.isdigit() and int(s) >= 1 for s in sizes)
        assert all(ds and ds[0] == "-1" and "-1" not in ds[1:] for ds in dims), (
            "batch gears: -1 at dim 0 only"
        )
    if "dynamic_dims" in opts:
        profiles = opts["dynamic_dims"].split(";")
        assert 2 <= len(profiles) <= 100
        assert all(
            len(p.split(",")) == minus and all(v.isdigit() for v in p.split(",")) for p in profiles
        ), "each profile gives a value for every -1, in order"
        assert "insert_op_conf" not in opts, "no AIPP with --dynamic_dims"
        assert opts["input_format"] == "ND"
    if gears:
        assert not ranged
    if "precision_mode" in opts:
        assert "precision_mode_v2" not in opts and opts["precision_mode"] in _V1
    if "precision_mode_v2" in opts:
        assert opts["precision_mode_v2"] in _V2
    if "keep_dtype" in opts:
        mode = opts.get("precision_mode", opts.get("precision_mode_v2"))
        assert mode not in {"must_keep_origin_dtype", "origin"}
    if "out_nodes" in opts:
        assert all(re.match(rf"^{_NAME}:\d+$", p) for p in opts["out_nodes"].split(";"))
    if re.match(r"^Ascend310(B\d*)?$", opts["soc_version"]):
        assert not ranged and (minus == 0 or gears), (
            "no ranges or -1 on Ascend310/310B without gears"
        )
    return opts


def _printed(text: str) -> list[str]:
    lines = [
        line[5:]
        for line in text.splitlines()
        if line.startswith("atc: ") and not line.startswith(("atc: note", "atc: warn"))
    ]
    for line in lines:
        validate(line)
    return lines


# -- models ---------------------------------------------------------------------------------------
def _builders():
    spec = importlib.util.spec_from_file_location("static_models_atc", EXAMPLE / "build_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _model(inputs):
    first = inputs[0].type.tensor_type
    out = h.make_tensor_value_info(
        "y", first.elem_type, [d.dim_value or d.dim_param for d in first.shape.dim]
    )
    return ir.from_proto(
        make_model([h.make_node("Identity", [inputs[0].name], ["y"], name="id")], inputs, [out])
    )


def _conv_model(image_shape=(1, 3, 8, 8)):
    w = np.ones((4, 3, 3, 3), np.float32)
    return ir.from_proto(
        make_model(
            [
                h.make_node("Sub", ["images", "mean"], ["c"], name="norm"),
                h.make_node("Conv", ["c", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
                h.make_node("Mul", ["y", "scale"], ["z"], name="scale_mul"),
            ],
            [vi("images", T.FLOAT, list(image_shape)), vi("scale", T.FLOAT, [])],
            [vi("z", T.FLOAT, [image_shape[0], 4, *image_shape[2:]])],
            {"w": w, "mean": np.array(0.5, np.float32)},
        )
    )


def test_image_model_line():
    cmd = atc_command(_conv_model(), "/out/det.onnx", soc_version="Ascend310P3")
    argv = shlex.split(cmd.line())
    assert argv == [
        "atc",
        "--model=/out/det.onnx",
        "--framework=5",
        "--output=/out/det",
        "--input_format=NCHW",
        "--input_shape=images:1,3,8,8;scale:",
        "--soc_version=Ascend310P3",
    ]
    assert cmd.dynamic_inputs == ()
    validate(cmd.line())


def test_4d_input_without_convolution_is_nd():
    """A spectrogram [1, 1, 64, 100] fed to MatMul, or attention [B, H, T, D], is not an image."""
    spec = _model([vi("spec", T.FLOAT, [1, 1, 64, 100])])
    assert input_roles(spec) == {"spec": "nd"} and atc_command(spec, "m.onnx").input_format == "ND"
    assert input_roles(_conv_model()) == {"images": "image", "scale": "nd"}


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
    validate(cmd.line())
    with pytest.raises(InputError, match="2 to 100 profiles"):
        dynamic_batch_command(model, "src.onnx", [4])
    with pytest.raises(InputError, match="2 to 100 profiles"):
        dynamic_batch_command(model, "src.onnx", list(range(1, 102)))
    with pytest.raises(InputError, match="still dynamic"):
        dynamic_batch_command(_model([vi("x", T.FLOAT, [4, "n"])]), "src.onnx", [1, 2])


def test_dynamic_dims_every_minus_one_in_order():
    model = _model([vi("a", T.FLOAT, ["b", 3, "h"]), vi("t", T.INT64, [1, "s"])])
    profiles = [
        {"a": [1, 3, 16], "t": [1, 8]},
        {"a": [2, 3, 32], "t": [1, 16]},
        {"a": [4, 3, 32], "t": [1, 16]},
    ]
    cmd = dynamic_dims_command(model, "m.onnx", profiles, soc_version="Ascend310B1")
    assert cmd.input_shape == "a:-1,3,-1;t:1,-1"
    assert cmd.dynamic_dims == "1,16,8;2,32,16;4,32,16" and cmd.input_format == "ND"
    validate(cmd.line())
    with pytest.raises(InputError, match="2 to 100"):
        dynamic_dims_command(model, "m.onnx", profiles[:1])
    with pytest.raises(InputError, match="2 to 100"):
        dynamic_dims_command(
            model, "m.onnx", [{"a": [i, 3, 8], "t": [1, 4]} for i in range(1, 102)]
        )
    with pytest.raises(InputError, match="AIPP"):
        dynamic_dims_command(model, "m.onnx", profiles, aipp_config="aipp.cfg")
    with pytest.raises(InputError, match="dim 1 is 4, the model has 3"):
        dynamic_dims_command(model, "m.onnx", [{"a": [1, 4, 8], "t": [1, 4]}, profiles[0]])
    with pytest.raises(InputError, match="no shape for input 't'"):
        dynamic_dims_command(model, "m.onnx", [{"a": [1, 3, 8]}, profiles[0]])


def test_ranges_refused_on_310_and_written_per_cann():
    model = _model([vi("tokens", T.INT64, [1, "seq"])])
    for soc in ("Ascend310", "Ascend310B1"):
        with pytest.raises(InputError, match="static shapes or gears"):
            range_command(model, "m.onnx", cann=8, soc_version=soc)
    seven = range_command(model, "m.onnx", cann=7, soc_version="Ascend310P3")
    eight = range_command(model, "m.onnx", cann=8, soc_version="Ascend310P3")
    assert seven.input_shape == eight.input_shape == "tokens:1,-1"
    assert ">= 1" in seven.notes[0] and ">= 0" in eight.notes[0]
    bounded = range_command(
        model, "m.onnx", cann=8, soc_version="Ascend310P3", ranges={"tokens": {1: (1, 512)}}
    )
    assert bounded.input_shape == "tokens:1,1~512" and not bounded.notes
    with pytest.raises(InputError, match="not valid on CANN 7"):
        range_command(
            model, "m.onnx", cann=7, soc_version="Ascend910", ranges={"tokens": {1: (0, 8)}}
        )
    for cmd in (seven, eight, bounded):
        validate(cmd.line())


def test_precision_flags():
    assert precision_flags("fp16") == ("--precision_mode=force_fp16",)
    assert precision_flags("fp16", "k.txt", v2=True) == (
        "--precision_mode_v2=fp16",
        "--keep_dtype=k.txt",
    )
    assert precision_flags("mixed_float16", "k.txt") == (
        "--precision_mode=allow_mix_precision_fp16",
        "--keep_dtype=k.txt",
    )
    with pytest.raises(InputError, match="no effect"):
        precision_flags("origin", "k.txt")
    cmd = atc_command(_conv_model(), "m.onnx", precision=precision_flags("fp16", "keep me.txt"))
    assert validate(cmd.line())["keep_dtype"] == "keep me.txt"


@pytest.mark.parametrize("name", ["in\nput", "a;b", "a,b", "x\r"])
def test_names_atc_syntax_cannot_carry_are_refused(name):
    with pytest.raises(InputError, match="rename it"):
        atc_command(_model([vi(name, T.FLOAT, [1, 4])]), "m.onnx")


def test_tensorflow_style_name_keeps_its_colon():
    cmd = atc_command(_model([vi("input_1:0", T.FLOAT, [1, 4])]), "m.onnx")
    assert cmd.input_shape == "input_1:0:1,4"
    validate(cmd.line())


def test_hostile_names_are_shell_quoted(tmp_path):
    name = "$(touch pwned)'\"`x`"
    cmd = atc_command(_model([vi(name, T.FLOAT, [1, 4])]), tmp_path / "a b; rm -rf.onnx")
    argv = shlex.split(cmd.line())
    assert (
        f"--input_shape={name}:1,4" in argv
        and argv[1] == f"--model={tmp_path / 'a b; rm -rf.onnx'}"
    )
    validate(cmd.line())


def test_apply_prints_atc_and_reports_it(tmp_path, capsys):
    B = _builders()
    onnx.save(B.vad(), tmp_path / "vad.onnx")
    out = tmp_path / "vad_static.onnx"
    code = main(
        [
            "apply",
            str(EXAMPLE / "passes.toml"),
            str(tmp_path / "vad.onnx"),
            "-o",
            str(out),
            "--soc",
            "Ascend310B1",
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    line = _printed(printed)[0]
    assert shlex.split(line) == [
        "atc",
        f"--model={out}",
        "--framework=5",
        f"--output={tmp_path / 'vad_static'}",
        "--input_format=ND",
        "--input_shape=input:1,512;state:2,1,16",
        "--soc_version=Ascend310B1",
    ]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] and report["atc"][0]["command"] == line
    written = onnx.load(out)
    assert not any(n.op_type == "If" for n in written.graph.node)
    assert [i.name for i in written.graph.input] == ["input", "state"]
    # the written model runs and matches the original at sr=16000
    from surgery.testing import ort_run

    feeds = {
        "input": np.random.default_rng(0).random((1, 512), dtype=np.float32),
        "state": np.zeros((2, 1, 16), np.float32),
    }
    want = ort_run(B.vad(), {**feeds, "sr": np.array(16000)})
    got = ort_run(written, feeds)
    np.testing.assert_allclose(got["prob"], want["prob"], rtol=1e-5)


def test_split_head_gets_out_nodes(tmp_path, capsys):
    """A head cut before NMS has outputs that are not the original's: --out_nodes names them."""
    boxes = h.make_node("Identity", ["b"], ["boxes"], name="box_head")
    scores = h.make_node("Sigmoid", ["s"], ["scores"], name="score_head")
    nms = h.make_node(
        "NonMaxSuppression", ["boxes", "scores", "k", "iou", "th"], ["sel"], name="nms"
    )
    model = make_model(
        [boxes, scores, nms],
        [vi("b", T.FLOAT, [1, 8, 4]), vi("s", T.FLOAT, [1, 1, 8])],
        [vi("sel", T.INT64, ["n", 3])],
        {
            "k": np.array([5], np.int64),
            "iou": np.array([0.5], np.float32),
            "th": np.array([0.1], np.float32),
        },
        opset=17,
    )
    onnx.save(model, tmp_path / "det.onnx")
    toml = tmp_path / "p.toml"
    toml.write_text('[[pass]]\nname = "split-postprocess"\n')
    code = main(["apply", str(toml), str(tmp_path / "det.onnx"), "-o", str(tmp_path / "head.onnx")])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = _printed(out)
    head = validate(lines[0])
    assert head["out_nodes"] == "box_head:0;score_head:0"
    assert all("out_nodes" not in validate(line) for line in lines[1:])


def _batch_model():
    return make_model(
        [
            h.make_node("MatMul", ["x", "W"], ["y0"], name="proj"),
            h.make_node("Relu", ["y0"], ["y"], name="act"),
        ],
        [vi("x", T.FLOAT, ["batch", 4, 8])],
        [vi("y", T.FLOAT, ["batch", 4, 5])],
        {"W": np.random.default_rng(0).random((8, 5), dtype=np.float32)},
    )


def test_buckets_print_valid_gear_lines_after_every_gear(tmp_path, capsys):
    onnx.save(_batch_model(), tmp_path / "m.onnx")
    (tmp_path / "p.toml").write_text(
        '[[pass]]\nname = "make-static"\n[[pass]]\nname = "assert-static"\n'
    )
    code = main(
        [
            "apply",
            str(tmp_path / "p.toml"),
            str(tmp_path / "m.onnx"),
            "-o",
            str(tmp_path / "o.onnx"),
            "--soc",
            "Ascend310",
            "--buckets",
            "batch=1,2,4",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    lines = _printed(out)
    assert len(lines) == 4 and validate(lines[-1])["dynamic_batch_size"] == "1,2,4"
    # the gear line comes after every gear's own static model was built and gated
    assert out.index("dynamic batch gears") > out.index("== bucket batch4")


def test_gear_command_withheld_when_a_gear_is_not_static():
    from surgery.buckets import apply_buckets

    assert apply_buckets(_batch_model(), [], "batch=1,2").dynamic_batch is not None
    # each gear still has a dynamic 't': it is not a static model, so no gear command is given
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="act")],
        [vi("x", T.FLOAT, ["batch", "t"])],
        [vi("y", T.FLOAT, ["batch", "t"])],
    )
    result = apply_buckets(model, [], "batch=1,2")
    assert [r.model.graph.inputs[0].shape[0] for r in result.runs] == [1, 2]
    assert result.dynamic_batch is None


def test_precision_command_prints_valid_lines(tmp_path, capsys):
    model = make_model(
        [h.make_node("ReduceSumSquare", ["x"], ["e"], name="energy", keepdims=1)],
        [vi("x", T.FLOAT, [1, 64])],
        [vi("e", T.FLOAT, [1, 1])],
    )
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.full((1, 64), 80.0, np.float32))
    for flag in ("precision_mode", "precision_mode_v2"):
        for mode in ("fp16", "mixed_float16", "origin"):
            main(
                [
                    "precision",
                    str(tmp_path / "m.onnx"),
                    "--data",
                    str(tmp_path / "d.npz"),
                    "--mode",
                    mode,
                    "--precision-flag",
                    flag,
                    "--keep-dtype",
                    str(tmp_path / "k.txt"),
                    "--soc",
                    "Ascend310B1",
                ]
            )
            (line,) = _printed(capsys.readouterr().out)
            opts = validate(line)
            assert (flag in opts) and ("keep_dtype" in opts) == (mode == "fp16")


def test_one_bucket_gives_no_gear_command():
    from surgery.buckets import apply_buckets

    result = apply_buckets(_batch_model(), [], "batch=4")
    assert len(result.runs) == 1 and result.dynamic_batch is None


def _seq_model():
    """A text encoder's inputs: ids and a mask, both [batch, seq]."""
    return make_model(
        [
            h.make_node("Cast", ["ids"], ["f"], name="to_float", to=T.FLOAT),
            h.make_node("Mul", ["f", "mask"], ["y"], name="masked"),
        ],
        [vi("ids", T.INT64, ["batch", "seq"]), vi("mask", T.FLOAT, ["batch", "seq"])],
        [vi("y", T.FLOAT, ["batch", "seq"])],
    )


def test_buckets_over_a_non_batch_dim_give_dynamic_dims_gears(tmp_path, capsys):
    """Buckets of a sequence length (batch fixed by fix-shapes) are ATC --dynamic_dims gears: each -1
    in order, one profile per verified bucket."""
    onnx.save(_seq_model(), tmp_path / "m.onnx")
    (tmp_path / "p.toml").write_text(
        '[[pass]]\nname = "fix-shapes"\ndims = { batch = 1 }\n\n[[pass]]\nname = "make-static"\n'
    )
    code = main(
        [
            "apply",
            str(tmp_path / "p.toml"),
            str(tmp_path / "m.onnx"),
            "-o",
            str(tmp_path / "o.onnx"),
            "--soc-version",
            "Ascend310P3",
            "--buckets",
            "seq=16,32,64",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    lines = _printed(out)
    assert len(lines) == 4
    opts = validate(lines[-1])
    assert (
        opts["input_shape"] == "ids:1,-1;mask:1,-1" and opts["dynamic_dims"] == "16,16;32,32;64,64"
    )
    assert "dynamic dims gears" in out and out.index("dynamic dims gears") > out.index(
        "== bucket seq64"
    )


def test_prepare_prints_the_gear_command_after_every_gear(tmp_path, capsys):
    onnx.save(_seq_model(), tmp_path / "m.onnx")
    # a size given for the bucketed dim (the planned 16): each bucket's binding wins over it
    # (surgery.buckets.bucket_pipeline), for every gear
    code = main(
        [
            "prepare",
            str(tmp_path / "m.onnx"),
            "-o",
            str(tmp_path / "b.onnx"),
            "--input-shape",
            "ids:1,16;mask:1,16",
            "--buckets",
            "seq=16,32",
            "-q",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    lines = _printed(out)
    assert len(lines) == 3 and "ids:1,32" in lines[1]
    assert validate(lines[-1])["dynamic_dims"] == "16,16;32,32"
    # or -1 there: the same gears
    code = main(
        [
            "prepare",
            str(tmp_path / "m.onnx"),
            "-o",
            str(tmp_path / "o.onnx"),
            "--input-shape",
            "ids:1,-1;mask:1,-1",
            "--buckets",
            "seq=16,32",
            "-q",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    lines = _printed(out)
    assert len(lines) == 3 and validate(lines[-1])["dynamic_dims"] == "16,16;32,32"
    assert lines[0].startswith("atc --model=") and "ids:1,16" in lines[0]


def test_cann_release_decides_the_dynamic_line_and_310_refuses_it(tmp_path, capsys):
    """A model left dynamic: --cann 7|8 writes ATC's dynamic-shape line with that release's -1 meaning;
    Ascend310/310B take only static shapes or gears, so there the line is refused, not printed."""
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="act")],
        [vi("x", T.FLOAT, ["batch", 8])],
        [vi("y", T.FLOAT, ["batch", 8])],
    )
    onnx.save(model, tmp_path / "m.onnx")
    for cann, meaning in ((7, ">= 1"), (8, ">= 0")):
        code = main(
            [
                "apply",
                "cleanup",
                str(tmp_path / "m.onnx"),
                "-o",
                str(tmp_path / f"o{cann}.onnx"),
                "--soc-version",
                "Ascend310P3",
                "--cann",
                str(cann),
            ]
        )
        captured = capsys.readouterr()
        assert code == 0, captured.err
        (line,) = _printed(captured.out)
        assert validate(line)["input_shape"] == "x:-1,8"
        assert f"atc: note: -1 means any value {meaning}" in captured.out
        assert "compiles a dynamic-shape model" in captured.err
    code = main(
        [
            "apply",
            "cleanup",
            str(tmp_path / "m.onnx"),
            "-o",
            str(tmp_path / "o310.onnx"),
            "--soc-version",
            "Ascend310B1",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert not [ln for ln in captured.out.splitlines() if ln.startswith("atc: atc ")]
    assert (
        "atc: error:" in captured.out
        and "Ascend310B1 takes only static shapes or gears" in captured.out
    )
