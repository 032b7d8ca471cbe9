"""``surgery passes list|show`` print what the pass declarations say."""

from __future__ import annotations

from surgery import registry
from surgery.cli import main


def test_list_shows_every_registered_pass_with_summary(capsys):
    assert main(["passes", "list"]) == 0
    out = capsys.readouterr().out
    for cls in registry.all_passes():
        line = next(line for line in out.splitlines() if line.split()[0] == cls.name)
        assert cls.numerics.value in line and cls.summary() in line
    assert "remove-dropout" in out and "cleanup" in out


def test_show_prints_numerics_and_options(capsys, test_passes):
    assert main(["passes", "show", "test-perturb-weight"]) == 0
    out = capsys.readouterr().out
    assert "numerics: exact" in out
    assert "delta (float; default 0.1)" in out and "amount added to every element" in out
    assert main(["passes", "show", "test-scale-output"]) == 0
    assert "default tolerance: rtol 0.01, atol 0.001" in capsys.readouterr().out


def test_show_lists_the_declared_statistics(capsys):
    import surgery.passes  # noqa: F401  (the built-ins)

    cls = registry.get("remove-dropout")
    assert main(["passes", "show", "remove-dropout"]) == 0
    out = capsys.readouterr().out
    section = out.split("statistics (the report's stats keys):\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.split(None, 1) for line in section.splitlines()]
    assert rows == [[key, meaning] for key, meaning in cls.statistics.items()]
    assert ["removed", "Dropout nodes removed"] in rows
    # every built-in pass shows its own
    for cls in registry.all_passes():
        if cls.__module__.startswith("surgery.passes.") and cls.statistics:
            assert main(["passes", "show", cls.name]) == 0
            out = capsys.readouterr().out
            for key in cls.statistics:
                assert f"\n  {key} " in out, (cls.name, key)


def test_show_statistics_of_a_registered_pass_and_of_one_declaring_none(capsys, test_passes):
    from surgery.pass_base import SurgeryPass, SurgeryResult, declare_stats

    class Counting(SurgeryPass):
        """Count nothing, declared."""

        name = "test-counting"
        statistics = declare_stats(looked_at="nodes looked at", changed="nodes changed")

        def call(self, model):
            return SurgeryResult(model, False)

    registry.register(Counting)
    try:
        assert main(["passes", "show", "test-counting"]) == 0
        out = capsys.readouterr().out
        assert "statistics (the report's stats keys):\n  looked_at  nodes looked at\n" in out
        assert "  changed    nodes changed\n" in out
    finally:
        registry.unregister("test-counting")
    assert main(["passes", "show", "test-perturb-weight"]) == 0  # declares nothing
    assert "statistics: not declared" in capsys.readouterr().out


def test_show_unknown_pass(capsys):
    assert main(["passes", "show", "cleanpu"]) == 2
    assert "did you mean 'cleanup'" in capsys.readouterr().err


def test_show_gives_every_pass_a_description_options_and_an_example(capsys):
    import surgery.passes  # noqa: F401  (the built-ins)

    for cls in registry.all_passes():
        if not cls.__module__.startswith("surgery.passes."):
            continue
        assert main(["passes", "show", cls.name]) == 0
        out = capsys.readouterr().out
        head, _, rest = out.partition("\n\n")
        assert head == f"{cls.name}: {cls.summary()}"
        description = rest.split("\noptions", 1)[0].split("\n\n", 1)[-1].strip()
        assert len(description) > 40, (cls.name, description)  # the why, not only the summary line
        assert "options: none" in out or "options:\n" in out
        example = out.split("example (passes.toml", 1)[1].split("\n", 1)[1]
        assert example.splitlines()[:2] == ["  [[pass]]", f'  name = "{cls.name}"'], cls.name
        # the example is a pipeline that parses: required options are given, every key is an option
        from pathlib import Path

        from surgery.pipeline import parse_pipeline

        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib

        doc = tomllib.loads("\n".join(line[2:] for line in example.splitlines()))
        pipeline = parse_pipeline({"schema_version": 1, **doc}, base_dir=Path.cwd())
        assert [s.name for s in pipeline.steps] == [cls.name]


def test_show_rewrite_documents_the_rules_format(capsys):
    assert main(["passes", "show", "rewrite"]) == 0
    out = capsys.readouterr().out
    for needle in (
        "RULES module format",
        "Rule` subclass",
        "pattern",
        "build(self, b, m)",
        "RewriteRule",
        "RewriteRuleSet",
        "--allow-code",
        'rules = "my_rules:RULES"',
    ):
        assert needle in out, needle


def test_list_finds_an_entry_point_package_without_importlib_metadata(
    tmp_path, monkeypatch, capsys
):
    import sys
    import textwrap

    (tmp_path / "my_listed_plugin.py").write_text(
        textwrap.dedent('''
        """A third-party pass package."""
        from surgery.pass_base import SurgeryPass, SurgeryResult

        class Listed(SurgeryPass):
            """Do nothing, listed from an entry point."""
            name = "test-listed-plugin"

            def call(self, model):
                return SurgeryResult(model, False)
    ''')
    )
    dist = tmp_path / "my_listed_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-listed-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[surgery.passes]\nlisted = my_listed_plugin:Listed\n")
    from surgery.cli import passes as passes_cmd

    assert passes_cmd._third_party() is False
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    try:
        assert passes_cmd._third_party() is True
        assert main(["passes", "list"]) == 0
        assert "test-listed-plugin" in capsys.readouterr().out
    finally:
        registry.unregister("test-listed-plugin")
        sys.modules.pop("my_listed_plugin", None)
