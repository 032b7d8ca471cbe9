"""The contract every registered pass keeps, on a graph with If bodies that use outer-scope values.

For each pass: the gated run (checker, ORT load, parity with the original) passes; a second run
reports no change (idempotence); the source ir_version and the surviving node names are kept; every
stats key it reports is one it declares in ``statistics`` (checked on these runs, and over the
literal keys its module's source writes, which covers paths the contract graph does not take).
A pass that needs options must have an entry in ``CONTRACT_OPTIONS``.
"""

from __future__ import annotations

import ast
import inspect
import sys

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery import registry
from surgery.errors import PipelineError
from surgery.graph import iter_graphs
from surgery.shapes.dims import is_static_shape
from surgery.testing import make_model, node_names, vi

#: Options for passes that cannot run without some.
CONTRACT_OPTIONS: dict[str, dict] = {
    "fix-shapes": {"shapes": {"x": [1, 4]}},
    "pin-inputs": {"values": {"flag": 1.0}},
    "extract": {"inputs": ["x", "flag"], "outputs": ["y"]},
    "expose": {"tensors": ["relu_out"]},
    "rewrite": {"rules": "surgery.rules.library:EXACT"},
    # the contract model calls a model-local function, which assert-static rejects unless allowed
    "assert-static": {"allow_ops": ["AddOne"]},
}


def contract_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    then_graph = h.make_graph(
        [
            h.make_node(
                "MatMul", ["x", "W"], ["t_mm"], name="/then/MatMul"
            ),  # x, W from the outer scope
            h.make_node("Dropout", ["t_mm"], ["t_do"], name="/then/Dropout"),
            h.make_node("Identity", ["t_do"], ["t_out"], name="/then/Identity"),
        ],
        "then_branch",
        [],
        [vi("t_out", T.FLOAT, [1, 4])],
    )
    else_graph = h.make_graph(
        [
            h.make_node(
                "Neg", ["relu_out"], ["e_neg"], name="/else/Neg"
            ),  # relu_out from the outer scope
            h.make_node("Identity", ["e_neg"], ["e_out"], name="/else/Identity"),
        ],
        "else_branch",
        [],
        [vi("e_out", T.FLOAT, [1, 4])],
    )
    add_one = h.make_function(
        "custom",
        "AddOne",
        ["a"],
        ["b"],
        [
            h.make_node(
                "Constant", [], ["one"], value=h.make_tensor("one", T.FLOAT, [], [1.0]), name="one"
            ),
            h.make_node("Add", ["a", "one"], ["b"], name="add"),
        ],
        opset_imports=[h.make_opsetid("", 17)],
    )
    nodes = [
        h.make_node("Relu", ["x"], ["relu_out"], name="/main/Relu"),
        h.make_node("ReduceSum", ["x"], ["sum"], name="/main/ReduceSum", keepdims=0),
        h.make_node("Greater", ["sum", "zero"], ["cond"], name="/main/Greater"),
        h.make_node(
            "If",
            ["cond"],
            ["if_out"],
            name="/main/If",
            then_branch=then_graph,
            else_branch=else_graph,
        ),
        h.make_node("Dropout", ["if_out", "ratio"], ["do_out"], name="/main/Dropout"),
        h.make_node("Mul", ["do_out", "flag"], ["scaled"], name="/main/Mul"),
        h.make_node("AddOne", ["scaled"], ["y"], name="/main/AddOne", domain="custom"),
        h.make_node("Sigmoid", ["x"], ["dead"], name="/main/DeadSigmoid"),
    ]
    model = make_model(
        nodes,
        [vi("x", T.FLOAT, [1, 4]), vi("flag", T.FLOAT, [])],
        [vi("y", T.FLOAT, [1, 4])],
        {"W": w, "zero": np.array(0.0, np.float32), "ratio": np.array(0.5, np.float32)},
        functions=[add_one],
        extra_opsets={"custom": 1},
    )
    # value_info everywhere, as the dynamo exporter writes it
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _assert_fresh_shapes(name: str, model: ir.Model) -> None:
    """Every value of every graph carries the type and static shape inference gives it (the
    contract model is static throughout), and function-body constants are typed."""
    for graph in iter_graphs(model.graph):
        for value in [*graph.inputs, *(o for n in graph for o in n.outputs), *graph.outputs]:
            if value.const_value is not None and value.is_initializer():
                continue
            assert value.type is not None, f"{name} left '{value.name}' untyped"
            assert is_static_shape(value.shape), (
                f"{name} left '{value.name}' with shape {value.shape}"
            )
    for function in model.functions.values():
        for node in function:
            if node.op_type == "Constant":
                assert node.outputs[0].type is not None, (
                    f"{name} left constant '{node.outputs[0].name}' untyped"
                )


def _assert_declared_stats(name: str, step) -> None:
    cls = registry.get(name)
    undeclared = sorted(set(step.stats) - set(cls.statistics or {}))
    assert not undeclared, f"{name} reports stats keys it does not declare: {undeclared}"
    assert not [n for n in step.notes if "does not declare" in n], step.notes


def _instantiate(name: str):
    cls = registry.get(name)
    try:
        return cls(**CONTRACT_OPTIONS.get(name, {}))
    except PipelineError as exc:
        pytest.fail(
            f"pass '{name}' needs options for the contract test; add them to CONTRACT_OPTIONS ({exc})"
        )


