"""Security findings of issue 11, each as a crafted model or pipeline.

- no code runs unless the user asked for it (rewrite modules, plug-ins, the doctor);
- names are data: what the tool writes means exactly what was intended, whatever the names hold;
- external data stays inside the model's folder, for every entry point.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import surgery
from surgery import tomlwrite
from surgery.cli import main
from surgery.errors import InputError, PipelineError
from surgery.passes.cleanup import Cleanup
from surgery.pipeline import load_pipeline
from surgery.testing import make_model, vi

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Module text that leaves a mark when imported (the proof that code ran).
MARKING_MODULE = textwrap.dedent(
    """
    import pathlib
    pathlib.Path(__file__).with_name("{mark}").write_text("ran")
    from surgery.rules.library import EXACT as RULES
    """
)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _relu_model(
    input_name: str = "x", node_name: str = "relu", batch: str | int = "batch"
) -> onnx.ModelProto:
    return make_model(
        [h.make_node("Relu", [input_name], ["y"], name=node_name)],
        [vi(input_name, T.FLOAT, [batch, 3])],
        [vi("y", T.FLOAT, [batch, 3])],
    )


# --- 3. No code runs unless the user asked for it -------------------------------------------------


@pytest.fixture
def project(tmp_path):
    """A downloaded model with a passes.toml and a rules module beside it."""
    folder = tmp_path / "download"
    folder.mkdir()
    onnx.save(_relu_model(batch=2), folder / "model.onnx")
    (folder / "my_rules.py").write_text(MARKING_MODULE.format(mark="RULES_RAN"))
    (folder / "passes.toml").write_text(
        '[[pass]]\nname = "rewrite"\nrules = "my_rules:RULES"\n[[pass]]\nname = "cleanup"\n'
    )
    return folder


def _apply(folder: Path, *extra: str) -> int:
    return main(
        [
            "apply",
            str(folder / "passes.toml"),
            str(folder / "model.onnx"),
            "-o",
            str(folder / "out.onnx"),
            "-q",
            *extra,
        ]
    )


def test_parsing_a_pipeline_imports_nothing(project):
    pipeline = load_pipeline(project / "passes.toml")
    assert [s.name for s in pipeline.steps] == ["rewrite", "cleanup"]
    assert not (project / "RULES_RAN").exists()


def test_a_rewrite_module_needs_allow_code(project, capsys):
    assert _apply(project) == 2
    line = _one_error_line(capsys)
    assert "my_rules.py" in line and "--allow-code" in line
    assert not (project / "RULES_RAN").exists() and not (project / "out.onnx").exists()


def test_with_allow_code_the_module_runs(project, capsys):
    assert _apply(project, "--allow-code") == 0
    assert (project / "RULES_RAN").exists() and (project / "out.onnx").exists()


def test_a_disabled_rewrite_is_never_imported(project):
    assert _apply(project, "--disable", "rewrite") == 0
    assert not (project / "RULES_RAN").exists()
    assert (project / "out.onnx").exists()


@pytest.mark.parametrize(
    "body, expected",
    [
        ("import sys\nsys.exit(0)\n", "called sys.exit(0)"),
        ("raise SystemExit\n", "called sys.exit(None)"),
        ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
        ("import no_such_module_anywhere\n", "ModuleNotFoundError"),
    ],
)
def test_a_module_that_exits_or_raises_is_exit_2(project, capsys, body, expected):
    (project / "my_rules.py").write_text(body)
    assert _apply(project, "--allow-code") == 2
    line = _one_error_line(capsys)
    assert expected in line and "my_rules.py" in line
    assert not (project / "out.onnx").exists()


def test_rules_come_from_the_toml_folder_never_the_working_directory(
    project, tmp_path, monkeypatch, capsys
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "my_rules.py").write_text(MARKING_MODULE.format(mark="CWD_RAN"))
    (cwd / "only_here.py").write_text(MARKING_MODULE.format(mark="CWD_RAN"))
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))
    assert _apply(project, "--allow-code") == 0
    assert (project / "RULES_RAN").exists() and not (cwd / "CWD_RAN").exists()
    (project / "passes.toml").write_text('[[pass]]\nname = "rewrite"\nrules = "only_here:RULES"\n')
    assert _apply(project, "--allow-code") == 2
    assert "no file" in _one_error_line(capsys) and not (cwd / "CWD_RAN").exists()


def test_the_python_api_needs_allow_code_for_a_pipeline_file(project):
    with pytest.raises(PipelineError, match="allow_code=True"):
        surgery.apply(str(project / "model.onnx"), str(project / "passes.toml"), verify="off")
    assert not (project / "RULES_RAN").exists()
    _, report = surgery.apply(
        str(project / "model.onnx"), str(project / "passes.toml"), verify="off", allow_code=True
    )
    assert (project / "RULES_RAN").exists() and [s.name for s in report.steps] == [
        "rewrite",
        "cleanup",
    ]


PLUGIN = textwrap.dedent(
    '''
    import pathlib
    import onnx_ir as ir
    from surgery import SurgeryPass, SurgeryResult, register

    pathlib.Path(__file__).with_name("PLUGIN_RAN").write_text("ran")

    @register
    class NegToNeg(SurgeryPass):
        """Test plug-in: counts Relu nodes, changes nothing."""
        name = "test-plugin-count"

        def call(self, model: ir.Model) -> SurgeryResult:
            return SurgeryResult(model, False, stats={"relu": sum(n.op_type == "Relu" for n in model.graph)})
    '''
)


@pytest.fixture
def plugin_project(project):
    (project / "count.py").write_text(PLUGIN)
    (project / "passes.toml").write_text('[[pass]]\nname = "test-plugin-count"\n')
    yield project
    surgery.registry.unregister("test-plugin-count")


def test_a_plugin_named_on_the_command_line_registers_its_passes(plugin_project, capsys):
    report = plugin_project / "r.json"
    assert (
        _apply(
            plugin_project, "--plugin", str(plugin_project / "count.py"), "--report", str(report)
        )
        == 0
    )
    import json

    assert json.loads(report.read_text())["steps"][0]["stats"] == {"relu": 1}


def test_plugins_in_a_pipeline_file_need_allow_code(plugin_project, capsys):
    (plugin_project / "passes.toml").write_text(
        'plugins = ["count.py"]\n[[pass]]\nname = "test-plugin-count"\n'
    )
    assert _apply(plugin_project) == 2
    line = _one_error_line(capsys)
    assert "count.py" in line and "--allow-code" in line
    assert not (plugin_project / "PLUGIN_RAN").exists()
    assert _apply(plugin_project, "--allow-code") == 0
    assert (plugin_project / "PLUGIN_RAN").exists()


def test_a_plugin_that_exits_is_exit_2(plugin_project, capsys):
    (plugin_project / "count.py").write_text("import sys\nsys.exit(0)\n")
    assert _apply(plugin_project, "--plugin", str(plugin_project / "count.py")) == 2
    assert "called sys.exit(0)" in _one_error_line(capsys)
    assert not (plugin_project / "out.onnx").exists()


def test_a_plugin_may_not_take_a_built_in_name(plugin_project, capsys):
    (plugin_project / "count.py").write_text(PLUGIN.replace("test-plugin-count", "cleanup"))
    assert _apply(plugin_project, "--plugin", str(plugin_project / "count.py")) == 2
    assert "pass name 'cleanup' is taken" in _one_error_line(capsys)


# --- 4. Names are data ---------------------------------------------------------------------------

INJECTION = 'x\n[[pass]]\nname = "rewrite"\nrules = "evil:RULES"\n#'

HOSTILE_NAMES = [
    INJECTION,
    'with "quotes" and \\backslash\\',
    "triple \"\"\" quoted ''' too",
    "$(touch pwned); `id`",
    "a;b,c d",
    "ctl\x00\x01\x07\x1b[31m\x7f\r\n\t\f\b",
    "\u2028line\u2029sep \U0001f600",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_doctor_writes_hostile_names_as_data(tmp_path, capsys, name):
    """The emitted passes.toml parses with tomllib to the intended steps and the exact input name."""
    (tmp_path / "evil.py").write_text(MARKING_MODULE.format(mark="EVIL_RAN"))
    path = tmp_path / "model.onnx"
    onnx.save(_relu_model(input_name=name, node_name=name + "/node"), path)
    toml = tmp_path / "passes.toml"
    assert main(["doctor", str(path), "--emit-pipeline", str(toml)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "warning" not in captured.err
    doc = tomllib.loads(toml.read_text(encoding="utf-8"))
    assert [p["name"] for p in doc["pass"]] == [
        "fix-shapes",
        "make-static",
        "cleanup",
        "assert-static",
    ]
    assert doc["pass"][0]["shapes"] == {name: [1, 3]}
    # every comment line is one line: the file has as many lines as it would with a plain name
    onnx.save(_relu_model(), tmp_path / "plain.onnx")
    assert (
        main(
            [
                "doctor",
                str(tmp_path / "plain.onnx"),
                "--emit-pipeline",
                str(tmp_path / "plain.toml"),
            ]
        )
        == 1
    )
    assert len(toml.read_text(encoding="utf-8").splitlines()) == len(
        (tmp_path / "plain.toml").read_text().splitlines()
    )
    assert not (tmp_path / "EVIL_RAN").exists()
    # the printed report keeps one row per line too
    for line in captured.out.splitlines():
        assert "\x1b" not in line and "\r" not in line


@pytest.mark.parametrize("name", HOSTILE_NAMES[:6])
def test_the_reproducer_writes_hostile_names_as_data(tmp_path, name, test_passes):
    """A gate failure on a weight with a hostile name: the reproducer's passes.toml parses to the one
    failing pass with the exact name as its option, its inputs and model keep the name, and replaying
    it fails the same way (no injected pass, no code run)."""
    import tomllib

    w = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
    model = make_model(
        [h.make_node("MatMul", ["x", name], ["y"], name=name + "/mm")],
        [vi("x", T.FLOAT, [2, 3])],
        [vi("y", T.FLOAT, [2, 3])],
        {name: w},
    )
    from surgery.errors import GateError

    with pytest.raises(GateError) as info:
        surgery.apply(
            model,
            [test_passes["test-perturb-weight"](weight=name, delta=1.0)],
            reproducer_dir=tmp_path / "r",
        )
    assert info.value.gate == "parity"
    doc = tomllib.loads((tmp_path / "r" / "passes.toml").read_text(encoding="utf-8"))
    assert [(p["name"], p["weight"]) for p in doc["pass"]] == [("test-perturb-weight", name)]
    assert set(doc) == {"schema_version", "inputs", "verify", "pass"}
    assert onnx.load(tmp_path / "r" / "model.onnx").graph.initializer[0].name == name
    with pytest.raises(GateError, match="parity"):
        surgery.apply(
            str(tmp_path / "r" / "model.onnx"),
            str(tmp_path / "r" / "passes.toml"),
            reproducer_dir=tmp_path / "r2",
        )
    assert not (tmp_path / "EVIL_RAN").exists()


def test_doctor_validates_its_pipeline_without_importing_anything(tmp_path, capsys, monkeypatch):
    """Even a pipeline that names a rewrite module (here written by hand) is checked without importing it."""
    from surgery.doctor import pipeline as emit_mod

    (tmp_path / "evil.py").write_text(MARKING_MODULE.format(mark="EVIL_RAN"))
    monkeypatch.chdir(tmp_path)
    from surgery import registry
    from surgery.pipeline import Pipeline, Step

    # the intended pipeline: what the file says, with the folder it is read from (as parsing fills it)
    rewrite = registry.get("rewrite")(rules="evil:RULES", path=str(Path.cwd()))
    problems = emit_mod._validate(
        '[[pass]]\nname = "rewrite"\nrules = "evil:RULES"\n', Pipeline([Step(rewrite)])
    )
    assert problems == [] and not (tmp_path / "EVIL_RAN").exists()
    problems = emit_mod._validate('plugins = ["evil.py"]\n', Pipeline([]))
    assert "--allow-code" in problems[0] and not (tmp_path / "EVIL_RAN").exists()


def _with_raw_name(model: onnx.ModelProto, old: str, raw: bytes) -> bytes:
    return model.SerializeToString().replace(old.encode(), raw)


def test_a_name_that_is_not_utf8_is_refused_by_name(tmp_path, capsys):
    path = tmp_path / "model.onnx"
    path.write_bytes(_with_raw_name(_relu_model(input_name="xZZZ"), "xZZZ", b"x\xff\xfeZ"))
    toml = tmp_path / "passes.toml"
    for argv in (["doctor", str(path), "--emit-pipeline", str(toml)], ["check", str(path)]):
        assert main(argv) == 2
        line = _one_error_line(capsys)
        assert "b'x\\xff\\xfeZ'" in line and "not UTF-8" in line
    assert not toml.exists()


def test_toml_strings_escape_everything_that_could_break_out():
    for name in [*HOSTILE_NAMES, "", "plain", "é ü 中文"]:
        text = f"k = {tomlwrite.string(name)}\n"
        assert "\n" not in text[:-1] and "\r" not in text
        assert tomllib.loads(text) == {"k": name}
        assert tomllib.loads(f"{tomlwrite.key(name or 'e')} = 1") == {name or "e": 1}
        assert "\n" not in tomlwrite.comment(name) and tomlwrite.comment(name).startswith("#")
    with pytest.raises(tomlwrite.Unrepresentable):
        tomlwrite.string(b"x\xff")
    with pytest.raises(tomlwrite.Unrepresentable):
        tomlwrite.string("lone \udc80 surrogate")
    assert tomlwrite.string(b"utf8 \xc3\xa9") == '"utf8 \u00e9"'
    assert tomlwrite.comment(b"x\xff\n") == "# x\\xff\\n"


def test_toml_documents_round_trip():
    doc = {
        "schema_version": 1,
        "inputs": {"data": "inputs.npz", INJECTION: {"shape": [1, 3]}},
        "verify": {"rtol": 1e-4, "atol": 0.0, "parity": "each"},
        "pass": [
            {
                "name": "fix-shapes",
                "shapes": {INJECTION: [1, 3], 'q"""': [2]},
                "verify": {"atol": 0.5},
            },
            {"name": "pin-inputs", "values": {"sr": 16000.0, "flags": [True, False]}},
        ],
    }
    assert tomllib.loads(tomlwrite.dumps(doc)) == doc
    with pytest.raises(tomlwrite.Unrepresentable):
        tomlwrite.dumps({"verify": {"rtol": float("nan")}})
    assert tomllib.loads(tomlwrite.dumps({"v": float("inf")}, allow_nonfinite=True))["v"] == float(
        "inf"
    )


