"""resize: modes ATC ignores or mishandles, non-constant scales, documented rounding differences."""

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.resize import check_resize
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi

X = vi("x", T.FLOAT, [1, 1, 4, 4])
SCALES = {"scales": np.array([1, 1, 2, 2], np.float32)}


def _kinds(findings):
    return {f.details["kind"]: f for f in findings}


def test_cubic_mode_will_fail(run_check):
    model = make_model(
        [h.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", name="up")],
        [X],
        [vi("y", T.FLOAT, [1, 1, 8, 8])],
        SCALES,
    )
    found = _kinds(run_check(check_resize, model))
    assert found["mode"].severity is Severity.WILL_FAIL and found["mode"].nodes == ["up"]


def test_sizes_from_shape_arithmetic_are_folded_by_make_static(run_check):
    model = make_model(
        [
            h.make_node("Shape", ["x"], ["s"], name="shape"),
            h.make_node("Mul", ["s", "two"], ["sizes"], name="double"),
            h.make_node(
                "Resize",
                ["x", "", "", "sizes"],
                ["y"],
                mode="linear",
                coordinate_transformation_mode="pytorch_half_pixel",
                name="up",
            ),
        ],
        [vi("x", T.FLOAT, [1, 1, "h", "w"])],
        [vi("y", T.FLOAT, [1, 1, None, None])],
        {"two": np.array([1, 1, 2, 2], np.int64)},
    )
    (finding,) = run_check(check_resize, model)
    assert finding.details == {"kind": "scales", "value": "shape arithmetic"} and finding.fix == [
        "make-static"
    ]
    assert finding.severity is Severity.WILL_FAIL


def test_torch_nearest_floor_is_a_precision_risk(run_check):
    model = make_model(
        [
            h.make_node(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                mode="nearest",
                nearest_mode="floor",
                coordinate_transformation_mode="asymmetric",
                name="up",
            )
        ],
        [X],
        [vi("y", T.FLOAT, [1, 1, 8, 8])],
        SCALES,
    )
    (finding,) = run_check(check_resize, model)
    assert finding.severity is Severity.PRECISION_RISK and finding.details["value"] == "floor"


def test_linear_pytorch_half_pixel_with_constant_scales_passes(run_check):
    model = make_model(
        [
            h.make_node(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                mode="linear",
                coordinate_transformation_mode="pytorch_half_pixel",
                name="up",
            )
        ],
        [X],
        [vi("y", T.FLOAT, [1, 1, 8, 8])],
        SCALES,
    )
    assert run_check(check_resize, model) == []


def test_integer_nearest_upsample_offers_the_exact_rewrite(run_check):
    model = make_model(
        [
            h.make_node(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                mode="nearest",
                nearest_mode="floor",
                coordinate_transformation_mode="asymmetric",
                name="up",
            )
        ],
        [X],
        [vi("y", T.FLOAT, [1, 1, 8, 8])],
        SCALES,
    )
    (finding,) = run_check(check_resize, model)
    assert finding.fix == ["nearest-upsample-to-expand"] and "round_prefer_ceil only" in finding.why


def test_fractional_nearest_resize_has_no_rewrite(run_check):
    model = make_model(
        [
            h.make_node(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                mode="nearest",
                nearest_mode="floor",
                coordinate_transformation_mode="asymmetric",
                name="up",
            )
        ],
        [X],
        [vi("y", T.FLOAT, [1, 1, 6, 6])],
        {"scales": np.array([1, 1, 1.5, 1.5], np.float32)},
    )
    (finding,) = run_check(check_resize, model)
    assert finding.fix == [] and "integer-scale upsamples only" in finding.fix_note


def test_resize_at_opset_13(run_check):
    model = make_model(
        [
            h.make_node(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                mode="linear",
                coordinate_transformation_mode="pytorch_half_pixel",
                name="up",
            )
        ],
        [X],
        [vi("y", T.FLOAT, [1, 1, 8, 8])],
        SCALES,
        opset=13,
    )
    (finding,) = run_check(check_resize, model)
    assert (
        finding.details == {"kind": "opset13", "value": "13"}
        and finding.severity is Severity.WILL_FAIL
    )
    assert finding.fix == ["convert-opset"]


def test_convert_opset_moves_resize_off_13():
    import onnx_ir as ir

    from surgery.passes.convert_opset import ConvertOpset
    from surgery.testing import ort_run

    proto = make_model(
        [
            h.make_node(
                "Resize",
                ["x", "", "scales"],
                ["y"],
                mode="linear",
                coordinate_transformation_mode="pytorch_half_pixel",
                name="up",
            )
        ],
        [X],
        [vi("y", T.FLOAT, [1, 1, 8, 8])],
        SCALES,
        opset=13,
    )
    result = ConvertOpset()(ir.from_proto(proto))
    assert result.model.opset_imports[""] == 18
    feeds = {"x": np.random.default_rng(0).random((1, 1, 4, 4), dtype=np.float32)}
    np.testing.assert_allclose(
        ort_run(ir.to_proto(result.model), feeds)["y"], ort_run(proto, feeds)["y"], rtol=1e-6
    )
