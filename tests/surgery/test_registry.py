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
