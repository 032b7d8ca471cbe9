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


def test_show_unknown_pass(capsys):
    assert main(["passes", "show", "cleanpu"]) == 2
    assert "did you mean 'cleanup'" in capsys.readouterr().err
