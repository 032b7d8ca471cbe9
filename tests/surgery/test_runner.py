"""The runner's gates: checker, ORT load, parity vs the original, tolerance policy, reproducer."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import GateError, InputError
from surgery.pass_base import SurgeryPass, SurgeryResult
from surgery.pipeline import Pipeline, Step, StepVerify
from surgery.testing import make_model, vi


def test_good_pipeline_reports_each_pass(mlp, test_passes):
    model, report = surgery.apply(mlp, [test_passes["test-scale-output"]()])
    assert isinstance(model, onnx.ModelProto)  # same kind as given
    step = report.steps[0]
    assert (
        step.modified and step.checker == "ok" and step.ort == "ok" and step.parity_status == "ok"
    )
    assert step.parity[0].name == "y" and 0 < step.parity[0].max_abs < 0.05
    assert report.oracle == "onnxruntime"
    assert "generated [2, 16] float32" in report.inputs["x"]
    assert "test-scale-output" in report.table()


def test_parity_gate_catches_perturbed_weight_and_writes_reproducer(mlp, test_passes, tmp_path):
    repro = tmp_path / "repro"
    with pytest.raises(GateError) as info:
        surgery.apply(
            mlp,
            [test_passes["test-scale-output"](), test_passes["test-perturb-weight"]()],
            reproducer_dir=repro,
        )
    err = info.value
    assert err.pass_name == "test-perturb-weight" and err.gate == "parity"
    text = str(err)
    assert (
        "after pass 'test-perturb-weight'" in text
        and "output y" in text
        and "max abs error" in text
        and "rtol" in text
    )
    # the reproducer holds the model BEFORE the failing pass (scale-output applied, perturbation not)
    assert sorted(p.name for p in repro.iterdir()) == [
        "README.txt",
        "inputs.npz",
        "model.onnx",
        "passes.toml",
    ]
    before = onnx.load(repro / "model.onnx")
    w2 = onnx.numpy_helper.to_array(next(t for t in before.graph.initializer if t.name == "W2"))
    original = onnx.numpy_helper.to_array(next(t for t in mlp.graph.initializer if t.name == "W2"))
    np.testing.assert_allclose(w2, original * np.float32(1.001), rtol=1e-6)
    assert 'name = "test-perturb-weight"' in (repro / "passes.toml").read_text()
    # replaying the reproducer fails the same way
    with pytest.raises(GateError, match="test-perturb-weight"):
        surgery.apply(
            str(repro / "model.onnx"), str(repro / "passes.toml"), reproducer_dir=tmp_path / "again"
        )


def test_checker_gate_catches_invalid_model(mlp, test_passes):
    with pytest.raises(GateError) as info:
        surgery.apply(mlp, [test_passes["test-break-graph"]()])
    assert info.value.gate == "checker" and "test-break-graph" in str(info.value)


def test_approx_pass_uses_its_tolerance_and_a_user_override_wins(mlp, test_passes):
    scale = test_passes["test-scale-output"]
    surgery.apply(
        mlp, [scale()], verify={"rtol": 0.0, "atol": 0.0}
    )  # its own default tolerance applies
    pipe = Pipeline([Step(scale(), StepVerify(rtol=0.0, atol=0.0))])
    with pytest.raises(GateError, match="test-scale-output"):
        surgery.apply(mlp, pipe)


def test_approx_tolerance_carries_to_later_exact_passes(mlp, test_passes):
    # the later exact pass changes nothing numerically but is compared with the ORIGINAL: the approx
    # pass's tolerance must carry over, or it would fail for the approximation it did not make.
    _, report = surgery.apply(
        mlp, [test_passes["test-scale-output"](), test_passes["test-perturb-weight"](delta=0.0)]
    )
    assert [s.parity_status for s in report.steps] == ["ok", "ok"]


def test_changes_pass_reports_deviation_and_rebases(mlp, test_passes):
    change = test_passes["test-relu-to-sigmoid"]
    _, report = surgery.apply(mlp, [change(), test_passes["test-perturb-weight"](delta=0.0)])
    first = report.steps[0]
    assert first.parity_status == "deviation reported" and first.parity[0].max_abs > 0.1
    assert not first.parity[0].enforced
    assert report.steps[1].parity_status == "ok"  # compared with the model after the change
    # a tolerance the user sets for a changes pass is enforced
    with pytest.raises(GateError, match="test-relu-to-sigmoid"):
        surgery.apply(mlp, Pipeline([Step(change(), StepVerify(atol=1e-3))]))


def test_parity_at_end_only(mlp, test_passes):
    pipe = Pipeline([Step(test_passes["test-scale-output"]())])
    pipe.verify = pipe.verify.with_mode("end")
    _, report = surgery.apply(mlp, pipe)
    assert report.steps[0].parity_status == "at end"
    assert "final parity: ok (1 outputs)" in report.final_checks
    pipe = Pipeline([Step(test_passes["test-perturb-weight"]())])
    pipe.verify = pipe.verify.with_mode("end")
    with pytest.raises(GateError, match="at the end of the pipeline"):
        surgery.apply(mlp, pipe)


def test_verify_off_skips_gates(mlp, test_passes):
    _, report = surgery.apply(mlp, [test_passes["test-perturb-weight"]()], verify="off")
    assert report.steps[0].parity_status == "off" and report.steps[0].checker == "off"
    assert report.oracle == "not run"


def test_ir_model_is_changed_in_place_and_proto_is_not(mlp, test_passes):
    before = mlp.SerializeToString()
    surgery.apply(mlp, [test_passes["test-scale-output"]()])
    assert mlp.SerializeToString() == before
    model = ir.from_proto(mlp)
    out, _ = surgery.apply(model, [test_passes["test-scale-output"]()])
    assert out is model


def test_reference_evaluator_fallback_for_float64_conv():
    # onnxruntime has no float64 Conv kernel on CPU (pitfall 7): the oracle must say so and still work.
    w = np.random.default_rng(0).standard_normal((2, 1, 3, 3))
    proto = make_model(
        [
            h.make_node("Conv", ["x", "w"], ["y"], name="conv"),
            h.make_node("Relu", ["y"], ["z"], name="relu"),
        ],
        [vi("x", T.DOUBLE, [1, 1, 5, 5])],
        [vi("z", T.DOUBLE, [1, 2, 3, 3])],
        {"w": w},
    )

    class RenameNothing(SurgeryPass):
        """Test-only: claims a change without making one."""

        name = "test-claims-change"

        def call(self, model):
            return SurgeryResult(model, True)

    _, report = surgery.apply(proto, [RenameNothing()])
    assert report.oracle == "reference evaluator"
    assert report.steps[0].parity_status == "ok"
    assert report.steps[0].ort == "no kernel (as the original)"
    assert any("ReferenceEvaluator" in n for n in report.notes)


def test_declared_inputs_and_index_ranges():
    # an int64 input that indexes a 5-row table must be generated inside [0, 5)
    table = np.arange(10, dtype=np.float32).reshape(5, 2)
    proto = make_model(
        [h.make_node("Gather", ["table", "ids"], ["y"], name="emb")],
        [vi("ids", T.INT64, ["batch", "seq"])],
        [vi("y", T.FLOAT, ["batch", "seq", 2])],
        {"table": table},
    )

    class Claim(SurgeryPass):
        """Test-only."""

        name = "test-claim"

        def call(self, model):
            return SurgeryResult(model, True)

    _, report = surgery.apply(proto, [Claim()])
    assert "indices in [0, 5)" in report.inputs["ids"]
    _, report = surgery.apply(proto, [Claim()], inputs={"ids": np.array([[4, 0]], dtype=np.int64)})
    assert report.inputs["ids"] == "given"
    with pytest.raises(
        InputError, match=r"input 'idz' is not an input of the model \(did you mean 'ids'"
    ):
        surgery.apply(proto, [Claim()], inputs={"idz": np.zeros((1, 1), np.int64)})


def test_chained_models_are_verified_together(mlp):
    class SplitLast(SurgeryPass):
        """Test-only: move the last MatMul into a chained model."""

        name = "test-split-last"

        def call(self, model):
            fc2 = next(n for n in model.graph if n.name == "fc2")
            a1 = fc2.inputs[0]
            tail_in = ir.Value(
                name=a1.name, shape=ir.Shape(["batch", 32]), type=ir.TensorType(ir.DataType.FLOAT)
            )
            w2 = model.graph.initializers["W2"]
            w2_tail = ir.Value(
                name="W2",
                shape=ir.Shape([32, 4]),
                type=ir.TensorType(ir.DataType.FLOAT),
                const_value=w2.const_value,
            )
            y = fc2.outputs[0]
            tail_node = ir.Node("", "MatMul", [tail_in, w2_tail], name="fc2", num_outputs=1)
            tail_node.outputs[0].name = y.name
            tail_node.outputs[0].type = y.type
            tail_node.outputs[0].shape = y.shape
            tail = ir.Model(
                ir.Graph(
                    [tail_in],
                    tail_node.outputs,
                    nodes=[tail_node],
                    initializers=[w2_tail],
                    name="tail",
                    opset_imports=dict(model.opset_imports),
                ),
                ir_version=model.ir_version,
            )
            a1.type = ir.TensorType(ir.DataType.FLOAT)
            a1.shape = ir.Shape(["batch", 32])
            model.graph.outputs.clear()
            model.graph.outputs.append(a1)
            model.graph.remove(fc2, safe=True)
            model.graph.initializers.pop("W2")
            return SurgeryResult(model, True, chained={"tail": tail})

    _out, report = surgery.apply(ir.from_proto(mlp), [SplitLast()])
    assert report.steps[0].parity_status == "ok"
    assert report.chained == ["tail"] and isinstance(report.models["tail"], ir.Model)


def test_parity_failure_names_the_first_divergent_tensor(mlp, test_passes, tmp_path):
    with pytest.raises(GateError) as info:
        surgery.apply(
            mlp, [test_passes["test-perturb-weight"](weight="W1")], reproducer_dir=tmp_path / "r"
        )
    # W1 feeds fc1: its output h1 is the first tensor, in topological order, that breaks tolerance
    assert "first divergent tensor" in str(info.value) and "'h1'" in str(info.value)


def test_extract_in_a_pipeline_is_compared_with_the_slice_of_the_original(mlp, tmp_path):
    from surgery.passes.extract import Extract

    model, report = surgery.apply(
        mlp, [Extract(inputs=["a1"], outputs=["y"])], output=tmp_path / "part.onnx"
    )
    step = report.steps[0]
    assert step.modified and step.parity_status == "ok" and step.parity[0].name == "y"
    assert [i.name for i in model.graph.input] == ["a1"]


def test_parity_deferred_by_node_budget_still_runs_at_the_end(mlp, test_passes):
    pipe = Pipeline([Step(test_passes["test-perturb-weight"]())])
    pipe.verify = dataclasses.replace(pipe.verify, parity_max_nodes=1)
    with pytest.raises(GateError, match="at the end of the pipeline"):
        surgery.apply(mlp, pipe)
    pipe = Pipeline([Step(test_passes["test-scale-output"]())])
    pipe.verify = dataclasses.replace(pipe.verify, parity_max_nodes=1)
    _, report = surgery.apply(mlp, pipe)
    assert (
        report.steps[0].parity_status == "at end"
        and "final parity: ok (1 outputs)" in report.final_checks
    )


# --- library warnings (issue 11, item 6) ---------------------------------------------------------


def _model_onnx_ir_warns_about() -> onnx.ModelProto:
    """Relu with an extra unnamed initializer: onnx-ir's deserializer logs "Initializer tensor must
    have a name ... Skipping this initializer" (a real library warning, through logging)."""
    import onnx as _onnx
    from onnx import TensorProto as _T
    from onnx import helper as _h

    proto = make_model(
        [_h.make_node("Relu", ["x"], ["y"], name="relu")],
        [vi("x", _T.FLOAT, [2, 3])],
        [vi("y", _T.FLOAT, [2, 3])],
    )
    proto.graph.initializer.append(_onnx.numpy_helper.from_array(np.zeros(2, np.float32), ""))
    return proto


