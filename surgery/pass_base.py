"""The pass contract: what every onnx-surgery pass declares and returns.

A pass is a subclass of :class:`SurgeryPass`, itself an ``onnx_ir`` in-place pass. It declares:

- ``name``: the kebab-case name used in ``passes.toml`` and on the command line;
- ``Options``: a frozen dataclass whose fields are its TOML keys (see :mod:`surgery.options`),
  declared once, as a class nested in the pass (``class Options:`` under
  ``@dataclasses.dataclass(frozen=True)``); a pass without options leaves the empty default;
- ``statistics``: the keys of :attr:`SurgeryResult.stats` it reports, each with a one-line meaning
  (like MLIR pass statistics); ``surgery passes show`` lists them;
- ``numerics``: :attr:`Numerics.EXACT` (outputs unchanged up to float rounding of reordered math),
  :attr:`Numerics.APPROX` (close within ``default_tolerance``) or :attr:`Numerics.CHANGES`
  (semantics change by design; the runner reports the deviation instead of failing);
- its docstring, whose first line is the summary ``surgery passes list`` shows.

``call(model)`` transforms the model in place and returns a :class:`SurgeryResult`. A pass knows
nothing of files, verification or the CLI: the runner checks and compares what it produced.

A pass that declares ``statistics`` and reports a key it did not declare has a bug: calling the pass
gets a note saying so from the runner, which the report shows (``tests/passes/test_contract.py``
fails on it for the built-in passes). A pass that declares nothing (``statistics = None``, the
default: third-party passes written before the declaration existed) may report any key.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import sys
import types
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import onnx_ir as ir

from surgery.errors import PipelineError
from surgery.options import NoOptions, parse_options
from surgery.tomlwrite import plain

__all__ = [
    "FeedHints",
    "Numerics",
    "SurgeryPass",
    "SurgeryResult",
    "Tolerance",
    "declare_stats",
]

_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_STAT_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class Numerics(str, enum.Enum):
    """How a pass may change a model's outputs; drives the parity gate's policy."""

    EXACT = "exact"
    """Outputs must match the original within the pipeline tolerance."""
    APPROX = "approx"
    """Outputs must match within the pass's own default tolerance (unless overridden)."""
    CHANGES = "changes"
    """Semantics change by design: the deviation is reported, and fails only against a user tolerance."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Relative and absolute tolerance: ``|a - b| <= atol + rtol * |b|`` elementwise."""

    rtol: float
    atol: float

    def loosest(self, other: Tolerance | None) -> Tolerance:
        if other is None:
            return self
        return Tolerance(max(self.rtol, other.rtol), max(self.atol, other.atol))


@dataclasses.dataclass
class FeedHints:
    """What a pass tells the runner, before anything runs, about the inputs parity runs must feed.

    ``shapes`` maps an input name to a concrete shape; ``dims`` binds symbolic dim names to sizes;
    ``values`` are exact values for inputs (e.g. inputs that the pass turns into constants: the
    original model must be fed the same values).
    """

    shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    dims: dict[str, int] = dataclasses.field(default_factory=dict)
    values: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def merge(self, other: FeedHints) -> None:
        self.shapes.update(other.shapes)
        self.dims.update(other.dims)
        self.values.update(other.values)


