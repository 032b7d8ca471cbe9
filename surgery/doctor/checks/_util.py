"""Small helpers the checks share: attributes with defaults, grouping labels, severities from data."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from typing import Any, TypeVar

import onnx_ir as ir

from surgery.doctor.finding import Severity

K = TypeVar("K", bound=Hashable)

__all__ = ["attr", "cited", "grouped", "is_used", "present_inputs", "severity"]


def attr(node: ir.Node, name: str, default: Any = None) -> Any:
    """An attribute's Python value (str, int, float, list), or ``default`` when absent."""
    a = node.attributes.get(name)
    if a is None:
        return default
    value = a.value
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


def grouped(pairs: Iterable[tuple[K, str]]) -> dict[K, list[str]]:
    """Group labels by key, keeping first-seen order of keys and labels."""
    groups: dict[K, list[str]] = defaultdict(list)
    for key, label in pairs:
        groups[key].append(label)
    return dict(groups)


def severity(rule: dict[str, Any], key: str = "severity") -> Severity:
    return Severity.parse(rule[key])


def cited(facts: Any, op: str, domain: str = "ai.onnx") -> str:
    """The shipped constraints of ``op``, quoted, to end a finding's ``why`` with the fact it rests on."""
    fact = facts.lookup(domain, op)
    if fact is None or not fact.constraints:
        return ""
    return f' Shipped data for {op}: "{fact.constraints}".'


def present_inputs(node: ir.Node) -> int:
    """How many inputs the node gives (omitted optional inputs not counted)."""
    return sum(1 for v in node.inputs if v is not None)


def is_used(value: ir.Value | None) -> bool:
    """Whether a node output is consumed by a node or is a graph output."""
    if value is None:
        return False
    return bool(value.uses()) or value.is_graph_output()
