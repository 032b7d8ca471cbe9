"""The reproducer: what a user needs to replay a failing pass on its own.

A folder with the model as it was just before the failing pass (``model.onnx``), the inputs the
gates fed (``inputs.npz``), a one-pass ``passes.toml`` and a ``README.txt`` with the command.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from surgery import tomlwrite
from surgery.model_io import LightProto, save

__all__ = ["write_reproducer"]

logger = logging.getLogger(__name__)


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
    arrays: dict[str, Any] = {k: np.asarray(v) for k, v in feeds.items()}
    np.savez(folder / "inputs.npz", **arrays)
    doc: dict[str, Any] = {
        "schema_version": 1,
        "inputs": {"data": "inputs.npz"},
        "verify": dict(verify),
        "pass": passes,
    }
    (folder / "passes.toml").write_text(
        tomlwrite.dumps(doc, allow_nonfinite=True), encoding="utf-8"
    )
    (folder / "README.txt").write_text(
        f"{message}\n\nReplay:\n  surgery apply {folder}/passes.toml {folder}/model.onnx -o /tmp/replayed.onnx\n",
        encoding="utf-8",
    )
    logger.info("reproducer written to %s", folder)
    return folder
