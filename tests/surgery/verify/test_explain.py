"""A failing original: the message names what ONNX Runtime said and suggests [inputs] only when inputs are the cause."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import surgery
from surgery.errors import InputError
from surgery.registry import get
from surgery.testing import make_model, vi
from surgery.verify.explain import OrtFailure, classify_ort_failure, clean_ort_message


def _fails(model: onnx.ModelProto, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        surgery.apply(model, [get("cleanup")()], **kwargs)
    assert info.value.exit_code == 2
    text = str(info.value)
    assert "\n" not in text
    return text


def test_custom_op_names_op_and_domain_and_does_not_blame_inputs():
    model = make_model(
        [h.make_node("Foo", ["x"], ["y"], domain="com.acme", name="foo")],
        [vi("x", T.FLOAT, ["n", 3])],
        [vi("y", T.FLOAT, ["n", 3])],
        extra_opsets={"com.acme": 1},
    )
    text = _fails(model)
    assert "'Foo'" in text and "'com.acme'" in text and "custom op" in text
    assert "[inputs]" not in text


def test_ir_version_too_new_is_named():
    model = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="relu")],
        [vi("x", T.FLOAT, [2, 3])],
        [vi("y", T.FLOAT, [2, 3])],
    )
    model.ir_version = 99
    text = _fails(model, verify={"checker": "off"})
    assert "IR version 99" in text and "[inputs]" not in text


def test_missing_kernel_is_named_with_the_op():
    # uint64 Softmax: neither ORT nor the spec has it, ORT says "Could not find an implementation"
    text = clean_ort_message(
        "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for Softmax(13) node with name 'sm'"
    )
    failure = classify_ort_failure(text)
    assert (
        failure.cause == "no-kernel" and "Softmax-13" in failure.detail and not failure.about_inputs
    )


def test_opset_newer_than_ort_is_named():
    message = (
        "[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/model_load_utils.h:46 void "
        "onnxruntime::model_load_utils::ValidateOpsetForDomain(const std::unordered_map<std::__cxx11::basic_string<char>, "
        "int>&, const onnxruntime::logging::Logger&, bool, const std::string&, int) ONNX Runtime only *guarantees* support "
        "for models stamped with official released onnx opset versions. Opset 99 is under development and support for this "
        "is limited. The operator schemas and or other functionality may change before next ONNX release and in this case "
        "ONNX Runtime will not guarantee backward compatibility. Current official support for domain ai.onnx is till opset 28."
    )
    failure = classify_ort_failure(message)
    assert (
        failure.cause == "opset" and "opset 99" in failure.detail and "up to 28" in failure.detail
    )
    assert not failure.about_inputs and "onnxruntime_src" not in failure.detail


def test_shape_failure_on_generated_inputs_suggests_inputs():
    # the model needs exactly 25 elements; no guessed dims give them
    model = make_model(
        [h.make_node("Reshape", ["x", "s"], ["y"], name="reshape")],
        [vi("x", T.FLOAT, ["n", "m"])],
        [vi("y", T.FLOAT, [5, 5])],
        {"s": np.array([5, 5], np.int64)},
    )
    text = _fails(model)
    assert "generated inputs x[1, 1] float32" in text  # the retry with every symbolic dim 1
    assert "Reshape" in text and "[inputs]" in text


def test_index_out_of_range_on_given_inputs_points_at_them():
    model = make_model(
        [h.make_node("Gather", ["w", "i"], ["y"], name="gather")],
        [vi("i", T.INT64, [2])],
        [vi("y", T.FLOAT, [2, 2])],
        {"w": np.ones((3, 2), np.float32)},
    )
    text = _fails(model, inputs={"i": np.array([0, 7], np.int64)})
    assert "out of data bounds" in text and "the parity inputs i[2] int64" in text
    assert "check the inputs given" in text


@pytest.mark.parametrize(
    ("message", "cause", "about_inputs", "detail"),
    [
        (
            "onnxruntime crashed (SIGSEGV) on inputs x[1]",
            "crash",
            True,
            "onnxruntime crashed (SIGSEGV) on inputs x[1]",
        ),
        (
            "Opset 30 is under development. Current official support for domain ai.onnx is till opset 23.",
            "opset",
            False,
            "opset 30 of domain 'ai.onnx' is newer than onnxruntime supports (up to 23)",
        ),
        (
            "Opset 5 for domain 'com.x' is not supported",
            "opset",
            False,
            "opset 5 of domain 'com.x' is not supported by onnxruntime",
        ),
        (
            "Unsupported model IR version: 12, max supported IR version: 10",
            "ir-version",
            False,
            "IR version 12 is newer than onnxruntime supports (up to 10)",
        ),
        (
            "com.acme:Foo(-1) is not a registered function/op",
            "custom-op",
            False,
            "op 'Foo' of domain 'com.acme' is not an operator onnxruntime knows "
            "(a custom op: register its library or replace it)",
        ),
        (
            'No opset import for domain \'com.x\' ("n", Bar, "com.x", -1)',
            "domain",
            False,
            "op 'Bar' of domain 'com.x' has no opset import in the model",
        ),
        (
            "No opset import for domain 'com.y'",
            "domain",
            False,
            "domain 'com.y' has no opset import in the model",
        ),
        (
            "No Op registered for Frob with domain_version of 17",
            "unknown-op",
            False,
            "no operator 'Frob' exists at opset 17",
        ),
        (
            "Could not find an implementation for Erf(13) node",
            "no-kernel",
            False,
            "onnxruntime has no CPU kernel for Erf-13 with these element types, and the reference "
            "evaluator could not run it either",
        ),
        (
            "the reference evaluator cannot run it: 3.0 GiB of weights",
            "reference",
            False,
            "the reference evaluator cannot run it: 3.0 GiB of weights",
        ),
        (
            "Unexpected input data type. Actual: (tensor(double)) , expected: (tensor(float))",
            "input-dtype",
            True,
            "an input is fed as tensor(double) where the model declares tensor(float)",
        ),
        (
            "Could not find an implementation for Erf(13); the reference evaluator cannot run it",
            "no-kernel",  # the earlier pattern wins: the order of the table is kept
            False,
            "onnxruntime has no CPU kernel for Erf-13 with these element types, and the reference "
            "evaluator could not run it either",
        ),
    ],
)
def test_each_pattern_gives_its_cause_and_detail(message, cause, about_inputs, detail):
    assert classify_ort_failure(message) == OrtFailure(cause, detail, about_inputs)
