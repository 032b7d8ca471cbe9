"""Random ops in the original: which outputs cannot be compared run to run.

An original that draws random numbers (``RandomUniformLike → Greater → Cast → Mul → Div``, a
training-mode Dropout) gives different outputs on every run, so comparing a pass's result with it
blames whatever node comes first. The parity gate finds these ops before the first pass, marks
the graph outputs that depend on them, and reports parity on those outputs as "not comparable:
the original is random" instead of failing. Removing the randomness is a pass's job
(``remove-dropout``), after which later passes are compared normally.
"""

from __future__ import annotations

import onnx_ir as ir

from surgery.graph import const_value, is_onnx_domain, iter_graphs, subgraphs

__all__ = ["RANDOM_OPS", "random_nodes", "random_outputs"]

RANDOM_OPS = frozenset(
    {
        "RandomUniform",
        "RandomUniformLike",
        "RandomNormal",
        "RandomNormalLike",
        "Bernoulli",
        "Multinomial",
    }
)


def _is_random(node: ir.Node, random_functions: set[tuple[str, str]]) -> bool:
    if is_onnx_domain(node.domain) and node.op_type in RANDOM_OPS:
        return True
    if is_onnx_domain(node.domain) and node.op_type == "Dropout":
        training = node.inputs[2] if len(node.inputs) > 2 else None
        if training is None:
            return False
        value = const_value(training)
        if value is None:  # training mode decided at run time: it may be on
            return True
        return bool(value.reshape(-1)[0]) if value.size else False
    return (node.domain, node.op_type) in random_functions


def _contains_random(graph: ir.Graph | ir.Function, random_functions: set[tuple[str, str]]) -> bool:
    for node in graph:
        if _is_random(node, random_functions):
            return True
        if any(_contains_random(sub, random_functions) for sub in subgraphs(node)):
            return True
    return False


def _names_used(node: ir.Node) -> set[str]:
    names: set[str] = set()
    for sub in subgraphs(node):
        for inner in iter_graphs(sub):
            for n in inner:
                names.update(v.name for v in n.inputs if v is not None and v.name)
    return names


def random_nodes(model: ir.Model) -> list[str]:
    """Names (or op types) of the random nodes anywhere in the model."""
    functions = _random_functions(model)
    out = []
    for graph in iter_graphs(model):
        for node in graph:
            if _is_random(node, functions):
                out.append(node.name or node.op_type)
    return out


def _random_functions(model: ir.Model) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    changed = True
    while changed:  # functions calling random functions
        changed = False
        for function in model.functions.values():
            key = (function.domain, function.name)
            if key not in found and _contains_random(function, found):
                found.add(key)
                changed = True
    return found


def _any_random(model: ir.Model) -> bool:
    for graph in iter_graphs(model):
        for node in graph:
            if node.op_type in RANDOM_OPS or node.op_type == "Dropout":
                return True
    return False


def random_outputs(model: ir.Model) -> dict[str, str]:
    """Graph output name → the random node it depends on (empty for a deterministic model)."""
    if not _any_random(model):  # the common case: one cheap scan
        return {}
    functions = _random_functions(model)
    tainted: dict[ir.Value, str] = {}
    for node in model.graph:  # topological order
        source = None
        if _is_random(node, functions) or any(
            _contains_random(sub, functions) for sub in subgraphs(node)
        ):
            source = node.name or node.op_type
        else:
            for v in node.inputs:
                if v is not None and v in tainted:
                    source = tainted[v]
                    break
            if source is None and tainted and any(True for _ in subgraphs(node)):
                used = _names_used(node)
                if used:
                    source = next((s for v, s in tainted.items() if v.name in used), None)
        if source is not None:
            for out in node.outputs:
                tainted[out] = source
    return {v.name: tainted[v] for v in model.graph.outputs if v in tainted and v.name}
