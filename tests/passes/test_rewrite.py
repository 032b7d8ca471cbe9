"""rewrite: rules from a user's module (ours or onnxscript's), named in TOML."""

from __future__ import annotations

import textwrap

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import PipelineError
from surgery.passes.rewrite import Rewrite
from surgery.testing import make_model, op_counts, ort_run, vi

RULES = textwrap.dedent(
    '''
    from surgery.rules import Op, Rule, Var

    class SwishToHardSwish(Rule):
        """x * Sigmoid(x) -> HardSwish(x) (changes results: a test of changes_semantics)."""
        name = "swish-to-hardswish"
        pattern = Op("Mul", Var("x"), Op("Sigmoid", Var("x")))

        def build(self, b, m):
            return [b.op("HardSwish", m["x"])]

    class DoubleNeg(Rule):
        name = "double-neg"
        pattern = Op("Neg", Op("Neg", Var("x")))

        def build(self, b, m):
            return [b.op("Identity", m["x"])]

    RULES = [SwishToHardSwish, DoubleNeg()]
    EXACT = [DoubleNeg]
    NOT_RULES = [42]
    '''
)

ONNXSCRIPT_RULES = textwrap.dedent(
    """
    from onnxscript.rewriter import pattern

    def neg_neg(op, x):
        return op.Neg(op.Neg(x))

    def ident(op, x):
        return op.Identity(x)

    RULES = pattern.RewriteRuleSet([pattern.RewriteRule(neg_neg, ident, name="os-double-neg")])
    """
)


def _model():
    return make_model(
        [
            h.make_node("Sigmoid", ["x"], ["s"], name="/act/Sigmoid"),
            h.make_node("Mul", ["x", "s"], ["a"], name="/act/Mul"),
            h.make_node("Neg", ["a"], ["n1"], name="/n1"),
            h.make_node("Neg", ["n1"], ["y"], name="/n2"),
        ],
        [vi("x", T.FLOAT, [6])],
        [vi("y", T.FLOAT, [6])],
        opset=17,
    )


@pytest.fixture
def rules_dir(tmp_path):
    (tmp_path / "my_rules.py").write_text(RULES)
    (tmp_path / "os_rules.py").write_text(ONNXSCRIPT_RULES)
    return tmp_path


X = np.linspace(-4, 4, 6, dtype=np.float32)


def test_exact_rules_through_a_toml_pipeline(rules_dir):
    toml = rules_dir / "passes.toml"
    toml.write_text(f'[[pass]]\nname = "rewrite"\nrules = "my_rules:EXACT"\npath = "{rules_dir}"\n')
    model, report = surgery.apply(_model(), str(toml), inputs={"x": X}, allow_code=True)
    step = report.steps[0]
    assert step.modified and step.parity_status == "ok" and step.stats["rewritten"] == 1
    assert op_counts(model) == {"Sigmoid": 1, "Mul": 1, "Identity": 1}
    assert [n.name for n in model.graph.node][-1] == "/n2/Identity"


def test_rules_that_change_results_are_reported(rules_dir):
    model, report = surgery.apply(
        _model(),
        [Rewrite(rules="my_rules:RULES", path=str(rules_dir), changes_semantics=True)],
        inputs={"x": X},
    )
    step = report.steps[0]
    assert step.stats["by_rule"] == {"swish-to-hardswish": 1, "double-neg": 1}
    assert step.parity_status == "deviation reported"
    assert op_counts(model) == {"HardSwish": 1, "Identity": 1}


def test_onnxscript_rules(rules_dir):
    pytest.importorskip("onnxscript")
    model = ir.from_proto(_model())
    result = Rewrite(rules="os_rules:RULES", path=str(rules_dir))(model)
    assert result.stats["rewritten"] == 1
    assert "Neg" not in op_counts(model)
    np.testing.assert_allclose(
        ort_run(model, {"x": X})["y"], X / (1 + np.exp(-X)), rtol=1e-5, atol=1e-6
    )


def test_a_toml_pipeline_needs_the_opt_in_to_import_its_module(rules_dir):
    (rules_dir / "my_rules.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('ran').touch()\n" + RULES
    )
    toml = rules_dir / "passes.toml"
    toml.write_text('[[pass]]\nname = "rewrite"\nrules = "my_rules:EXACT"\n')
    with pytest.raises(
        PipelineError, match=r"would import the Python module .*my_rules\.py.*allow_code=True"
    ):
        surgery.apply(_model(), str(toml), inputs={"x": X})
    assert not (rules_dir / "ran").exists()
    # without `path`, the module is the one beside the TOML file
    _, report = surgery.apply(_model(), str(toml), inputs={"x": X}, allow_code=True)
    assert (rules_dir / "ran").exists() and report.steps[0].stats["rewritten"] == 1


def test_a_malformed_spec_is_refused_when_the_pass_is_built():
    for spec in ("my_rules", "../x:RULES", "a/b:RULES", "my_rules:A.B", "os; rm:X"):
        with pytest.raises(PipelineError, match="must look like 'module:ATTRIBUTE'"):
            Rewrite(rules=spec, path=".")


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "no_such_module:RULES",
            "cannot import module 'no_such_module': no file .*no_such_module.py",
        ),
        ("my_rules:MISSING", "module 'my_rules' has no attribute 'MISSING'"),
        ("my_rules:NOT_RULES", "holds a int; expected surgery.rules.Rule"),
    ],
)
def test_bad_rule_specs_are_pipeline_errors_when_the_pass_runs(rules_dir, spec, message):
    rewrite = Rewrite(rules=spec, path=str(rules_dir))  # nothing is imported yet
    with pytest.raises(PipelineError, match=message):
        rewrite(ir.from_proto(_model()))
