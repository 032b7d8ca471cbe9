"""rewrite-focus: YOLOv5 Focus slicing (4 stride-2 Slices + Concat) becomes Reshape/Transpose, bit-exact."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as TP
from onnx import helper

import surgery
from surgery.doctor import diagnose, emit_pipeline
from surgery.passes.rewrite_focus import RewriteFocus
from surgery.testing import make_model, op_counts, ort_run, vi

RNG = np.random.default_rng(0)
X = RNG.standard_normal((1, 3, 8, 12)).astype(np.float32)
YOLO_ORDER = [(0, 0), (1, 0), (0, 1), (1, 1)]
S2D_ORDER = [(0, 0), (0, 1), (1, 0), (1, 1)]
BIG = np.iinfo(np.int64).max


def focus_model(order=YOLO_ORDER, shape=(1, 3, 8, 12), *, per_axis=False, extra_reader=False):
    """x -> [4 Slices in ``order``] -> Concat(axis=1) -> Relu -> y."""
    nodes, inits, branches = [], {}, []
    for k, (r, c) in enumerate(order):
        if per_axis:  # one Slice per axis, as torch's legacy exporter writes them
            inits.update(
                {
                    f"s{k}a": np.array([r]),
                    f"s{k}b": np.array([c]),
                    "end": np.array([BIG]),
                    "ax2": np.array([2]),
                    "ax3": np.array([3]),
                    "two": np.array([2]),
                }
            )
            nodes.append(
                helper.make_node(
                    "Slice", ["x", f"s{k}a", "end", "ax2", "two"], [f"h{k}"], name=f"slice{k}_h"
                )
            )
            nodes.append(
                helper.make_node(
                    "Slice", [f"h{k}", f"s{k}b", "end", "ax3", "two"], [f"b{k}"], name=f"slice{k}_w"
                )
            )
        else:
            inits.update(
                {
                    f"st{k}": np.array([r, c]),
                    "ends": np.array([BIG, BIG]),
                    "axes": np.array([2, 3]),
                    "steps": np.array([2, 2]),
                }
            )
            nodes.append(
                helper.make_node(
                    "Slice", ["x", f"st{k}", "ends", "axes", "steps"], [f"b{k}"], name=f"slice{k}"
                )
            )
        branches.append(f"b{k}")
    nodes.append(helper.make_node("Concat", branches, ["cat"], name="focus_cat", axis=1))
    nodes.append(helper.make_node("Relu", ["cat"], ["y"], name="relu"))
    n, c, h, w = shape
    out_shape = [
        n,
        4 * c,
        h // 2 if isinstance(h, int) else None,
        w // 2 if isinstance(w, int) else None,
    ]
    outputs = [vi("y", TP.FLOAT, out_shape)]
    if extra_reader:
        outputs.append(vi("b0", TP.FLOAT, [n, c, None, None]))
    return make_model(nodes, [vi("x", TP.FLOAT, list(shape))], outputs, inits, opset=17)


def run_pass(proto, **options):
    model = ir.from_proto(proto)
    result = RewriteFocus(**options)(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    return model, result


@pytest.mark.parametrize("order", [YOLO_ORDER, S2D_ORDER], ids=["yolov5", "space-to-depth"])
@pytest.mark.parametrize("per_axis", [False, True], ids=["one-slice", "slice-per-axis"])
def test_focus_becomes_reshape_transpose_bit_exact(order, per_axis):
    proto = focus_model(order, per_axis=per_axis)
    expected = ort_run(proto, {"x": X})["y"]
    model, result = run_pass(proto)
    assert result.stats["rewritten"] == 1
    counts = op_counts(model)
    assert "Slice" not in counts and "Concat" not in counts
    assert counts["Reshape"] == 2 and counts["Transpose"] == 1
    assert not model.graph.initializers  # the Slice parameters went with the Slices
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], expected)
    new = [n for n in model.graph if n.op_type in ("Reshape", "Transpose")]
    assert all(n.name.startswith("focus_cat/") for n in new)  # named after the node they replace
    assert all(v.shape is not None and v.dtype is not None for n in new for v in n.outputs)
    assert RewriteFocus()(model).modified is False


def test_space_to_depth_form():
    proto = focus_model(S2D_ORDER)
    expected = ort_run(proto, {"x": X})["y"]
    model, _ = run_pass(proto, form="space-to-depth")
    assert op_counts(model) == {"SpaceToDepth": 1, "Relu": 1}
    np.testing.assert_array_equal(ort_run(model, {"x": X})["y"], expected)
    # YOLOv5's order is not SpaceToDepth's: it keeps the Transpose form
    model, _ = run_pass(focus_model(YOLO_ORDER), form="space-to-depth")
    assert op_counts(model)["Transpose"] == 1 and "SpaceToDepth" not in op_counts(model)


def test_other_orders_dynamic_shapes_and_shared_slices_are_left_alone():
    model, result = run_pass(focus_model([(1, 1), (0, 0), (0, 1), (1, 0)]))
    assert not result.modified and op_counts(model)["Slice"] == 4
    assert any("Concat order" in note for note in result.notes)
    model, result = run_pass(focus_model(shape=(1, 3, "h", "w")))
    assert not result.modified and any("make-static" in note for note in result.notes)
    model, result = run_pass(focus_model(extra_reader=True))
    assert not result.modified


def test_focus_inside_an_if_branch():
    inner = focus_model()
    branch = helper.make_graph(
        list(inner.graph.node), "then", [], list(inner.graph.output), list(inner.graph.initializer)
    )
    other = helper.make_graph(
        [
            helper.make_node("SpaceToDepth", ["x"], ["s"], blocksize=2),
            helper.make_node("Relu", ["s"], ["y2"]),
        ],
        "else",
        [],
        [vi("y2", TP.FLOAT, [1, 12, 4, 6])],
    )
    proto = make_model(
        [helper.make_node("If", ["c"], ["out"], name="if", then_branch=branch, else_branch=other)],
        [vi("x", TP.FLOAT, [1, 3, 8, 12]), vi("c", TP.BOOL, [])],
        [vi("out", TP.FLOAT, [1, 12, 4, 6])],
    )
    expected = ort_run(proto, {"x": X, "c": np.array(True)})["out"]
    model, result = run_pass(proto)
    assert result.stats["rewritten"] == 1 and "Slice" not in op_counts(model)
    np.testing.assert_array_equal(ort_run(model, {"x": X, "c": np.array(True)})["out"], expected)


@pytest.mark.torch
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_torch_yolov5_focus(dynamo, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Focus(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(12, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(
                torch.cat(
                    [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1
                )
            )

    path = tmp_path / "focus.onnx"
    torch.onnx.export(Focus().eval(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=dynamo)
    model, report = surgery.apply(str(path), [RewriteFocus()])
    step = report.steps[0]
    assert step.stats["rewritten"] == 1 and step.parity_status == "ok", step
    assert set(op_counts(model)) == {"Reshape", "Transpose", "Conv"} | (
        {"Constant"} & set(op_counts(model))
    )


def test_doctor_points_focus_at_rewrite_focus_and_its_pipeline_fixes_it(tmp_path):
    """Before: four Slices flagged will-fail with no fix. After: the emitted pipeline removes them."""
    proto = focus_model(shape=(1, 3, "h", "w"))
    model = ir.from_proto(proto)
    report = diagnose(model)
    (finding,) = [f for f in report.findings if f.check == "slice"]
    assert finding.fix == ["rewrite-focus"] and len(finding.nodes) == 4
    emitted = emit_pipeline(report, model)
    assert emitted.steps.index("make-static") < emitted.steps.index("rewrite-focus")
    toml = tmp_path / "passes.toml"
    toml.write_text(emitted.text)
    path = tmp_path / "focus.onnx"
    onnx.save(proto, path)
    surgery.apply(path, toml, output=tmp_path / "out.onnx")
    fixed = ir.load(tmp_path / "out.onnx")
    assert "Slice" not in op_counts(fixed)
    after = diagnose(tmp_path / "out.onnx")
    assert "slice" not in after.checks() and after.exit_code == 0, [f.title for f in after.findings]
