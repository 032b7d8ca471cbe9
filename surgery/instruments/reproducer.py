"""The reproducer: what a user needs to replay a failing pass on its own.

A folder with the model as it was just before the failing pass (``model.onnx``), the inputs the
gates fed (``inputs.npz``), a ``passes.toml`` with the pass (or passes) to replay and every
``[verify]`` setting in force, and a ``README.txt`` with the command.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from surgery.model_io import LightProto, save
from surgery.verify.inputs import InputsConfig

if TYPE_CHECKING:
    from surgery.pipeline import Pipeline

__all__ = ["write_reproducer"]

logger = logging.getLogger(__name__)


def write_reproducer(
    folder: Path,
    snapshot: LightProto,
    feeds: Mapping[str, np.ndarray],
    pipeline: Pipeline,
    message: str,
) -> Path:
    """Write the reproducer folder and return its path.

    ``pipeline`` holds the steps to replay, their ``[pass.verify]`` overrides and the ``[verify]``
    settings in force; its ``passes.toml`` (:meth:`Pipeline.to_toml` with ``complete``: every
    setting and option, defaults included) reads its inputs from ``inputs.npz``, the ``feeds``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    save(snapshot.full_model(), folder / "model.onnx")
    arrays: dict[str, Any] = {k: np.asarray(v) for k, v in feeds.items()}
    np.savez(folder / "inputs.npz", **arrays)
    replay = dataclasses.replace(
        pipeline, inputs=InputsConfig(data=Path("inputs.npz")), buckets={}, source=None
    )
    (folder / "passes.toml").write_text(
        replay.to_toml(complete=True, allow_nonfinite=True), encoding="utf-8"
    )
    code = bool(replay.plugins) or any(step.pass_.user_code() for step in replay.steps)
    flag = " --allow-code" if code else ""
    (folder / "README.txt").write_text(
        f"{message}\n\nReplay:\n  surgery apply {folder}/passes.toml {folder}/model.onnx -o /tmp/replayed.onnx{flag}\n",
        encoding="utf-8",
    )
    logger.info("reproducer written to %s", folder)
    return folder
