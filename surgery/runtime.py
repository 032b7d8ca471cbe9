"""Run a split model in deployment code: the head, then the tail, as one callable.

::

    from surgery.runtime import SplitRunner

    runner = SplitRunner.from_manifest("model.split.json")        # or SplitRunner(["head.onnx", "tail.onnx"])
    outputs = runner.run({"images": batch})                      # {original output name: array}

Each part is fed the caller's inputs and every output of the parts before it, by name (the split
contract keeps boundary tensors' names on both sides). A part may be a model file path, an
``onnx_ir.Model``, an ``onnxruntime.InferenceSession``, or any object with
``run(feeds) -> {name: array}`` (e.g. a wrapper around an NPU runtime for the head).
This module needs only numpy and onnxruntime at run time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["Part", "SplitRunner"]


class Part(Protocol):
    """Anything that maps named input arrays to named output arrays."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]: ...


class _OrtPart:
    """An onnxruntime session wrapped as a :class:`Part`."""

    def __init__(self, session: Any, label: str) -> None:
        self.session = session
        self.label = label
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise KeyError(
                f"{self.label} needs inputs that are not available: {', '.join(missing)}"
            )
        results = self.session.run(self.output_names, {n: feeds[n] for n in self.input_names})
        return dict(zip(self.output_names, results, strict=True))


class _IrPart:
    """An ``onnx_ir.Model`` run through :class:`surgery.verify.ort.OrtSession` (weights not copied)."""

    def __init__(self, model: Any, label: str) -> None:
        from surgery.verify.ort import OrtSession

        self.session = OrtSession(model, prepack=True)  # a deployed runtime: ORT defaults
        self.label = label
        self.input_names = list(self.session.input_names)
        self.output_names = list(self.session.output_names)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise KeyError(
                f"{self.label} needs inputs that are not available: {', '.join(missing)}"
            )
        return self.session.run(feeds)


def _wrap(part: Any, label: str, providers: Sequence[Any] | None, session_options: Any) -> Any:
    if isinstance(part, (str, os.PathLike)):
        import onnxruntime as ort

        path = Path(part)
        if not path.is_file():
            raise FileNotFoundError(f"{label}: no such model file {path}")
        session = ort.InferenceSession(
            str(path),
            sess_options=session_options,
            providers=list(providers or ["CPUExecutionProvider"]),
        )
        return _OrtPart(session, f"{label} ({path.name})")
    if hasattr(part, "get_inputs") and hasattr(part, "get_outputs") and hasattr(part, "run"):
        return _OrtPart(part, label)
    try:
        import onnx_ir as ir

        if isinstance(part, ir.Model):
            return _IrPart(part, label)
    except ImportError:  # pragma: no cover - onnx_ir is optional at deployment
        pass
    if hasattr(part, "run"):
        return part
    raise TypeError(
        f"{label}: expected a model path, an onnx_ir.Model, an InferenceSession or an object with run(), got {type(part).__name__}"
    )


class SplitRunner:
    """Chain the parts of a split model (head first) and return the original model's outputs."""

    def __init__(
        self,
        parts: Sequence[Any],
        *,
        outputs: Sequence[str] | None = None,
        providers: Sequence[Any] | Mapping[int, Sequence[Any]] | None = None,
        session_options: Any = None,
        names: Sequence[str] | None = None,
    ) -> None:
        """
        Args:
            parts: the parts in run order (paths, ``onnx_ir.Model``, sessions, or objects with ``run``).
            outputs: names to return, in order (default: every output of every part not read by a
                later part, i.e. the original model's outputs).
            providers: ORT execution providers for parts given as paths; a sequence for all, or
                ``{part index: providers}``.
            names: labels for error messages (default ``head``, ``tail``, ``part2`` …).
        """
        if not parts:
            raise ValueError("SplitRunner needs at least one part")
        labels = (
            list(names)
            if names
            else ["head", "tail"][: len(parts)] + [f"part{i}" for i in range(2, len(parts))]
        )
        self.parts = []
        for i, part in enumerate(parts):
            prov = providers.get(i) if isinstance(providers, Mapping) else providers
            self.parts.append(_wrap(part, labels[i], prov, session_options))
        self._outputs = list(outputs) if outputs is not None else None

    @classmethod
    def from_manifest(cls, path: str | os.PathLike, **kwargs: Any) -> SplitRunner:
        """Build a runner from a split manifest (files are resolved next to the manifest)."""
        path = Path(path)
        data = json.loads(path.read_text())
        parts = data.get("parts") or []
        files = []
        for entry in parts:
            if not entry.get("file"):
                raise ValueError(f"{path}: part '{entry.get('name')}' has no file")
            files.append(path.parent / entry["file"])
        return cls(
            files,
            outputs=data.get("outputs"),
            names=[p.get("name", f"part{i}") for i, p in enumerate(parts)],
            **kwargs,
        )

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every part in order; return the outputs (the original model's, by default)."""
        env: dict[str, np.ndarray] = dict(feeds)
        produced: list[str] = []
        consumed: set[str] = set()
        for part in self.parts:
            names = getattr(part, "input_names", None)
            if names is not None:
                consumed.update(names)
            result = part.run(env)
            for key, value in result.items():
                env[key] = value
                if key not in produced:
                    produced.append(key)
        wanted = (
            self._outputs
            if self._outputs is not None
            else [n for n in produced if n not in consumed]
        )
        missing = [n for n in wanted if n not in env]
        if missing:
            raise KeyError(f"the parts did not produce: {', '.join(missing)}")
        return {n: env[n] for n in wanted}

    __call__ = run
