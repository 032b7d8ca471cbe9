"""The pass registry: built-in passes, third-party entry points, lookup by name.

Built-in passes register themselves with :func:`register` when ``surgery.passes`` is imported.
Third-party packages expose passes through the ``surgery.passes`` entry-point group; each entry
point names a :class:`~surgery.pass_base.SurgeryPass` subclass (or a module that registers some).

A plug-in file (``surgery apply --plugin FILE.py``, or ``plugins = [...]`` in a passes.toml with
``--allow-code``) is loaded by :func:`load_plugin`. :func:`import_file` is the one place where
onnx-surgery executes a user's Python file (plug-ins and ``rewrite`` rule modules): callers decide
whether the user asked for it; this module makes an import that raises or exits a clean error.

A plug-in file may also bring gates (:mod:`surgery.gates`): it lists them in ``SURGERY_GATES``
(gate objects or classes) or calls :func:`register_gate` while it is imported; :func:`plugin_gates`
returns them for ``surgery.apply(..., gates=...)``, which the CLI passes on.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import sys
import types
from pathlib import Path
from typing import TypeVar

from surgery.errors import PipelineError
from surgery.options import did_you_mean
from surgery.pass_base import SurgeryPass

__all__ = [
    "all_passes",
    "clear_plugin_gates",
    "get",
    "import_file",
    "load_plugin",
    "names",
    "plugin_gates",
    "register",
    "register_gate",
    "unregister",
]

logger = logging.getLogger(__name__)

_PASSES: dict[str, type[SurgeryPass]] = {}
_loaded = False
_GATES: dict[str, list[object]] = {}
"""Gates of plug-in files, by the module that registered them (in load order)."""
_IMPORTING: list[str] = []

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


def _module_name(path: Path) -> str:
    """The ``sys.modules`` name a user file is imported under (one per file, never a real package)."""
    return f"_surgery_user_{hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:16]}"


def import_file(path: str | Path, *, what: str) -> types.ModuleType:
    """Execute the Python file ``path`` as a fresh module and return it.

    Only this file is imported: no folder is put on ``sys.path``, so a module of the same name in the
    working directory or on the path is never picked up instead. An import that raises, or that
    calls ``sys.exit`` (which would otherwise end the run with exit 0 and no output), becomes a
    :class:`PipelineError` naming the file. ``what`` says who asked (``"rewrite"``, ``"--plugin"``).
    """
    path = Path(path)
    if path.suffix != ".py" or not path.is_file():
        raise PipelineError(f"{what}: {path}: no such Python file")
    name = _module_name(path)
    path = path.absolute()
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise PipelineError(f"{what}: {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        sys.modules.pop(name, None)
        raise
    except SystemExit as exc:
        sys.modules.pop(name, None)
        raise PipelineError(
            f"{what}: importing {path} called sys.exit({exc.code!r}); a module must not exit"
        ) from None
    except BaseException as exc:  # noqa: BLE001 - whatever user code raises is the user's error
        sys.modules.pop(name, None)
        raise PipelineError(
            f"{what}: importing {path} failed: {type(exc).__name__}: {exc}"
        ) from None
    logger.info("%s: imported %s", what, path)
    return module


def register_gate(gate: object) -> object:
    """Add a gate (an object, or a class instantiated without arguments) for the runs that follow.

    Called by a plug-in file while it is imported (or listed in its ``SURGERY_GATES``); usable as a
    class decorator. A gate needs ``name``, ``schedule``, ``when()``, ``start()`` and ``check()``
    and a name no built-in gate has.
    """
    from surgery.gates import BUILTIN_GATES, Gate

    obj = gate() if isinstance(gate, type) else gate
    if not isinstance(obj, Gate):
        raise PipelineError(
            f"{gate!r} is not a gate: it needs name, schedule, when(), start() and check()"
        )
    taken = {cls.name for cls in BUILTIN_GATES} | {g.name for gs in _GATES.values() for g in gs}  # type: ignore[attr-defined]
    if not obj.name or obj.name in taken:
        raise PipelineError(f"gate name {obj.name!r} is {'empty' if not obj.name else 'taken'}")
    _GATES.setdefault(_IMPORTING[-1] if _IMPORTING else "", []).append(obj)
    return gate


def plugin_gates() -> list[object]:
    """The gates plug-in files registered, in load order."""
    return [g for gates in _GATES.values() for g in gates]


def clear_plugin_gates() -> None:
    """Forget every plug-in gate (tests; a long-lived process between runs)."""
    _GATES.clear()


def load_plugin(path: str | Path, *, what: str = "--plugin") -> list[str]:
    """Import a plug-in file and register the passes and gates it defines; return the pass names.

    A plug-in registers its passes with :func:`register` or simply defines named
    :class:`SurgeryPass` subclasses (registered here); its gates with :func:`register_gate` or a
    ``SURGERY_GATES`` list. Naming the file is the caller's opt-in.

    Raises:
        PipelineError: the file is missing, its import fails or exits, a pass or gate name is
            taken, an entry of ``SURGERY_GATES`` is not a gate, or it defines neither pass nor gate.
    """
    _load()
    name = _module_name(Path(path))
    # loading the same file again replaces the passes and gates it registered the first time
    for key in [k for k, cls in _PASSES.items() if cls.__module__ == name]:
        del _PASSES[key]
    _GATES.pop(name, None)
    before = set(_PASSES)
    _IMPORTING.append(name)
    try:
        module = import_file(path, what=what)
        for gate in getattr(module, "SURGERY_GATES", ()) or ():
            if not any(g is gate or type(g) is gate for g in _GATES.get(name, [])):
                register_gate(gate)
    except PipelineError as exc:
        _GATES.pop(name, None)
        raise PipelineError(
            str(exc) if str(exc).startswith(what) else f"{what}: {path}: {exc}"
        ) from None
    finally:
        _IMPORTING.pop()
    for obj in list(vars(module).values()):
        if (
            isinstance(obj, type)
            and issubclass(obj, SurgeryPass)
            and obj.__module__ == module.__name__
            and obj.name
            and _PASSES.get(obj.name) is not obj
        ):
            try:
                register(obj)
            except ValueError as exc:
                raise PipelineError(f"{what}: {path}: {exc}") from None
    added = sorted(set(_PASSES) - before)
    if not added and not _GATES.get(name):
        raise PipelineError(
            f"{what}: {path} defines no pass (a named SurgeryPass subclass) and no gate (SURGERY_GATES)"
        )
    return added