def test_report_tables_print_names_on_one_line():
    tables = []
    for name in ("x", INJECTION):
        _, report = surgery.apply(_relu_model(input_name=name, batch=2), [Cleanup()], verify="off")
        report.inputs[name] = "given"
        tables.append(report.table())
    plain, hostile = tables
    assert len(hostile.split("\n")) == len(plain.split("\n"))
    assert 'input x\\n[[pass]]\\nname = "rewrite"' in hostile


@pytest.mark.parametrize("command", ["check", "compare"])
def test_check_and_compare_print_names_on_one_line(tmp_path, capsys, command):
    outs = []
    for name in ("x", INJECTION + "\x1b[2J"):
        path = tmp_path / "model.onnx"
        onnx.save(_relu_model(input_name=name, node_name=name, batch=2), path)
        argv = [command, str(path)] + ([str(path)] if command == "compare" else [])
        assert main(argv) == 0
        outs.append(capsys.readouterr().out)
    plain, hostile = outs
    assert len(hostile.splitlines()) == len(plain.splitlines())
    assert "\x1b" not in hostile and 'x\\n[[pass]]\\nname = "rewrite"' in hostile


# --- 5. External data stays inside the model's folder --------------------------------------------

SECRET = b"TOP-SECRET-BYTES" * 4  # 64 bytes: a [16] float32 tensor's worth


