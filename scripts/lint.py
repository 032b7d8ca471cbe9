"""The project's checks, exactly as CI runs them: ``python scripts/lint.py`` (exit 0 = clean).

1. ``ruff check`` on every Python folder, with the rules in ``pyproject.toml`` (``[tool.ruff]``)
   and the import layering of ``surgery/cli/ruff.toml`` and ``passes/ruff.toml``;
2. ``ruff format --check`` (the formatter owns layout and line length);
3. ``mypy`` (standard mode) on ``surgery/`` and ``passes/`` (``[tool.mypy]``).

``tests/test_lint.py`` runs the same commands (``COMMANDS`` below) and asserts zero findings; the
``.pre-commit-config.yaml`` hooks run them on the files a commit touches. ``--fix`` lets ruff
apply its safe fixes and the formatter rewrite files instead of only checking.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: every folder ruff checks and formats (mypy checks the library: ``[tool.mypy] files``)
PYTHON_FOLDERS = ("surgery", "passes", "tests", "bench", "examples", "scripts")
_FOLDERS = [str(ROOT / f) for f in PYTHON_FOLDERS]
_MYPY_FILES = [str(ROOT / "surgery"), str(ROOT / "passes")]

#: name → argv. Absolute paths, so the commands give the same answer from any folder; the tools
#: run as ``python -m`` so the active environment's pinned versions apply.
COMMANDS: dict[str, list[str]] = {
    "ruff check": [sys.executable, "-m", "ruff", "check", "--no-cache", *_FOLDERS],
    "ruff format": [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", *_FOLDERS],
    "mypy": [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(ROOT / ".mypy_cache"),
        "--python-executable",
        sys.executable,
        *_MYPY_FILES,
    ],
}


def main(argv: list[str]) -> int:
    fix = "--fix" in argv
    failed = []
    for name, cmd in COMMANDS.items():
        if fix and name == "ruff check":
            cmd = [*cmd, "--fix"]
        elif fix and name == "ruff format":
            cmd = [c for c in cmd if c != "--check"]
        print(f"$ {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
    if failed:
        print(f"lint: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
