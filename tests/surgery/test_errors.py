"""The error hierarchy: ``surgery.errors.PassError`` is also onnx-ir's ``PassError``."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery import registry
from surgery.cli import main
from surgery.errors import PassError, SurgeryError
from surgery.pass_base import SurgeryPass, SurgeryResult
from surgery.testing import make_model, vi


class RefuseAlways(SurgeryPass):
    """Test-only: refuse every model with our PassError (a two-line reason)."""

    name = "test-refuse-always"

    def call(self, model: ir.Model) -> SurgeryResult:
        raise PassError("no Relu may\nappear here", pass_name=self.name)


class RaiseIrPassError(SurgeryPass):
    """Test-only: fail with onnx-ir's own PassError, as an onnx-ir pass run inside a pass would."""

    name = "test-raise-ir-pass-error"

    def call(self, model: ir.Model) -> SurgeryResult:
        raise ir.passes.PassError("an onnx-ir pass failed\nin two lines")


@pytest.fixture
def refusing_passes():
    classes = [RefuseAlways, RaiseIrPassError]
    for cls in classes:
        registry.register(cls)
    yield
    for cls in classes:
        registry.unregister(cls.name)


def _model() -> onnx.ModelProto:
    return make_model(
        [h.make_node("Relu", ["x"], ["y"], name="relu")],
        [vi("x", T.FLOAT, [1, 4])],
        [vi("y", T.FLOAT, [1, 4])],
    )


def test_our_pass_error_is_onnx_irs_pass_error_and_a_surgery_error():
    exc = PassError("cannot rewrite", pass_name="my-pass")
    assert isinstance(exc, ir.passes.PassError) and isinstance(exc, SurgeryError)
    assert (
        exc.exit_code == 2 and exc.pass_name == "my-pass" and str(exc) == "my-pass: cannot rewrite"
    )
    assert surgery.PassError is PassError  # the lazily built class is one class
    assert PassError.__module__ == "surgery.errors" and PassError.__qualname__ == "PassError"


def test_code_catching_onnx_irs_pass_error_catches_a_pass_refusal():
    model = ir.from_proto(_model())
    with pytest.raises(ir.passes.PassError, match="test-refuse-always: no Relu"):
        RefuseAlways()(model)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("test-refuse-always", "test-refuse-always: no Relu may\\nappear here"),
        (
            "test-raise-ir-pass-error",
            "test-raise-ir-pass-error: internal error: PassError: an onnx-ir pass failed\\nin two lines",
        ),
    ],
)
def test_a_pass_error_inside_a_pass_is_exit_2_with_one_line(
    name, expected, refusing_passes, tmp_path, capsys
):
    onnx.save(_model(), tmp_path / "model.onnx")
    (tmp_path / "passes.toml").write_text(f'[[pass]]\nname = "{name}"\n')
    code = main(
        [
            "apply",
            str(tmp_path / "passes.toml"),
            str(tmp_path / "model.onnx"),
            "-o",
            str(tmp_path / "out.onnx"),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines() == [f"surgery: error: {expected}"]
    assert not (tmp_path / "out.onnx").exists()