def _external_model(folder: Path, location: str) -> Path:
    """model.onnx in ``folder`` whose weight W ([16] float32) is stored at ``location``."""
    w = np.arange(16, dtype=np.float32)
    model = make_model(
        [h.make_node("Add", ["x", "W"], ["y"], name="add")],
        [vi("x", T.FLOAT, [16])],
        [vi("y", T.FLOAT, [16])],
        {"W": w},
    )
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = T.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "model.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture
def outside(tmp_path):
    """A folder holding a model and, beside the folder, a secret file the model points at."""
    (tmp_path / "secret.bin").write_bytes(SECRET)
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "dotdot-missing", "absolute-missing"])
@pytest.mark.parametrize("entry", ["path", "lazy-proto", "ir-model"])
def test_external_data_outside_the_folder_is_refused(outside, kind, entry):
    secret = outside.parent / ("secret.bin" if "missing" not in kind else "nothing-here.bin")
    location = str(secret) if kind.startswith("absolute") else f"../{secret.name}"
    path = _external_model(outside, location)
    if entry == "path":
        model = str(path)
    elif entry == "lazy-proto":
        model = onnx.load(path, load_external_data=False)
    else:
        model = ir.load(path)
    with pytest.raises(InputError) as info:
        surgery.apply(model, [Cleanup()], verify="off", output=outside / "out.onnx")
    message = str(info.value)
    assert "outside the model's folder" in message and "'W'" in message
    # nothing about the outside file: not whether it exists, not its size
    for word in ("missing", "truncated", "64", "exist", "bytes"):
        assert word not in message
    assert not (outside / "out.onnx").exists()


