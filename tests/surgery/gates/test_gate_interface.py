"""The gate interface: a gate added from outside the runner, per-gate report data, the reproducer."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import GateError
from surgery.gates import BaseGate, Gate, Outcome, Schedule, Status
from surgery.pass_base import SurgeryPass, SurgeryResult
from surgery.pipeline import Pipeline, Step
from surgery.report import REPORT_SCHEMA_VERSION
from surgery.runner import Runner
from surgery.testing import make_model, vi


class MaxNodes(BaseGate):
    """A third-party gate: the model may not grow beyond a node budget."""

    name = "max-nodes"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: list[str | None] = []

    def check(self, state):
        self.seen.append(state.step.name if state.step else None)
        n = len(state.model.graph)
        if n > self.limit:
            return Outcome.failed(self.name, f"{n} nodes > {self.limit}", numbers={"nodes": n})
        return Outcome.passed(self.name, numbers={"nodes": n})


class AddIdentity(SurgeryPass):
    """Test-only: appends an Identity on the output (exact)."""

    name = "test-add-identity"

    def call(self, model):
        y = model.graph.outputs[0]
        node = ir.Node("", "Identity", [y], name=f"extra_identity{len(model.graph)}")
        model.graph.append(node)
        y.name = f"y_inner{len(model.graph)}"
        node.outputs[0].name, node.outputs[0].type, node.outputs[0].shape = "y", y.type, y.shape
        model.graph.outputs[0] = node.outputs[0]
        return SurgeryResult(model, True)


def test_a_gate_from_outside_the_runner(mlp):
    gate = MaxNodes(limit=10)
    assert isinstance(gate, Gate)
    _, report = surgery.apply(mlp, [AddIdentity()], gates=[gate])
    assert gate.seen == ["test-add-identity"]
    outcome = report.steps[0].gates["max-nodes"]
    assert outcome.status is Status.PASSED and outcome.numbers == {"nodes": 5}
    assert "max-nodes" in report.table().splitlines()[0]
    with pytest.raises(GateError) as info:
        surgery.apply(mlp, [AddIdentity()], gates=[MaxNodes(limit=4)])
    assert info.value.gate == "max-nodes" and "test-add-identity: 5 nodes > 4" in str(info.value)


def test_a_gate_scheduled_at_the_end_runs_once_on_the_final_model(mlp):
    gate = MaxNodes(limit=10)
    gate.schedule = Schedule.END
    runner = Runner(Pipeline([Step(AddIdentity()), Step(AddIdentity())]), gates=[gate])
    _, report = runner.run(ir.from_proto(mlp))
    assert gate.seen == [None]
    assert [s.gates["max-nodes"].status for s in report.steps] == [Status.DEFERRED, Status.DEFERRED]
    assert "final max-nodes: ok" in report.final_checks


def test_an_object_that_is_not_a_gate_is_refused(mlp):
    with pytest.raises(TypeError, match="is not a gate"):
        surgery.apply(mlp, [AddIdentity()], gates=[object()])


def test_report_has_per_gate_status_numbers_samples_and_time(mlp, tmp_path):
    _, report = surgery.apply(mlp, [AddIdentity()])
    step = report.steps[0]
    assert list(step.gates) == ["checker", "signature", "ort", "parity"]
    assert set(step.timings) == {"pass", "checker", "signature", "ort", "parity"}
    parity = step.gates["parity"]
    assert parity.samples[:3] == ["planned", "second size", "wide x10"] and len(parity.samples) == 4
    assert parity.numbers["rtol"] == 1e-4 and set(parity.numbers["max_abs_per_sample"]) == set(
        parity.samples
    )
    report.write_json(tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert (
        doc["schema_version"] == REPORT_SCHEMA_VERSION
        and doc["tool"]["onnxruntime"]
        and doc["timestamp"]
    )
    gates = doc["steps"][0]["gates"]
    assert gates["parity"]["status"] == "passed" and gates["parity"]["samples"] == parity.samples
    assert gates["parity"]["seconds"] >= 0 and gates["checker"]["status"] == "passed"
    assert [s["name"] for s in doc["samples"]] == parity.samples
    table = report.table()
    assert "4 samples" in table and "time pass" in table


def test_declared_signature_changes_are_listed(mlp):
    from surgery.passes.fix_shapes import FixShapes

    _, report = surgery.apply(mlp, [FixShapes(shapes="x:3,16")])
    step = report.steps[0]
    assert step.gates["signature"].status is Status.PASSED
    assert any(
        "input 'x': shape [?, 16] -> [3, 16]" in text for text in step.signature_changes.values()
    )
    assert "declared signature change: input 'x': shape [?, 16] -> [3, 16]" in report.table()


def test_undeclared_shape_fix_fails_the_signature_gate(mlp):
    class FixBatch(SurgeryPass):
        name = "user-fix-batch"

        def call(self, model):
            model.graph.inputs[0].shape = ir.Shape([2, 16])
            return SurgeryResult(model, True)

    with pytest.raises(GateError) as info:
        surgery.apply(mlp, [FixBatch()])
    assert "input 'x': shape [?, 16] -> [2, 16], not declared" in str(info.value)


def _relu_model() -> onnx.ModelProto:
    return make_model(
        [h.make_node("Relu", ["m"], ["y"], name="relu")],
        [vi("m", T.FLOAT, [2, 8])],
        [vi("y", T.FLOAT, [2, 8])],
    )


class CapAt50(SurgeryPass):
    """Test-only: Relu -> Clip(0, 50) (equal on the planned inputs, not on the wide ones)."""

    name = "test-cap-at-50"

    def call(self, model):
        relu = next(n for n in model.graph if n.op_type == "Relu")
        lo = ir.Value(
            name="lo",
            const_value=ir.tensor(np.array(0, np.float32), name="lo"),
            shape=ir.Shape([]),
            type=ir.TensorType(ir.DataType.FLOAT),
        )
        hi = ir.Value(
            name="hi",
            const_value=ir.tensor(np.array(50, np.float32), name="hi"),
            shape=ir.Shape([]),
            type=ir.TensorType(ir.DataType.FLOAT),
        )
        model.graph.register_initializer(lo)
        model.graph.register_initializer(hi)
        relu.op_type = "Clip"
        relu.replace_input_with(0, relu.inputs[0])
        relu.resize_inputs(3)
        relu.replace_input_with(1, lo)
        relu.replace_input_with(2, hi)
        return SurgeryResult(model, True)


@pytest.fixture
def cap_registered():
    from surgery import registry

    registry.register(CapAt50)
    yield
    registry.unregister(CapAt50.name)


def test_reproducer_carries_the_failing_sample_and_overrides_and_replays(tmp_path, cap_registered):
    from surgery.pipeline import StepVerify

    repro = tmp_path / "repro"
    pipe = Pipeline([Step(CapAt50(), StepVerify(atol=1e-3))])
    pipe.verify = pipe.verify.__class__(seed=5, samples=3)
    with pytest.raises(GateError) as info:
        surgery.apply(_relu_model(), pipe, reproducer_dir=repro)
    first = str(info.value)
    assert "output y on sample 'wide x1000'" in first
    toml = (repro / "passes.toml").read_text()
    assert "seed = 5" in toml and "samples = 3" in toml and "atol = 0.001" in toml
    with np.load(repro / "inputs.npz") as npz:
        assert np.abs(npz["m"]).max() > 50  # the wide sample, not the planned one
    with pytest.raises(GateError) as again:
        surgery.apply(
            str(repro / "model.onnx"), str(repro / "passes.toml"), reproducer_dir=tmp_path / "r2"
        )
    assert again.value.pass_name == "test-cap-at-50" and "output y on sample 'planned'" in str(
        again.value
    )


# -- a gate from the command line: a plug-in file brings it --------------------------------------------
GATE_PLUGIN = '''
import onnx_ir as ir
from surgery.gates import BaseGate, Outcome
from surgery.registry import register_gate


class NoMul(BaseGate):
    """The user's gate: no Mul may appear (their compiler has none)."""
    name = "no-mul"

    def check(self, state):
        muls = [n.name for n in state.model.graph if n.op_type == "Mul"]
        if muls:
            return Outcome.failed(self.name, f"Mul nodes appeared: {', '.join(muls)}", tensor=muls[0])
        return Outcome.passed(self.name, numbers={"mul": 0})


