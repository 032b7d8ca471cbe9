"""The distribution ships every package of the source tree (a missing one only shows in a fresh install)."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_source_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "surgery").rglob("__init__.py")
    }
    assert on_disk - listed == set(), (
        f"add to [tool.setuptools] packages in pyproject.toml: {sorted(on_disk - listed)}"
    )
    assert config["package-dir"]["surgery.passes"] == "passes" and "surgery.passes" in listed