@dataclasses.dataclass
class SurgeryResult(ir.passes.PassResult):
    """What a pass returns: the model, whether it changed, and what it did.

    Attributes:
        stats: counters for the report (e.g. ``{"removed": 3}``).
        artifacts: extra products, e.g. a split-off model under a name; the runner saves
            ``ir.Model`` artifacts next to the output.
        changed_semantics: set by an ``exact`` pass that had to change semantics on this model
            (e.g. removing a training-mode Dropout): the runner treats the step like a
            ``changes`` pass, reporting the deviation instead of failing.
        notes: human-readable remarks for the report.
        renamed: a map from names of tensors the pass replaced to the names that now carry
            their values, for layerwise comparison.
        chained: models that run after this one (e.g. a post-processing tail split off the
            model): each is fed the original graph inputs and the outputs of the models before
            it. The runner verifies the chain against the original, keeps it through later
            passes and saves each as ``OUT.<key>.onnx``.
        signature_changes: the changes the pass made on purpose to the graph's inputs and outputs,
            as ``{key: description}``; keys ``"inputs"`` / ``"outputs"`` (the list: names, order,
            count) or ``"input:NAME"`` / ``"output:NAME"`` (one port's type or shape). The
            signature gate fails on any change not declared here; the report lists them.
    """

    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)
    changed_semantics: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)
    chained: dict[str, ir.Model] = dataclasses.field(default_factory=dict)
    signature_changes: dict[str, str] = dataclasses.field(default_factory=dict)

    def declare(self, key: str, description: str) -> SurgeryResult:
        """Declare a signature change (see ``signature_changes``); returns self for chaining."""
        if key not in ("inputs", "outputs") and not key.startswith(("input:", "output:")):
            raise ValueError(
                f"signature change key {key!r}: expected inputs, outputs, input:NAME or output:NAME"
            )
        self.signature_changes[key] = description
        return self


def declare_stats(**meanings: str) -> Mapping[str, str]:
    """A pass's ``statistics`` declaration: each stats key it reports, with a one-line meaning.

    ``statistics = declare_stats(removed="Dropout nodes removed", ...)`` keeps the declaration order
    (``passes show`` lists the keys in it) and returns a read-only mapping, so that the class
    attribute, shared by every instance, cannot be changed by accident.
    """
    return types.MappingProxyType(dict(meanings))


class SurgeryPass(ir.passes.InPlacePass):
    """Base class of onnx-surgery passes (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    numerics: ClassVar[Numerics] = Numerics.EXACT
    default_tolerance: ClassVar[Tolerance | None] = None
    is_gate: ClassVar[bool] = False
    """A gate pass only inspects the model and raises when a condition does not hold."""
    example: ClassVar[str] = ""
    """The keys of a typical ``[[pass]]`` table after ``name`` (TOML lines), shown by ``passes show``;
    empty: the catalogue builds one from the defaults (a pass with required options must set it)."""
    statistics: ClassVar[Mapping[str, str] | None] = None
    """The keys this pass reports in ``SurgeryResult.stats``, each with a one-line meaning:
    ``declare_stats(removed="Dropout nodes removed")`` (any mapping of str to str is accepted).
    ``passes show`` lists them; a reported key missing here is noted in the report. None:
    undeclared, any key is accepted; ``declare_stats()``: the pass reports none."""

    def __init__(self, options: Any = None, /, **kwargs: Any) -> None:
        super().__init__()
        if options is not None and kwargs:
            raise PipelineError(
                f"{self.name}: give either an Options instance or keywords, not both"
            )
        if options is None:
            options = parse_options(self.Options, kwargs, owner=self.name or type(self).__name__)
        elif not isinstance(options, self.Options):
            raise PipelineError(
                f"{self.name}: options must be {self.Options.__name__}, got {type(options).__name__}"
            )
        self.options = options
        self._given: frozenset[str] = frozenset(kwargs)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls) or not cls.__dict__.get("name"):
            return
        if not _NAME_RE.match(cls.name):
            raise TypeError(f"pass name {cls.name!r} must be kebab-case (e.g. 'remove-dropout')")
        if not dataclasses.is_dataclass(cls.Options):
            raise TypeError(f"{cls.__name__}.Options must be a dataclass")
        if cls.numerics is Numerics.APPROX and cls.default_tolerance is None:
            raise TypeError(f"{cls.__name__}: an approx pass must declare default_tolerance")
        _check_statistics(cls)

    @classmethod
    def undeclared_stats(cls, stats: Mapping[str, Any]) -> list[str]:
        """The keys of ``stats`` the pass does not declare in ``statistics`` (none when it declares nothing)."""
        if cls.statistics is None:
            return []
        return sorted(str(k) for k in stats if k not in cls.statistics)

    @classmethod
    def summary(cls) -> str:
        """The first line of the pass's docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @classmethod
    def description(cls) -> str:
        """The class docstring; when it is one line, its module's docstring body says the why."""
        doc = inspect.getdoc(cls) or ""
        if len(doc.strip().splitlines()) > 1:
            return doc
        module = sys.modules.get(cls.__module__)
        body = (inspect.getdoc(module) or "").strip().split("\n", 1) if module is not None else []
        if len(body) > 1 and body[1].strip():
            return f"{doc.strip()}\n\n{inspect.cleandoc(body[1])}"
        return doc

    def user_code(self) -> str | None:
        """The user's Python file (or module) this pass imports when it runs; None for none.

        A pipeline read from a file is data: :func:`surgery.apply` refuses a step read from one
        that names user code unless the caller opted in (``--allow-code``, ``allow_code=True``).
        """
        return None

    def feed_hints(self, model: ir.Model) -> FeedHints:
        """Shapes and values parity runs must use; read by the runner before any pass runs."""
        del model
        return FeedHints()

    def with_options(self, **changes: Any) -> SurgeryPass:
        """A copy of this pass with some options replaced."""
        copy = type(self)(dataclasses.replace(self.options, **changes))
        copy._given = getattr(self, "_given", frozenset()) | frozenset(changes)
        return copy

    def options_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self.options, f.name) for f in dataclasses.fields(self.options)}

    def given_options(self) -> dict[str, Any]:
        """The options a ``[[pass]]`` table must say: those given by keyword when the pass was built
        (or changed with :meth:`with_options`) and any other that differs from its default.

        ``fix-shapes`` built with ``shapes=...`` gives ``{"shapes": ...}``; one built from an
        ``Options`` instance gives what differs from the defaults.
        """
        given: frozenset[str] = getattr(self, "_given", frozenset())
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self.options):
            current = getattr(self.options, f.name)
            if f.name in given or _differs(current, _default_of(f)):
                out[f.name] = current
        return out

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options_dict().items())
        return f"{type(self).__name__}({opts})"


