"""rewrite: apply rewrite rules from a user's Python module.

In ``passes.toml``::

    [[pass]]
    name = "rewrite"
    rules = "my_rules:RULES"      # module:attribute
    path = "."                    # the folder holding my_rules.py (relative to the TOML file's
                                  # folder; default: that folder)

``RULES`` may be a list (or a single one) of:

- :class:`surgery.rules.Rule` subclasses or instances (our pattern language and builder);
- onnxscript ``RewriteRule`` / ``RewriteRuleSet`` objects (``onnxscript.rewriter.pattern``),
  run by our engine so they too reach subgraphs and functions, name their nodes after the
  replaced ones and report near misses.

A rules module is user code, so it is imported only when the pass runs (not when the pipeline is
parsed, nor when the step is ``--disable``d), only from the file ``PATH/my/rules.py`` for
``rules = "my.rules:RULES"`` (never from ``sys.path`` or the working directory), and, for a
pipeline read from a file, only when the caller opted in (``surgery apply --allow-code``,
``surgery.apply(..., allow_code=True)``). Modules shipped with onnx-surgery (``surgery.*``, e.g.
``surgery.rules.library:EXACT``) are imported by name. Built in Python with no ``path``, the
module is imported by name, as Python would.

The rules run once over every graph. The pass is ``exact``: the parity gate checks the result.
For rules that change results on purpose set ``changes_semantics = true``; the report then
shows the deviation instead of failing.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path
from typing import Any

import onnx_ir as ir

from surgery import registry
from surgery.errors import PipelineError
from surgery.options import option
from surgery.pass_base import Numerics, SurgeryResult
from surgery.registry import register
from surgery.rules import Rule, RulePass, apply_rules
from surgery.rules.onnxscript_rules import adapt, is_onnxscript_rule

__all__ = ["Rewrite", "load_rules"]


_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ATTR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _shipped(module: str) -> bool:
    """Modules of onnx-surgery itself (``surgery.rules.library``): code the user installed, not data."""
    return module == "surgery" or module.startswith("surgery.")


def split_spec(spec: str) -> tuple[str, str]:
    """``"my.rules:RULES"`` → ``("my.rules", "RULES")``, refusing anything that is not two Python names."""
    module, sep, attr = spec.partition(":")
    if not sep or not _MODULE_RE.match(module) or not _ATTR_RE.match(attr):
        raise PipelineError(
            f"rewrite: rules must look like 'module:ATTRIBUTE' (Python names), got {spec!r}"
        )
    return module, attr


def module_file(module: str, path: str | None) -> Path | None:
    """The file ``module`` is imported from: ``PATH/a/b.py`` for ``a.b``; None when imported by name."""
    if _shipped(module) or not path:
        return None
    return Path(path).absolute() / (module.replace(".", "/") + ".py")


def _import(module: str, path: str | None) -> Any:
    file = module_file(module, path)
    if file is None:
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise PipelineError(f"rewrite: cannot import module '{module}': {exc}") from None
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise PipelineError(
                f"rewrite: importing '{module}' failed: {type(exc).__name__}: {exc}"
            ) from None
    folder = file.parents[module.count(".")]
    if not folder.is_dir():
        raise PipelineError(f"rewrite: path '{path}' is not a folder")
    if not file.is_file():
        raise PipelineError(f"rewrite: cannot import module '{module}': no file {file}")
    return registry.import_file(file, what="rewrite")


def load_rules(spec: str, path: str | None = None) -> list[Any]:
    """Load ``module:attribute`` and return engine rules (ours and adapted onnxscript ones)."""
    module_name, attr = split_spec(spec)
    module = _import(module_name, path)
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise PipelineError(f"rewrite: module '{module_name}' has no attribute '{attr}'") from None
    items = list(found) if isinstance(found, (list, tuple)) else [found]
    rules: list[Any] = []
    for item in items:
        if isinstance(item, type) and issubclass(item, Rule):
            item = item()
        if isinstance(item, Rule):
            if not getattr(item, "pattern", None) and type(item).rewrite is Rule.rewrite:
                raise PipelineError(f"rewrite: rule {item!r} in {spec} has no pattern")
            rules.append(item)
        elif is_onnxscript_rule(item):
            rules.extend(adapt(item))
        else:
            raise PipelineError(
                f"rewrite: {spec} holds a {type(item).__name__}; expected surgery.rules.Rule subclasses/instances "
                "or onnxscript RewriteRule/RewriteRuleSet objects"
            )
    if not rules:
        raise PipelineError(f"rewrite: {spec} holds no rules")
    return rules


@register
class Rewrite(RulePass):
    """Apply rewrite rules from a user module (rules = "my_rules:RULES"), ours or onnxscript's.

    The RULES module format. ``rules = "my_rules:RULES"`` names a module (``my_rules.py`` in
    ``path``, by default the passes.toml's folder; dots are sub-folders) and an attribute of it.
    The attribute is one rule or a list/tuple of rules, each of them one of:

    - a :class:`surgery.rules.Rule` subclass (instantiated with no arguments) or instance: set
      ``name``, ``pattern`` (a tree of ``Op(op_type, *inputs, attrs={...})``, ``Var("x")`` and
      ``Const("c", where=...)``, rooted at the node to replace) and ``build(self, b, m)``, which
      returns one value per output of the root node, made with ``b.op("LeakyRelu", m["x"],
      alpha=0.01)`` (new nodes are named after the replaced one); an optional ``check(self, ctx, m)``
      returns a reason to skip a match;
    - an onnxscript ``RewriteRule`` or ``RewriteRuleSet`` (``onnxscript.rewriter.pattern``).

    Example (``my_rules.py``)::

        from surgery.rules import Op, Rule, Var

        class ReluToLeaky(Rule):
            name = "relu-to-leaky"
            pattern = Op("Relu", Var("x"))

            def build(self, b, m):
                return [b.op("LeakyRelu", m["x"], alpha=0.01)]

        RULES = [ReluToLeaky]

    Anything else in RULES is refused with a one-line error, as is an empty list. The module is
    user code: a pipeline file that names it runs only with ``--allow-code``. Modules shipped with
    onnx-surgery (``surgery.rules.library:EXACT``) need no ``path``. The rules run once over every
    graph (If/Loop/Scan bodies and functions too); the parity gate checks the result, or, with
    ``changes_semantics = true``, reports the deviation instead of failing.
    """

    name = "rewrite"
    example = 'rules = "my_rules:RULES"\npath = "."\nchanges_semantics = true'
    numerics = Numerics.EXACT

    @dataclasses.dataclass(frozen=True)
    class Options:
        rules: str = option(help="the rules to apply, as 'module:ATTRIBUTE'")
        path: str = dataclasses.field(
            default="",
            metadata={
                "help": "folder holding the module's file (in a passes.toml: relative to its folder, which is the "
                "default; from Python, empty imports the module by name)",
                "path": True,
                "code_folder": True,
            },
        )
        changes_semantics: bool = option(
            False, help="the rules change results on purpose: report, do not fail"
        )

    def __init__(self, options: Any = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        split_spec(
            self.options.rules
        )  # a malformed spec is an error now; the module is imported when the pass runs
        self._rules: list[Any] | None = None

    def user_code(self) -> str | None:
        module, _ = split_spec(self.options.rules)
        if _shipped(module):
            return None
        file = module_file(module, self.options.path or None)
        return str(file) if file is not None else module

    def rules(self) -> list[Any]:
        if self._rules is None:
            self._rules = load_rules(self.options.rules, self.options.path or None)
        return self._rules

    def call(self, model: ir.Model) -> SurgeryResult:
        stats = apply_rules(model, self.rules(), pass_name=self.name)
        result = SurgeryResult(
            model, stats.total > 0, stats=stats.as_stats(), notes=self.notes(stats)
        )
        result.changed_semantics = self.options.changes_semantics and stats.total > 0
        return result
