"""Pipeline.to_toml: the one way back to passes.toml text, and it reads back as it was written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from surgery import registry, tomlwrite
from surgery.errors import PipelineError
from surgery.pipeline import Pipeline, Step, StepVerify, VerifyConfig
from surgery.tomlwrite import tomllib  # tomllib, or tomli on Python 3.10: chosen in one place
from surgery.verify.inputs import InputsConfig, InputSpec

#: Untrusted model names: each must stay one string, never become a key, table or comment end.
HOSTILE = [
    'x\n[[pass]]\nname = "rewrite"',
    'q"""',
    "'''",
    "$(touch /tmp/pwned)",
    "back\\slash\r\n\t\x00\x1b[2J",
    "line\u2028sep \u202e bidi",
    "é ü 中文",
]


def _build(name: str, **options):
    return registry.get(name)(**options)


def _pipelines() -> list[Pipeline]:
    shapes = {name: [1, i + 1] for i, name in enumerate(HOSTILE)}
    busy = Pipeline(
        [
            Step(_build("fix-shapes", shapes=shapes), StepVerify(checker="end", atol=0.5)),
            Step(_build("pin-inputs", values={HOSTILE[0]: 16000.0, "flags": [True, False]})),
            Step(_build("cleanup")),
            Step(_build("convert-opset", target=18), StepVerify(rtol=1e-3)),
            Step(_build("make-static", unroll_loops=True, max_unroll=256, keep_ops=["If"])),
        ],
        inputs=InputsConfig(
            specs={
                HOSTILE[0]: InputSpec(shape=(1, 3), dtype="float32", range=(0.0, 1.0)),
                HOSTILE[3]: InputSpec(value=[1, 2]),
            },
            data=Path("inputs.npz"),
        ),
        verify=VerifyConfig(
            parity="end", seed=7, rtol=1e-3, int_tolerance=2, allow_unexercised=True
        ),
        buckets={"batch": (1, 4, 8), 'x"[0]': (2,)},
    )
    plain_one = Pipeline.from_passes([_build("cleanup", fuse=False)])
    return [busy, plain_one, Pipeline([])]


def _meaning(p: Pipeline) -> list:
    return [
        [(s.name, tomlwrite.plain(s.pass_.options_dict()), s.verify) for s in p.steps],
        p.verify,
        p.inputs.specs,
        p.inputs.data,
        p.buckets,
        p.plugins,
    ]


@pytest.mark.parametrize("complete", [False, True])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_to_toml_reads_back_as_the_same_pipeline(index, complete):
    pipeline = _pipelines()[index]
    text = pipeline.to_toml(complete=complete)
    assert _meaning(Pipeline.from_toml(text)) == _meaning(pipeline)
    # what is read back writes the same text again
    assert Pipeline.from_toml(text).to_toml(complete=complete) == text


def test_names_stay_strings_and_notes_stay_comments():
    pipeline = _pipelines()[0]
    notes = {0: [*HOSTILE, "", b"bytes \xff\n[[pass]]"], 5: HOSTILE}
    text = pipeline.to_toml(header=HOSTILE, notes=notes)
    doc = tomllib.loads(text)
    assert [t["name"] for t in doc["pass"]] == [s.name for s in pipeline.steps]
    assert list(doc["pass"][0]["shapes"]) == HOSTILE
    assert set(doc) == {"schema_version", "inputs", "verify", "buckets", "pass"}
    # every line is a comment, a key, a table header or empty: no name made a line of its own
    keys = {"schema_version", "name", "data", "batch", *vars(VerifyConfig())}
    keys |= {k for s in pipeline.steps for k in s.pass_.options_dict()}
    for line in text.splitlines():
        assert line == "" or line.startswith(("#", "[", '"', *(f"{k} =" for k in keys))), line
    assert _meaning(Pipeline.from_toml(text)) == _meaning(pipeline)
    assert text.splitlines().count("[[pass]]") == len(pipeline.steps)


