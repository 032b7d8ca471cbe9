"""inline-functions: inline model-local functions and drop opset imports no node uses.

Exporters write model-local functions in their own domains: the TorchScript exporter's
``export_modules_as_functions`` (domains ``__main__``, ``torch.nn.modules.*``), torch's dynamo
exporter for subgraph functions (``pkg.torch.__subgraph__``) and onnxscript functions. ATC rejects
unknown domains (``E16005``) and has no notion of functions. This pass replaces every call by the
function's body, in every graph (``If``/``Loop``/``Scan`` bodies and nested calls included), then
removes the functions and every opset import no remaining node uses, so the model imports
``ai.onnx`` (plus any domain a remaining op really uses).

- Inlined nodes and values are named ``<call node>/<name in the function>`` (unique), so compiler
  dumps still point at the module that produced them.
- Attribute parameters (``RefAttr``) are resolved from the call, or the function's defaults.
- A function whose ``ai.onnx`` import differs from the model's is accepted when every op in it
  resolves to the same schema at both versions; a newer function is otherwise converted down
  with convert-opset's adapters; an older one that would change meaning is refused.
- Recursive functions are refused. onnx-ir's ``InlinePass`` was the starting point; this pass
  differs in naming, opset handling and clean-up of imports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import onnx_ir as ir

from surgery.errors import PassError
from surgery.graph import NameAllocator, is_onnx_domain, subgraphs
from surgery.pass_base import Numerics, SurgeryPass, SurgeryResult, declare_stats
from surgery.registry import register
from surgery.rules import schema
from surgery.rules.engine import Replacement, RuleContext, splice

try:  # the cloner is what onnx-ir's own InlinePass and Graph.clone() use
    from onnx_ir._cloner import Cloner
except ImportError:  # pragma: no cover - onnx-ir moved it
    Cloner = None  # type: ignore[assignment,misc]

__all__ = ["InlineFunctions", "drop_unused_opsets", "used_domains"]

logger = logging.getLogger(__name__)


def _fid(op_id: ir.OperatorIdentifier) -> str:
    domain, name, overload = op_id
    return f"{domain}::{name}" + (f":{overload}" if overload else "")


def _domains_in(graph: ir.Graph | ir.Function) -> set[str]:
    found: set[str] = set()
    for node in graph:
        found.add("" if node.domain == "ai.onnx" else node.domain)
        for sub in subgraphs(node):
            found |= _domains_in(sub)
    return found


def used_domains(model: ir.Model) -> dict[str, set[str]]:
    """Domains used by nodes, per scope: ``"main"`` (graph and subgraphs) and each function id."""
    out = {"main": _domains_in(model.graph)}
    for function in model.functions.values():
        out[_fid(function.identifier())] = _domains_in(function)
    return out


def drop_unused_opsets(model: ir.Model) -> list[str]:
    """Remove opset imports (model and functions) that no node in their scope uses; keep ai.onnx."""
    used = used_domains(model)
    anywhere = set().union(*used.values())
    dropped: list[str] = []
    for key in list(model.opset_imports):
        if not is_onnx_domain(key) and key not in anywhere:
            del model.opset_imports[key]
            dropped.append(key)
    for function in model.functions.values():
        mine = used[_fid(function.identifier())]
        for key in list(function.opset_imports):
            if not is_onnx_domain(key) and key not in mine:
                del function.opset_imports[key]
    return dropped


def _has_cycle(functions: Mapping[ir.OperatorIdentifier, ir.Function]) -> list[str] | None:
    state: dict[ir.OperatorIdentifier, int] = {}
    stack: list[ir.OperatorIdentifier] = []

    def calls(function: ir.Function) -> set[ir.OperatorIdentifier]:
        found = set()
        for node in function.all_nodes():
            if node.op_identifier() in functions:
                found.add(node.op_identifier())
        return found

    def visit(fid: ir.OperatorIdentifier) -> list[str] | None:
        state[fid] = 1
        stack.append(fid)
        for callee in calls(functions[fid]):
            if state.get(callee) == 1:
                return [_fid(f) for f in stack[stack.index(callee) :]] + [_fid(callee)]
            if callee not in state:
                found = visit(callee)
                if found:
                    return found
        stack.pop()
        state[fid] = 2
        return None

    for fid in functions:
        if fid not in state:
            found = visit(fid)
            if found:
                return found
    return None


@register
class InlineFunctions(SurgeryPass):
    """Inline model-local functions and drop opset imports no node uses (a plain ai.onnx model)."""

    name = "inline-functions"
    numerics = Numerics.EXACT
    statistics = declare_stats(
        inlined_calls="function calls replaced by the function's body",
        functions_removed="model-local functions removed after inlining",
        opsets_dropped="opset imports no node uses any more, dropped",
    )

    def call(self, model: ir.Model) -> SurgeryResult:
        if Cloner is None:  # pragma: no cover
            raise PassError(
                "this onnx-ir has no onnx_ir._cloner.Cloner; cannot inline", pass_name=self.name
            )
        functions = model.functions
        stats: dict[str, int] = {}
        if functions:
            cycle = _has_cycle(functions)
            if cycle:
                raise PassError(
                    f"recursive functions cannot be inlined: {' -> '.join(cycle)}",
                    pass_name=self.name,
                )
            self._align_opsets(model)
            self._names = NameAllocator(model)
            self._model = model
            self._count = 0
            self._inline_in(model.graph, model.opset_imports)
            stats["inlined_calls"] = self._count
            removed = len(functions)
            functions.clear()
            stats["functions_removed"] = removed
        dropped = drop_unused_opsets(model)
        if dropped:
            stats["opsets_dropped"] = len(dropped)
        notes = [f"dropped opset imports: {', '.join(sorted(dropped))}"] if dropped else []
        return SurgeryResult(model, bool(stats), stats=stats, notes=notes)

    # ---- opsets ---------------------------------------------------------------------------
    def _align_opsets(self, model: ir.Model) -> None:
        """Make every function's imports agree with the model's before its body moves in."""
        main = schema.opset_of(model.opset_imports, "")
        for function in list(model.functions.values()):
            fid = _fid(function.identifier())
            for domain, version in list(function.opset_imports.items()):
                key = "" if domain == "ai.onnx" else domain
                have = schema.opset_of(model.opset_imports, key)
                if have is None:
                    if key == "":
                        model.opset_imports[""] = version
                        main = version
                    else:
                        model.opset_imports[key] = version
                    continue
                if have == version:
                    continue
                if key != "":
                    raise PassError(
                        f"function {fid} imports {domain} version {version}, the model version {have}",
                        pass_name=self.name,
                    )
                assert main is not None
                self._convert_function(model, function, version, main)

    def _convert_function(
        self, model: ir.Model, function: ir.Function, version: int, target: int
    ) -> None:
        fid = _fid(function.identifier())
        differing = [
            n
            for g, _ in _function_graphs(function)
            for n in g
            if is_onnx_domain(n.domain)
            and schema.since_version(n.op_type, version) != schema.since_version(n.op_type, target)
        ]
        if differing and version < target:
            ops = sorted({n.op_type for n in differing})
            raise PassError(
                f"function {fid} uses ai.onnx {version} and the model {target}; these ops differ between the two "
                f"versions: {', '.join(ops)} (convert the model to opset {version} first, or upgrade the function)",
                pass_name=self.name,
            )
        if differing:
            from surgery.rules.opset_steps import downgrade_graph

            names = NameAllocator(model)
            stats: dict[str, int] = {}
            for graph, imports in _function_graphs(function):
                downgrade_graph(model, graph, imports, version, target, names, self.name, stats)
            logger.info(
                "function %s converted from ai.onnx %d to %d: %s", fid, version, target, stats
            )
        key = "" if "" in function.opset_imports else "ai.onnx"
        function.opset_imports[key] = target

    # ---- inlining -------------------------------------------------------------------------
    def _inline_in(self, graph: ir.Graph | ir.Function, opsets: Mapping[str, int]) -> None:
        for node in list(graph):
            self._visit(graph, node, opsets)

    def _visit(
        self, graph: ir.Graph | ir.Function, node: ir.Node, opsets: Mapping[str, int]
    ) -> None:
        if node.op_identifier() in self._model.functions:
            for new in self._inline_call(graph, node, opsets):
                self._visit(graph, new, opsets)
            return
        for sub in subgraphs(node):
            self._inline_in(sub, opsets)

    def _inline_call(
        self, graph: ir.Graph | ir.Function, call: ir.Node, opsets: Mapping[str, int]
    ) -> list[ir.Node]:
        function = self._model.functions[call.op_identifier()]
        fid = _fid(function.identifier())
        if len(call.inputs) > len(function.inputs):
            raise PassError(
                f"call '{call.name}' of {fid} passes {len(call.inputs)} inputs, the function takes {len(function.inputs)}",
                pass_name=self.name,
            )
        attributes: dict[str, ir.Attr] = dict(call.attributes)
        for attr in function.attributes.values():
            if attr.name not in attributes and attr.value is not None:
                attributes[attr.name] = attr
        value_map: dict[ir.Value, ir.Value | None] = {}
        for i, formal in enumerate(function.inputs):
            value_map[formal] = call.inputs[i] if i < len(call.inputs) else None
        base = call.name or function.name

        def rename(node: ir.Node) -> None:
            node.name = self._names.derive(base, node.name or node.op_type)
            for out in node.outputs:
                out.name = self._names.derive(base, out.name or "val")

        cloner = Cloner(
            attr_map=attributes,
            value_map=value_map,
            metadata_props=dict(call.metadata_props),
            post_process=rename,
            resolve_ref_attrs=True,
        )
        nodes = [cloner.clone_node(n) for n in function]
        outputs = [value_map[o] for o in function.outputs]
        ctx = RuleContext(self._model, graph, opsets, self._names, self.name)
        splice(ctx, Replacement(call, [call], list(call.outputs), nodes, outputs))
        self._count += 1
        return nodes


def _function_graphs(function: ir.Function):
    def walk(g):
        yield g, function.opset_imports
        for node in g:
            for sub in subgraphs(node):
                yield from walk(sub)

    yield from walk(function)
