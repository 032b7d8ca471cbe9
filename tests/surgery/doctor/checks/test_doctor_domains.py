"""domains: model-local functions and opset domains ATC does not know."""

from onnx import TensorProto as T
from onnx import helper as h

from surgery.doctor.checks.domains import check_domains
from surgery.doctor.finding import Severity
from surgery.testing import make_model, vi


def _function_model(extra=None):
    fn = h.make_function(
        "local",
        "Twice",
        ["a"],
        ["b"],
        [h.make_node("Add", ["a", "a"], ["b"])],
        [h.make_opsetid("", 17)],
    )
    return make_model(
        [h.make_node("Twice", ["x"], ["y"], name="call_twice", domain="local")],
        [vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
        functions=[fn],
        extra_opsets={"local": 1, **(extra or {})},
    )


def test_functions_and_unknown_domains_will_fail(run_check):
    findings = run_check(check_domains, _function_model({"pkg.unused": 1}))
    by_title = {f.title: f for f in findings}
    fn = next(f for f in findings if "model-local function" in f.title)
    assert (
        fn.severity is Severity.WILL_FAIL
        and fn.nodes == ["call_twice"]
        and fn.fix == ["inline-functions"]
    )
    assert fn.details["functions"] == ["local::Twice"]
    assert fn.details["domains"] == ["local"]
    assert not any(
        "'local'" in t for t in by_title
    )  # the calls' domain is covered by the functions finding
    unused = next(f for t, f in by_title.items() if "'pkg.unused'" in t)
    assert unused.title.endswith("and unused") and unused.fix == ["inline-functions"]


def test_custom_ops_in_unknown_domain_have_no_fix(run_check):
    import onnx

    graph = h.make_graph(
        [h.make_node("Magic", ["x"], ["y"], name="magic", domain="acme")],
        "g",
        [vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("acme", 1)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    (finding,) = run_check(check_domains, model)
    assert finding.nodes == ["magic"] and finding.fix == [] and "custom ops" in finding.fix_note


def test_plain_and_npu_domains_pass(run_check):
    plain = make_model(
        [h.make_node("Relu", ["x"], ["y"], name="r")],
        [vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
    )
    assert run_check(check_domains, plain) == []
    graph = h.make_graph(
        [h.make_node("NPUMish", ["x"], ["y"], name="m", domain="npu")],
        "g",
        [vi("x", T.FLOAT, [2])],
        [vi("y", T.FLOAT, [2])],
    )
    npu = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("npu", 1)])
    assert run_check(check_domains, npu) == []  # ATC registers ops in the npu domain