@pytest.mark.parametrize("name", registry.names())
def test_pass_contract(name, tmp_path):
    proto = contract_model()
    feeds = {"x": np.array([[0.5, -1.0, 2.0, 0.25]], np.float32), "flag": np.array(1.0, np.float32)}
    model, report = surgery.apply(
        ir.from_proto(proto), [_instantiate(name)], inputs=feeds, reproducer_dir=tmp_path / "repro"
    )
    step = report.steps[0]
    _assert_declared_stats(name, step)
    if step.modified:
        assert step.checker == "ok", step
        assert step.ort.startswith("ok"), step
        assert step.parity_status in ("ok", "deviation reported"), step
        _assert_fresh_shapes(name, model)
    assert model.ir_version == proto.ir_version
    # idempotence: a fresh instance on the result changes nothing
    remaining = {v.name for v in model.graph.inputs}
    again, report2 = surgery.apply(
        model,
        [_instantiate(name)],
        inputs={k: v for k, v in feeds.items() if k in remaining},
        reproducer_dir=tmp_path / "repro2",
    )
    assert not report2.steps[0].modified, f"{name} is not idempotent: {report2.steps[0].stats}"
    _assert_declared_stats(name, report2.steps[0])
    # names of nodes the pass kept are unchanged: every surviving name was in the original
    original = node_names(proto)
    kept = node_names(again)
    new = kept - original
    for created in new:
        assert any(created.startswith(o) for o in original) or "/" in created, (
            f"{name} created an unrelated node name {created!r}"
        )


def test_every_pass_has_a_summary_and_kebab_name():
    for cls in registry.all_passes():
        assert cls.summary(), cls
        assert cls.name == cls.name.lower() and " " not in cls.name


def test_every_pass_declares_its_options_once_inside_the_class():
    from surgery.options import NoOptions

    for cls in registry.all_passes():
        if not cls.__module__.startswith("surgery.passes.") or cls.Options is NoOptions:
            continue
        assert "Options" in vars(cls), f"{cls.name}: Options is not declared in the pass class"
        assert cls.Options.__qualname__ == f"{cls.__qualname__}.Options", (
            f"{cls.name}: Options must be a class nested in the pass, not {cls.Options.__qualname__}"
        )


@pytest.mark.parametrize(
    ("module", "alias", "pass_class"),
    [
        ("assert_static", "AssertStaticOptions", "AssertStatic"),
        ("expose", "ExposeOptions", "Expose"),
        ("extract", "ExtractOptions", "Extract"),
        ("fix_shapes", "FixShapesOptions", "FixShapes"),
        ("make_static", "MakeStaticOptions", "MakeStatic"),
        ("pin_inputs", "PinInputsOptions", "PinInputs"),
        ("precision_plan", "PrecisionPlanOptions", "PrecisionPlan"),
        ("simplify", "SimplifyOptions", "Simplify"),
        ("split_postprocess", "SplitPostprocessOptions", "SplitPostprocess"),
    ],
)
def test_former_module_level_options_names_stay_importable(module, alias, pass_class):
    import importlib

    mod = importlib.import_module(f"surgery.passes.{module}")
    assert getattr(mod, alias) is getattr(mod, pass_class).Options


def _builtin_passes():
    return [c for c in registry.all_passes() if c.__module__.startswith("surgery.passes.")]


def test_every_builtin_pass_declares_its_statistics():
    for cls in _builtin_passes():
        assert cls.statistics is not None, f"{cls.name} declares no statistics"
        for key, meaning in cls.statistics.items():
            assert meaning.strip() and "\n" not in meaning, (cls.name, key)


def _stats_keys_written(tree: ast.AST) -> set[str]:
    """String keys a module writes into stats: ``stats={...}`` arguments, dict literals assigned to
    a ``stats``/``totals`` name or attribute, and ``stats["key"]`` subscripts."""

    def is_stats(node: ast.AST) -> bool:
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        return name in ("stats", "totals")

    def literal_keys(node: ast.AST | None) -> set[str]:
        if not isinstance(node, ast.Dict):
            return set()
        return {
            k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
        }

    keys: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "stats":
            keys |= literal_keys(node.value)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(is_stats(t) for t in targets):
                keys |= literal_keys(node.value)
        elif (
            isinstance(node, ast.Subscript)
            and is_stats(node.value)
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            keys.add(node.slice.value)
    return keys


def test_stats_keys_in_every_pass_source_are_declared():
    for cls in _builtin_passes():
        tree = ast.parse(inspect.getsource(sys.modules[cls.__module__]))
        undeclared = sorted(_stats_keys_written(tree) - set(cls.statistics or {}))
        assert not undeclared, f"{cls.name} writes stats keys it does not declare: {undeclared}"


def test_the_source_check_finds_stats_keys():
    tree = ast.parse(
        "def call(self, model):\n"
        "    stats = {'a': 1}\n"
        "    stats['b'] += 1\n"
        "    self.stats = {'c': 0}\n"
        "    totals['d'] = 2\n"
        "    return SurgeryResult(model, True, stats={'e': 1}, notes={'x': 1})\n"
    )
    assert _stats_keys_written(tree) == {"a", "b", "c", "d", "e"}
