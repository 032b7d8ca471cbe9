"""rewrite: apply rewrite rules from a user's Python module.

In ``passes.toml``::

    [[pass]]
    name = "rewrite"
    rules = "my_rules:RULES"      # module:attribute
    path = "."                    # where to import the module from (relative to the TOML file's
                                  # folder when the pipeline is a file; default: that folder)

``RULES`` may be a list (or a single one) of:

- :class:`surgery.rules.Rule` subclasses or instances (our pattern language and builder);
- onnxscript ``RewriteRule`` / ``RewriteRuleSet`` objects (``onnxscript.rewriter.pattern``),
  run by our engine so they too reach subgraphs and functions, name their nodes after the
  replaced ones and report near misses.

The rules run once over every graph. The pass is ``exact``: the parity gate checks the result.
For rules that change results on purpose set ``changes_semantics = true``; the report then
shows the deviation instead of failing.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import onnx_ir as ir

from surgery.errors import PipelineError
from surgery.options import option
from surgery.pass_base import Numerics, SurgeryResult
from surgery.registry import register
from surgery.rules import Rule, RulePass, apply_rules
from surgery.rules.onnxscript_rules import adapt, is_onnxscript_rule

__all__ = ["Rewrite", "load_rules"]

logger = logging.getLogger(__name__)


def _import(module: str, path: str | None) -> Any:
    folder = Path(path or ".").resolve()
    if not folder.is_dir():
        raise PipelineError(f"rewrite: path '{path}' is not a folder")
    if folder is not None:
        candidate = folder / (module.replace(".", "/") + ".py")
        if candidate.is_file():
            name = f"_surgery_rules_{abs(hash(str(candidate)))}"
            spec = importlib.util.spec_from_file_location(name, candidate)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            try:
                spec.loader.exec_module(mod)
            except Exception as exc:
                sys.modules.pop(name, None)
                raise PipelineError(f"rewrite: importing {candidate} failed: {type(exc).__name__}: {exc}") from None
            return mod
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        where = f" (looked in {folder} and on sys.path)" if folder else ""
        raise PipelineError(f"rewrite: cannot import module '{module}'{where}: {exc}") from None
    except Exception as exc:
        raise PipelineError(f"rewrite: importing '{module}' failed: {type(exc).__name__}: {exc}") from None


def load_rules(spec: str, path: str | None = None) -> list[Any]:
    """Load ``module:attribute`` and return engine rules (ours and adapted onnxscript ones)."""
    if ":" not in spec:
        raise PipelineError(f"rewrite: rules must look like 'module:ATTRIBUTE', got '{spec}'")
    module_name, attr = spec.split(":", 1)
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
    """Apply rewrite rules from a user module (rules = "my_rules:RULES"), ours or onnxscript's."""

    name = "rewrite"
    numerics = Numerics.EXACT

    @dataclasses.dataclass(frozen=True)
    class Options:
        rules: str = option(help="the rules to apply, as 'module:ATTRIBUTE'")
        path: str = option(
            "", help="folder to import the module from (default: sys.path; in a passes.toml, relative to its folder)",
            path=True,
        )
        changes_semantics: bool = option(False, help="the rules change results on purpose: report, do not fail")

    def __init__(self, options: Any = None, /, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._rules = load_rules(self.options.rules, self.options.path or None)

    def rules(self) -> list[Any]:
        return self._rules

    def call(self, model: ir.Model) -> SurgeryResult:
        stats = apply_rules(model, self._rules, pass_name=self.name)
        result = SurgeryResult(model, stats.total > 0, stats=stats.as_stats(), notes=self.notes(stats))
        result.changed_semantics = self.options.changes_semantics and stats.total > 0
        return result
