"""The project's own checks at zero findings: ruff, the formatter and mypy (``scripts/lint.py``).

Each test runs one of ``scripts/lint.py``'s commands (absolute paths, a working folder outside the
checkout) and fails with the tool's findings: ``ruff check``, ``ruff format --check`` (the tree
was formatted in one pass) and ``mypy``.

The README's Python section is type-checked too: ``surgery.apply`` returns the kind of model it
was given (``onnx.ModelProto`` in, ``onnx.ModelProto`` out), which type checkers must see.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("ruff", reason="ruff is in the test extra (pip install '.[test]')")
pytest.importorskip("mypy", reason="mypy is in the test extra (pip install '.[test]')")

LINT = runpy.run_path(str(ROOT / "scripts" / "lint.py"))
COMMANDS: dict[str, list[str]] = LINT["COMMANDS"]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)


def test_ruff_check_has_no_findings(tmp_path: Path) -> None:
    done = _run(COMMANDS["ruff check"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_has_nothing_to_change(tmp_path: Path) -> None:
    done = _run(COMMANDS["ruff format"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_mypy_has_no_findings(tmp_path: Path) -> None:
    done = _run(COMMANDS["mypy"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


def _readme_python_section() -> str:
    """The first ```python block of the README's "Use" section (the public API in a few lines)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    use = text[text.index("\n## Use") :]
    match = re.search(r"```python\n(.*?)```", use, re.S)
    assert match, "the README's Use section has no python block"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_section_type_checks(tmp_path: Path) -> None:
    """mypy sees real signatures through ``surgery.apply`` (lazy at run time) and its TypeVar result."""
    snippet = _readme_python_section()
    assert "surgery.apply(" in snippet
    # A copy of the package as it is installed (passes/ inside surgery/), so that `surgery.passes.X`
    # resolves for mypy in an editable install too.
    site = tmp_path / "site"
    shutil.copytree(
        ROOT / "surgery", site / "surgery", ignore=shutil.ignore_patterns("__pycache__", "*.toml")
    )
    shutil.copytree(
        ROOT / "passes",
        site / "surgery" / "passes",
        ignore=shutil.ignore_patterns("__pycache__", "*.toml"),
    )
    program = tmp_path / "readme_snippet.py"
    program.write_text(
        "import onnx\nimport onnx_ir as ir\nfrom typing_extensions import assert_type\n"
        "from surgery.report import Report\n"
        "onnx_proto = onnx.ModelProto()\n" + snippet + "assert_type(proto, onnx.ModelProto)\n"
        "assert_type(model, ir.Model)\n"
        "assert_type(report, Report)\n"
        "assert_type(surgery.apply(ir.Model(ir.Graph([], [], nodes=[]), ir_version=10), [])[0], ir.Model)\n",
        encoding="utf-8",
    )
    argv = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--python-executable",
        sys.executable,
        "--no-incremental",
        str(program),
    ]
    done = subprocess.run(
        argv,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MYPYPATH": str(site)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
