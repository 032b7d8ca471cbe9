"""passes.toml strictness: unknown keys, passes and options, wrong types, did-you-mean, --set."""

from __future__ import annotations

import textwrap

import pytest

from surgery.errors import PipelineError
from surgery.pipeline import apply_sets, load_pipeline, parse_set


def _write(tmp_path, text: str):
    path = tmp_path / "passes.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_full_pipeline_parses(tmp_path, test_passes):
    path = _write(
        tmp_path,
        """
        schema_version = 1
        [inputs]
        images = { shape = [1, 3, 8, 8], dtype = "float32", range = [0.0, 1.0] }
        sr = { value = 16000 }
        [verify]
        checker = "each"
        parity = "end"
        rtol = 1e-3
        atol = 1e-4
        seed = 7
        [[pass]]
        name = "test-perturb-weight"
        delta = 0.5
        [pass.verify]
        rtol = 0.5
        [[pass]]
        name = "test-scale-output"
    """,
    )
    pipe = load_pipeline(path)
    assert [s.name for s in pipe.steps] == ["test-perturb-weight", "test-scale-output"]
    assert pipe.steps[0].pass_.options.delta == 0.5
    assert pipe.steps[0].verify.rtol == 0.5
    assert pipe.verify.parity == "end" and pipe.verify.seed == 7 and pipe.verify.rtol == 1e-3
    assert pipe.inputs.specs["images"].shape == (1, 3, 8, 8)
    assert pipe.inputs.specs["sr"].value == 16000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[pass]]\nname = "test-perturb-wieght"\n',
            "unknown pass 'test-perturb-wieght' (did you mean 'test-perturb-weight'?)",
        ),
        (
            '[[pass]]\nname = "test-perturb-weight"\ndelt = 1.0\n',
            "unknown option 'delt' (did you mean 'delta'?)",
        ),
        (
            '[[pass]]\nname = "test-perturb-weight"\ndelta = "big"\n',
            "delta: expected float, got str",
        ),
        ('[verfy]\nchecker = "each"\n', "unknown key 'verfy' (did you mean 'verify'?)"),
        ('[verify]\nchecker = "always"\n', "expected one of each, end, off"),
        ('[verify]\nrtol = "small"\n', "expected a number"),
        ('[verify]\nchekcer = "each"\n', "unknown key 'chekcer' (did you mean 'checker'?)"),
        ("schema_version = 2\n", "schema_version 2 is not supported"),
        ("[[pass]]\ndelta = 1.0\n", "needs a name"),
        ('[pass]\nname = "x"\n', "write each pass as [[pass]]"),
        ("[inputs]\nx = { shape = [1, -3] }\n", "non-negative integers"),
        ("[inputs]\nx = { shap = [1, 3] }\n", "unknown key 'shap' (did you mean 'shape'?)"),
        ('[inputs]\nx = { dtype = "floaty" }\n', "unknown dtype"),
        (
            '[[pass]]\nname = "test-perturb-weight"\n[pass.verify]\nrtl = 1\n',
            "unknown key 'rtl' (did you mean 'rtol'?)",
        ),
        ("this is = not toml = at all\n", "invalid TOML"),
    ],
)
def test_strictness(tmp_path, test_passes, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(PipelineError, match="no such pipeline file"):
        load_pipeline(tmp_path / "absent.toml")


def test_set_overrides_are_validated(tmp_path, test_passes):
    pipe = load_pipeline(_write(tmp_path, '[[pass]]\nname = "test-perturb-weight"\n'))
    apply_sets(pipe, ["test-perturb-weight.delta=2.5", '1.weight="W1"'])
    assert pipe.steps[0].pass_.options.delta == 2.5
    assert pipe.steps[0].pass_.options.weight == "W1"
    with pytest.raises(PipelineError, match="unknown option 'dleta'"):
        apply_sets(pipe, ["test-perturb-weight.dleta=1"])
    with pytest.raises(PipelineError, match="no pass 'test-perturb-weigh' in the pipeline"):
        apply_sets(pipe, ["test-perturb-weigh.delta=1"])
    with pytest.raises(PipelineError, match="the pipeline has 1 passes"):
        apply_sets(pipe, ["3.delta=1"])
    with pytest.raises(PipelineError, match=r"PASS\.key=value"):
        parse_set("nodot=1")
    assert parse_set("a.b=word") == ("a", "b", "word")


def test_disable(tmp_path, test_passes):
    pipe = load_pipeline(
        _write(
            tmp_path,
            '[[pass]]\nname = "test-perturb-weight"\n[[pass]]\nname = "test-scale-output"\n',
        )
    )
    pipe.disable(["test-perturb-weight"])
    assert [s.name for s in pipe.steps] == ["test-scale-output"]
    with pytest.raises(PipelineError, match="no such pass"):
        pipe.disable(["nothing-like-it"])


def test_options_keywords_validated_from_python(test_passes):
    cls = test_passes["test-perturb-weight"]
    with pytest.raises(PipelineError, match="unknown option 'size'"):
        cls(size=3)
    assert cls(delta=1).options.delta == 1.0  # ints are accepted for floats


def test_path_options_are_relative_to_the_toml_folder(tmp_path, monkeypatch):
    """rewrite.path and pin-inputs.npz written in a passes.toml resolve next to it, not in the cwd."""
    import numpy as np

    folder = tmp_path / "project"
    (folder / "rules").mkdir(parents=True)
    (folder / "rules" / "my_rules.py").write_text(
        "from surgery.rules.library import EXACT as RULES\n"
    )
    np.savez(folder / "pins.npz", sr=np.array(16000))
    elsewhere = tmp_path / "elsewhere.npz"
    np.savez(elsewhere, sr=np.array(8000))
    (folder / "passes.toml").write_text(
        "schema_version = 1\n"
        '[[pass]]\nname = "rewrite"\nrules = "my_rules:RULES"\npath = "rules"\n'
        '[[pass]]\nname = "pin-inputs"\nnpz = "pins.npz"\n'
        f'[[pass]]\nname = "pin-inputs"\nnpz = "{elsewhere}"\n'
    )
    monkeypatch.chdir(tmp_path)  # somewhere else
    pipeline = load_pipeline(folder / "passes.toml")
    rewrite, pin, pin_abs = (s.pass_.options for s in pipeline.steps)
    assert rewrite.path == str(folder / "rules")
    assert pin.npz == str(folder / "pins.npz")
    assert pin_abs.npz == str(elsewhere)
    # --set values stay as given (relative to the working directory of the shell)
    apply_sets(pipeline, ['2.npz="here.npz"'])
    assert pipeline.steps[1].pass_.options.npz == "here.npz"