@register_gate
class CountNodes(BaseGate):
    name = "count-nodes"

    def check(self, state):
        return Outcome.passed(self.name, numbers={"nodes": len(state.model.graph)})


SURGERY_GATES = [NoMul()]
'''

ADD_MUL_PASS = '''
import numpy as np
import onnx_ir as ir
from surgery.pass_base import SurgeryPass, SurgeryResult


class TimesOne(SurgeryPass):
    """y -> y * 1 (exact: parity passes; only the user's gate objects)."""
    name = "user-times-one"

    def call(self, model):
        g = model.graph
        y = g.outputs[0]
        one = ir.Value(name="one", const_value=ir.tensor(np.array(1, np.float32), name="one"),
                       shape=ir.Shape([]), type=ir.TensorType(ir.DataType.FLOAT))
        g.register_initializer(one)
        mul = ir.Node("", "Mul", [y, one], name="times_one")
        g.append(mul)
        y.name = "y_before"
        mul.outputs[0].name, mul.outputs[0].type, mul.outputs[0].shape = "y", y.type, y.shape
        g.outputs[0] = mul.outputs[0]
        return SurgeryResult(model, True)
'''


def test_a_plugin_file_brings_gates_to_a_cli_run(mlp, tmp_path, capsys, monkeypatch):
    from surgery import registry
    from surgery.cli import main

    monkeypatch.chdir(tmp_path)
    onnx.save(mlp, tmp_path / "model.onnx")
    (tmp_path / "gates_plugin.py").write_text(GATE_PLUGIN)
    (tmp_path / "times_one.py").write_text(ADD_MUL_PASS)
    try:
        args = [
            "apply",
            "user-times-one",
            str(tmp_path / "model.onnx"),
            "-o",
            str(tmp_path / "out.onnx"),
            "--plugin",
            str(tmp_path / "times_one.py"),
            "-q",
        ]
        assert main(args) == 0, (
            capsys.readouterr().err
        )  # without the gate plug-in the Mul is accepted
        (tmp_path / "out.onnx").unlink()
        code = main(
            [
                *args,
                "--plugin",
                str(tmp_path / "gates_plugin.py"),
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        err = capsys.readouterr().err
        assert code == 1 and not (tmp_path / "out.onnx").exists(), err
        assert "Mul nodes appeared: times_one" in err and "user-times-one" in err, err
        doc = json.loads((tmp_path / "r.json").read_text())
        gates = doc["steps"][0]["gates"]
        assert gates["no-mul"]["status"] == "failed" and gates["no-mul"]["tensor"] == "times_one"
        assert gates["count-nodes"]["numbers"] == {
            "nodes": 5
        }  # registered with the decorator, ran before
        assert list(gates)[:4] == ["checker", "signature", "ort", "parity"]
    finally:
        registry.clear_plugin_gates()
        registry.unregister("user-times-one")


def test_a_plugin_gate_must_be_a_gate_with_a_free_name(tmp_path, capsys):
    from surgery.cli import main

    (tmp_path / "bad.py").write_text("SURGERY_GATES = [object()]\n")
    (tmp_path / "clash.py").write_text(
        "from surgery.gates import BaseGate, Outcome\n"
        "class P(BaseGate):\n    name = 'parity'\n    def check(self, state):\n        return Outcome.passed(self.name)\n"
        "SURGERY_GATES = [P]\n"
    )
    for name, expected in (
        ("bad.py", "is not a gate"),
        ("clash.py", "gate name 'parity' is taken"),
    ):
        code = main(
            [
                "apply",
                "cleanup",
                str(tmp_path / "m.onnx"),
                "-o",
                str(tmp_path / "o.onnx"),
                "--plugin",
                str(tmp_path / name),
            ]
        )
        err = capsys.readouterr().err
        assert (
            code == 2
            and expected in err
            and "--plugin" in err
            and len(err.strip().splitlines()) == 1
        ), err


def test_run_state_old_name_uses_reference_reads_and_sets_uses_reference_evaluator():
    """Renamed so that "reference" in the gates means the original's outputs; the old name stays."""
    from surgery.gates.state import RunState
    from surgery.report import Report

    model = ir.from_proto(
        make_model(
            [h.make_node("Relu", ["x"], ["y"])], [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])]
        )
    )
    run = RunState(pipeline=Pipeline([]), model=model, report=Report())
    assert run.uses_reference is run.uses_reference_evaluator is False
    run.uses_reference = True
    assert run.uses_reference_evaluator is True and run.uses_reference is True
