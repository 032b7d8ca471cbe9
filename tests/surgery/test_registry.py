"""The registry: decorator registration, entry-point plug-ins, did-you-mean lookups."""

from __future__ import annotations

import sys
import textwrap

import pytest

from surgery import registry
from surgery.errors import PipelineError
from surgery.pass_base import SurgeryPass, SurgeryResult


def test_unknown_name_suggests(monkeypatch):
    with pytest.raises(PipelineError, match="did you mean 'cleanup'"):
        registry.get("claenup")


def test_name_clash_is_refused():
    class A(SurgeryPass):
        """A."""

        name = "test-clash"

        def call(self, model):
            return SurgeryResult(model, False)

    class B(A):
        """B."""

        name = "test-clash"

    registry.register(A)
    try:
        with pytest.raises(ValueError, match="taken"):
            registry.register(B)
    finally:
        registry.unregister("test-clash")


def test_bad_pass_declarations_are_refused():
    with pytest.raises(TypeError, match="kebab-case"):

        class Bad(SurgeryPass):
            """Bad."""

            name = "Not_Kebab"

            def call(self, model):
                return SurgeryResult(model, False)


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    pkg = tmp_path / "my_surgery_plugin.py"
    pkg.write_text(
        textwrap.dedent('''
        """A third-party pass package."""
        from surgery.pass_base import SurgeryPass, SurgeryResult

        class Plugin(SurgeryPass):
            """Do nothing, from a plug-in."""
            name = "test-plugin-pass"

            def call(self, model):
                return SurgeryResult(model, False)
    ''')
    )
    dist = tmp_path / "my_surgery_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-surgery-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[surgery.passes]\nplugin = my_surgery_plugin:Plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    try:
        cls = registry.get("test-plugin-pass")
        assert cls.summary() == "Do nothing, from a plug-in."
    finally:
        registry.unregister("test-plugin-pass")
        sys.modules.pop("my_surgery_plugin", None)


def test_bad_statistics_declarations_are_refused():
    from surgery.pass_base import declare_stats

    with pytest.raises(TypeError, match="snake_case"):

        class BadKey(SurgeryPass):
            """Bad key."""

            name = "test-bad-stats-key"
            statistics = declare_stats(**{"Not-Snake": "a count"})

            def call(self, model):
                return SurgeryResult(model, False)

    with pytest.raises(TypeError, match="one-line meaning"):

        class NoMeaning(SurgeryPass):
            """No meaning."""

            name = "test-bad-stats-meaning"
            statistics = declare_stats(removed="")

            def call(self, model):
                return SurgeryResult(model, False)

    with pytest.raises(TypeError, match="must map each stats key"):

        class NotAMapping(SurgeryPass):
            """A list, not a mapping."""

            name = "test-bad-stats-list"
            statistics = ("removed",)  # type: ignore[assignment]  # the mistake under test

            def call(self, model):
                return SurgeryResult(model, False)


def test_declare_stats_keeps_order_and_is_read_only():
    from surgery.pass_base import declare_stats

    declared = declare_stats(b="second letter", a="first letter")
    assert list(declared) == ["b", "a"]
    with pytest.raises(TypeError):
        declared["c"] = "third letter"  # type: ignore[index]  # read-only by design


def _relu_model():
    from onnx import TensorProto as T
    from onnx import helper as h

    from surgery.testing import make_model, vi

    return make_model(
        [h.make_node("Relu", ["x"], ["y"], name="relu")],
        [vi("x", T.FLOAT, [1, 2])],
        [vi("y", T.FLOAT, [1, 2])],
    )


class _Reports(SurgeryPass):
    """Report one stats key it declares and one it does not."""

    name = "test-undeclared-stats"
    statistics = {"seen": "nodes looked at"}  # noqa: RUF012 - a plain dict is accepted too

    def call(self, model):
        return SurgeryResult(model, False, stats={"seen": 1, "typo_key": 2})


class _ReportsUndeclared(_Reports):
    """The same, declaring no statistics (a third-party pass written before they existed)."""

    name = "test-no-declared-stats"
    statistics = None


def test_an_undeclared_stats_key_is_noted_in_the_report(tmp_path):
    import surgery

    assert _Reports.undeclared_stats({"seen": 1, "typo_key": 2}) == ["typo_key"]
    _, report = surgery.apply(_relu_model(), [_Reports()], reproducer_dir=tmp_path)
    step = report.steps[0]
    assert step.stats == {"seen": 1, "typo_key": 2}  # still reported, and noted as a bug
    assert any(
        "does not declare: typo_key" in n and "_Reports.statistics" in n for n in step.notes
    ), step.notes


def test_a_pass_declaring_no_statistics_may_report_any_key(tmp_path):
    import surgery

    assert _ReportsUndeclared.undeclared_stats({"anything": 1}) == []
    _, report = surgery.apply(_relu_model(), [_ReportsUndeclared()], reproducer_dir=tmp_path)
    assert report.steps[0].stats == {"seen": 1, "typo_key": 2}
    assert not [n for n in report.steps[0].notes if "does not declare" in n]