class _Overflows(SurgeryPass):
    """Test-only: computes a float32 overflow (numpy's RuntimeWarning), changes nothing."""

    name = "test-overflows"

    def call(self, model):
        np.float32(3e38) * np.float32(10)
        return SurgeryResult(model, False)


def test_api_captures_library_warnings_into_the_report_not_stderr(capfd, caplog):
    import logging

    import surgery
    from surgery.doctor import diagnose

    with caplog.at_level(logging.INFO, logger="surgery.libwarnings"):
        _, report = surgery.apply(_model_onnx_ir_warns_about(), [_Overflows()])
    err = capfd.readouterr().err
    assert err == "", err  # neither Python's last-resort log handler nor warnings printed a line
    assert any(
        w.startswith("onnx_ir") and "Initializer tensor must have a name" in w
        for w in report.warnings
    ), report.warnings
    assert any(w.startswith("RuntimeWarning: overflow") for w in report.warnings), report.warnings
    assert report.to_dict()["warnings"] == report.warnings
    # ... and to the log (INFO, for a caller that wants to see them)
    assert sum("library warning:" in r.getMessage() for r in caplog.records) == len(report.warnings)
    # the library loggers are left as they were
    import logging as _logging

    assert _logging.getLogger("onnx_ir").propagate and not _logging.getLogger("onnx_ir").handlers
    doctor = diagnose(_model_onnx_ir_warns_about())
    assert capfd.readouterr().err == ""
    assert any("Initializer tensor must have a name" in w for w in doctor.warnings)
    assert doctor.to_dict()["warnings"] == doctor.warnings


def test_api_prints_no_library_warning_in_a_plain_python_process(tmp_path):
    """No logging configured (Python's last-resort handler prints library WARNING records to stderr)."""
    import subprocess
    import sys
    import textwrap

    onnx.save(_model_onnx_ir_warns_about(), tmp_path / "m.onnx")
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import surgery
        from surgery.doctor import diagnose
        from surgery.pass_base import SurgeryPass, SurgeryResult

        class Overflows(SurgeryPass):
            name = "test-overflows"
            def call(self, model):
                np.float32(3e38) * np.float32(10)
                return SurgeryResult(model, False)

        _, report = surgery.apply(sys.argv[1], [Overflows()])
        print(len(report.warnings), len(diagnose(sys.argv[1]).warnings))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    applied, diagnosed = map(int, done.stdout.split())
    assert applied >= 2 and diagnosed >= 1
