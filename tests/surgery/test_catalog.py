"""The pass catalogue: ``passes list/show`` answer without importing onnx; the index and docs stay current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from surgery import catalog
from surgery.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _build_script():
    spec = importlib.util.spec_from_file_location(
        "build_pass_index", ROOT / "scripts" / "build_pass_index.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_index_and_reference_page_are_up_to_date():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in _build_script().texts().items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"run `python scripts/build_pass_index.py`: out of date: {stale}"


def test_shipped_index_matches_the_registry(capsys):
    from surgery.cli.passes import _from_registry

    assert catalog.load_index() is not None, (
        "the shipped index does not match the installed pass modules"
    )
    assert main(["passes", "list"]) == 0
    fast = capsys.readouterr().out
    assert fast.strip() == catalog.render_list(_from_registry())
    names = [line.split()[0] for line in fast.splitlines()]
    assert "fix-shapes" in names and "cleanup" in names and names == sorted(names)


def test_a_stale_index_is_not_used(monkeypatch, capsys):
    monkeypatch.setattr(catalog, "fingerprint", lambda: [["new_pass.py", 1]])
    assert catalog.load_index() is None
    assert main(["passes", "show", "cleanup"]) == 0
    assert capsys.readouterr().out.startswith("cleanup: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["passes", "list"],
        ["passes", "show", "fix-shapes"],
        ["apply", "--help"],
        ["prepare", "--help"],
    ],
)
def test_fast_commands_import_no_heavy_module(argv, tmp_path):
    code = (
        "import sys\n"
        "from surgery.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('onnx', 'onnx_ir', 'onnxruntime', 'numpy', 'networkx', 'torch') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout


def test_show_prints_options_with_types_and_defaults(capsys):
    assert main(["passes", "show", "make-static"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("make-static: ") and "numerics: exact" in out and "options:" in out
    assert "(bool; default" in out or "(int; default" in out


def test_show_unknown_pass_is_exit_2_with_did_you_mean(capsys):
    assert main(["passes", "show", "make-statc"]) == 2
    assert "did you mean 'make-static'" in capsys.readouterr().err
