"""The pass registry: built-in passes, third-party entry points, lookup by name.

Built-in passes register themselves with :func:`register` when ``surgery.passes`` is imported.
Third-party packages expose passes through the ``surgery.passes`` entry-point group; each entry
point names a :class:`~surgery.pass_base.SurgeryPass` subclass (or a module that registers some).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from typing import TypeVar

from surgery.errors import PipelineError
from surgery.options import did_you_mean
from surgery.pass_base import SurgeryPass

__all__ = ["register", "get", "names", "all_passes", "unregister"]

logger = logging.getLogger(__name__)

_PASSES: dict[str, type[SurgeryPass]] = {}
_loaded = False

P = TypeVar("P", bound=type[SurgeryPass])


def register(cls: P) -> P:
    """Class decorator: add a pass to the registry under its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, SurgeryPass)) or not cls.name:
        raise TypeError(f"{cls!r} is not a named SurgeryPass subclass")
    existing = _PASSES.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"pass name '{cls.name}' is taken by {existing.__module__}.{existing.__qualname__}"
        )
    _PASSES[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a pass (used by tests that register temporary passes)."""
    _PASSES.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module("surgery.passes")
    for ep in importlib.metadata.entry_points(group="surgery.passes"):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not break the tool
            logger.warning("could not load pass entry point %s: %s", ep.name, exc)
            continue
        if isinstance(obj, type) and issubclass(obj, SurgeryPass) and obj.name not in _PASSES:
            register(obj)


def get(name: str) -> type[SurgeryPass]:
    """The pass class registered under ``name``.

    Raises:
        PipelineError: for an unknown name, with a did-you-mean.
    """
    _load()
    try:
        return _PASSES[name]
    except KeyError:
        raise PipelineError(
            f"unknown pass '{name}'{did_you_mean(name, _PASSES)}; "
            f"'surgery passes list' shows the {len(_PASSES)} known passes"
        ) from None


def names() -> list[str]:
    _load()
    return sorted(_PASSES)


def all_passes() -> list[type[SurgeryPass]]:
    _load()
    return [_PASSES[n] for n in sorted(_PASSES)]