def test_only_what_the_pass_was_built_with_unless_complete():
    pipeline = Pipeline([Step(_build("fix-shapes", shapes={"x": [1, 3]})), Step(_build("cleanup"))])
    text = pipeline.to_toml()
    assert "dims" not in text and "fuse" not in text and "[verify]" not in text
    assert tomllib.loads(text)["pass"] == [
        {"name": "fix-shapes", "shapes": {"x": [1, 3]}},
        {"name": "cleanup"},
    ]
    # given explicitly, a default is still written: the reader sees the decision
    assert "target = 18" in Pipeline([Step(_build("convert-opset", target=18))]).to_toml()
    full = tomllib.loads(pipeline.to_toml(complete=True))
    assert full["pass"][0]["dims"] == {} and full["pass"][1]["fuse"] is True
    assert full["verify"]["rtol"] == VerifyConfig().rtol and "int_tolerance" not in full["verify"]
    # a copy with a changed option says that option too
    changed = Pipeline([Step(_build("cleanup").with_options(fuse=True))]).to_toml()
    assert tomllib.loads(changed)["pass"] == [{"name": "cleanup", "fuse": True}]


def test_numpy_values_tuples_and_utf8_bytes_are_written_as_toml_reads_them():
    pin = _build("pin-inputs", values={"sr": np.int64(16000), "w": np.array([1.5, 2.0])})
    pipeline = Pipeline(
        [Step(pin)], inputs=InputsConfig(specs={b"utf8 \xc3\xa9": InputSpec(shape=(2,))})
    )
    doc = tomllib.loads(pipeline.to_toml())
    assert doc["pass"][0]["values"] == {"sr": 16000, "w": [1.5, 2.0]}
    assert doc["inputs"] == {"utf8 é": {"shape": [2]}}


def test_a_name_toml_cannot_hold_is_refused():
    pipeline = Pipeline([], inputs=InputsConfig(specs={b"x\xff": InputSpec(shape=(1,))}))
    with pytest.raises(tomlwrite.Unrepresentable):
        pipeline.to_toml()
    with pytest.raises(tomlwrite.Unrepresentable):
        Pipeline([], verify=VerifyConfig(rtol=float("nan"))).to_toml()


PLUGIN = """
from surgery.pass_base import SurgeryPass, SurgeryResult


class Plugin(SurgeryPass):
    \"\"\"Do nothing, from a plug-in.\"\"\"
    name = "test-toml-plugin"

    def call(self, model):
        return SurgeryResult(model, False)
"""


def test_plugins_are_written_and_read_back(tmp_path):
    plugin = tmp_path / 'my "plugin".py'
    plugin.write_text(PLUGIN)
    text = f'plugins = [{tomlwrite.string(str(plugin))}]\n[[pass]]\nname = "test-toml-plugin"\n'
    try:
        read = Pipeline.from_toml(text, allow_code=True)
        assert read.plugins == (plugin,)
        again = Pipeline.from_toml(read.to_toml(), allow_code=True)
        assert again.plugins == (plugin,) and [s.name for s in again.steps] == ["test-toml-plugin"]
    finally:
        registry.unregister("test-toml-plugin")


def test_from_toml_says_what_is_wrong():
    with pytest.raises(PipelineError, match="invalid TOML"):
        Pipeline.from_toml("[[pass]\n")
    with pytest.raises(PipelineError, match="unknown key"):
        Pipeline.from_toml("passes = 1\n")


def test_the_reproducer_keeps_every_verify_setting_and_says_when_a_replay_runs_code(tmp_path):
    import onnx_ir as ir
    from onnx import TensorProto
    from onnx import helper as h

    from surgery import model_io
    from surgery.instruments.reproducer import write_reproducer
    from surgery.testing import make_model, vi

    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"])],
        [vi("x", TensorProto.FLOAT, [1])],
        [vi("y", TensorProto.FLOAT, [1])],
    )
    snapshot = model_io.LightProto(ir.from_proto(model))
    try:
        failing = Pipeline.from_toml(
            f'plugins = [{tomlwrite.string(str(plugin))}]\n[[pass]]\nname = "test-toml-plugin"\n',
            allow_code=True,
        )
        failing.verify = VerifyConfig(seed=3, int_tolerance=1)
        repro = write_reproducer(
            tmp_path / "r", snapshot, {"x": np.ones(1, np.float32)}, failing, "m"
        )
        replay = Pipeline.from_toml(
            (repro / "passes.toml").read_text(), base_dir=repro, allow_code=True
        )
    finally:
        registry.unregister("test-toml-plugin")
    assert replay.verify == failing.verify and replay.plugins == (plugin,)
    assert replay.inputs.data == repro / "inputs.npz"
    doc = tomllib.loads((repro / "passes.toml").read_text())
    assert set(doc["verify"]) == set(vars(VerifyConfig()))  # every setting, defaults too
    assert "--allow-code" in (repro / "README.txt").read_text()
