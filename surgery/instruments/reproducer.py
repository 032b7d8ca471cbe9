"""The reproducer: what a user needs to replay a failing pass on its own.

A folder with the model as it was just before the failing pass (``model.onnx``), the inputs the
gates fed (``inputs.npz``), a one-pass ``passes.toml`` and a ``README.txt`` with the command.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from surgery.model_io import LightProto, save

__all__ = ["write_reproducer", "toml_dumps"]

logger = logging.getLogger(__name__)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, np.ndarray):
        return _toml_value(value.tolist())
    if isinstance(value, Path):
        return _toml_value(str(value))
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(key: Any) -> str:
    key = str(key)
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return _toml_value(key)


def toml_dumps(pipeline_doc: Mapping[str, Any]) -> str:
    """Write a passes.toml document (top-level scalars, tables, and the [[pass]] array)."""
    lines: list[str] = []
    for key, value in pipeline_doc.items():
        if not isinstance(value, (Mapping, list)):
            lines.append(f"{_key(key)} = {_toml_value(value)}")
    for key, value in pipeline_doc.items():
        if isinstance(value, Mapping):
            lines.append("")
            lines.append(f"[{_key(key)}]")
            for k, v in value.items():
                lines.append(f"{_key(k)} = {_toml_value(v)}")
    for key, value in pipeline_doc.items():
        if isinstance(value, list):
            for table in value:
                lines.append("")
                lines.append(f"[[{_key(key)}]]")
                nested = {k: v for k, v in table.items() if isinstance(v, Mapping) and k == "verify"}
                for k, v in table.items():
                    if k not in nested:
                        lines.append(f"{_key(k)} = {_toml_value(v)}")
                for k, v in nested.items():
                    lines.append(f"[{_key(key)}.{_key(k)}]")
                    for kk, vv in v.items():
                        lines.append(f"{_key(kk)} = {_toml_value(vv)}")
    return "\n".join(lines) + "\n"


def write_reproducer(
    folder: Path,
    snapshot: LightProto,
    feeds: Mapping[str, np.ndarray],
    passes: list[dict[str, Any]],
    verify: Mapping[str, Any],
    message: str,
) -> Path:
    """Write the reproducer folder and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    save(snapshot.full_model(), folder / "model.onnx")
    np.savez(folder / "inputs.npz", **{k: np.asarray(v) for k, v in feeds.items()})
    doc: dict[str, Any] = {"schema_version": 1, "inputs": {"data": "inputs.npz"}, "verify": dict(verify), "pass": passes}
    (folder / "passes.toml").write_text(toml_dumps(doc), encoding="utf-8")
    (folder / "README.txt").write_text(
        f"{message}\n\nReplay:\n  surgery apply {folder}/passes.toml {folder}/model.onnx -o /tmp/replayed.onnx\n",
        encoding="utf-8",
    )
    logger.info("reproducer written to %s", folder)
    return folder