def test_a_symlink_out_of_the_folder_is_refused(outside, monkeypatch):
    (outside / "weights.bin").symlink_to(outside.parent / "secret.bin")
    path = _external_model(outside, "weights.bin")
    monkeypatch.chdir(outside)  # where a lazily loaded proto's locations resolve
    for model in (str(path), onnx.load(path, load_external_data=False), ir.load(path)):
        with pytest.raises(InputError, match="symbolic link"):
            surgery.apply(model, [Cleanup()], verify="off", output=outside / "out.onnx")
    assert not (outside / "out.onnx").exists()


def test_a_lazy_proto_resolves_against_the_working_directory_or_an_explicit_base(
    outside, monkeypatch
):
    (outside / "w.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    proto = onnx.load(_external_model(outside, "w.bin"), load_external_data=False)
    elsewhere = outside.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(InputError, match="missing"):  # inside the working directory, which lacks it
        surgery.model_io.to_ir(proto)
    model = surgery.model_io.to_ir(proto, base_dir=outside)
    assert model.graph.initializers["W"].const_value.numpy().tolist() == list(range(16))
    _, report = surgery.apply(
        proto, [Cleanup()], verify="each", base_dir=outside
    )  # parity reads W from there
    assert report.ok
    monkeypatch.chdir(outside)
    result, _ = surgery.apply(proto, [Cleanup()], verify="off", output=outside / "out.onnx")
    assert SECRET not in b"".join(p.read_bytes() for p in outside.iterdir() if p.is_file())
    assert result.graph.initializer[0].name == "W"


def test_an_attribute_tensor_outside_the_folder_is_refused(outside):
    value = numpy_helper.from_array(np.zeros(16, np.float32), "c")
    value.ClearField("raw_data")
    value.data_location = T.EXTERNAL
    entry = value.external_data.add()
    entry.key, entry.value = "location", str(outside.parent / "secret.bin")
    graph = h.make_graph(
        [h.make_node("Constant", [], ["y"], name="const", value=value)],
        "g",
        [],
        [vi("y", T.FLOAT, [16])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, outside / "model.onnx")
    with pytest.raises(InputError, match="outside the model's folder"):
        surgery.apply(
            str(outside / "model.onnx"), [Cleanup()], verify="off", output=outside / "out.onnx"
        )


def test_containment_is_checked_before_any_stat(outside, monkeypatch):
    path = _external_model(outside, "../secret.bin")
    looked: list[str] = []
    real_stat = os.stat

    def spy(p, *args, **kwargs):
        looked.append(str(p))
        return real_stat(p, *args, **kwargs)

    model = ir.load(path)
    monkeypatch.setattr(os, "stat", spy)
    with pytest.raises(InputError):
        surgery.model_io.check_external_data(model, path, base_dir=outside)
    assert not any("secret" in p for p in looked)