def _check_statistics(cls: type[SurgeryPass]) -> None:
    """Refuse a malformed ``statistics`` declaration when the pass class is defined."""
    declared = cls.statistics
    if declared is None:
        return
    if not isinstance(declared, Mapping):
        raise TypeError(
            f"{cls.__name__}.statistics must map each stats key to its meaning, got {type(declared).__name__}"
        )
    for key, meaning in declared.items():
        if not isinstance(key, str) or not _STAT_RE.match(key):
            raise TypeError(f"{cls.__name__}.statistics: key {key!r} must be snake_case")
        if not isinstance(meaning, str) or not meaning.strip() or "\n" in meaning.strip():
            raise TypeError(
                f"{cls.__name__}.statistics[{key!r}] must be a one-line meaning, got {meaning!r}"
            )


_NO_DEFAULT = object()


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NO_DEFAULT


def _differs(value: Any, default: Any) -> bool:
    if default is _NO_DEFAULT:
        return True
    try:
        return bool(plain(value) != plain(default))  # () and [] are the same TOML list
    except (TypeError, ValueError):  # undecodable bytes, arrays inside lists: count them as given
        return True


def interface(model: ir.Model) -> Any:
    """The model's graph inputs/outputs as the signature gate sees them (take it before editing)."""
    from surgery.gates.signature import signature

    return signature(model)


def declare_interface(
    result: SurgeryResult, before: Any, model: ir.Model, reason: str
) -> SurgeryResult:
    """Declare, on ``result``, every change of the graph inputs/outputs since ``before``, with ``reason``.

    For passes whose purpose is to change the interface (fix shapes, pin inputs, retype, cut):
    take ``before = interface(model)`` first, then ``return declare_interface(result, before, model, why)``.
    """
    from surgery.gates.signature import signature, signature_diff

    for key, text in signature_diff(before, signature(model)):
        previous = result.signature_changes.get(key)
        result.declare(key, f"{previous}; {text}" if previous else f"{text} ({reason})")
    return result


def result(model: ir.Model, modified: bool, **kwargs: Any) -> SurgeryResult:
    """Shorthand for ``SurgeryResult(model, modified, ...)``."""
    return SurgeryResult(model, modified, **kwargs)


def as_mapping(obj: Any) -> Mapping[str, Any]:
    return (
        dataclasses.asdict(obj)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type)
        else dict(obj)
    )
