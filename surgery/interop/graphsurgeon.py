"""Write an onnx-surgery pass as a function over an onnx-graphsurgeon ``Graph``.

::

    import onnx_graphsurgeon as gs
    from surgery import Numerics, register
    from surgery.interop.graphsurgeon import gs_pass

    @register                      # optional: makes it usable by name in passes.toml
    @gs_pass(name="relu-to-clip", numerics=Numerics.EXACT)
    def relu_to_clip(graph: gs.Graph) -> bool:
        \"\"\"Replace Relu by Clip(min=0).\"\"\"
        ...
        return True                # or False: nothing to do; None: compare the graph before/after

``gs_pass`` turns the function into a :class:`~surgery.pass_base.SurgeryPass` subclass (the first
docstring line is its summary). The function receives the graph and, when it declares a second
parameter, the pass's options (an instance of the ``options`` dataclass). Each run converts the model
``ir`` → ``ModelProto`` → ``gs.import_onnx``, calls the function, then ``gs.export_onnx`` → ``ir``,
and moves the result into the SAME ``ir.Model`` object (graph contents and functions are replaced;
the model's ``ir_version``, opset imports and metadata are kept, and an opset import is only added
for a domain the function introduced). The runner's gates check the result like any other pass.

The result is sorted topologically (onnx-ir's stable sort), so the function may append nodes at the
end and skip ``graph.toposort()`` — which in onnx-graphsurgeon 0.6.1 recurses forever on a model
that has both a subgraph and a model-local function.

``modified`` is what the function returns; when it returns None, the graph is compared before and
after the call (nodes: op, domain, name, inputs, outputs, attributes; graph inputs and outputs;
constant names, shapes and dtypes). That comparison does not read weight values: a function that
only changes the contents of a constant should return True.

Memory: onnx-graphsurgeon works on a ``ModelProto`` and numpy arrays, so every weight is read into
memory (external data included) and the graph is copied twice (to gs and back). Write passes for
large models (over ~1 GB of weights) against onnx-ir directly (:class:`~surgery.pass_base.SurgeryPass`);
a protobuf message cannot exceed 2 GB at all.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import onnx
import onnx_ir as ir

from surgery.errors import PassError, SurgeryError
from surgery.graph import transplant
from surgery.options import NoOptions
from surgery.pass_base import Numerics, SurgeryPass, SurgeryResult, Tolerance

__all__ = ["GraphSurgeonPass", "fingerprint", "from_graphsurgeon", "gs_pass", "to_graphsurgeon"]


GsFunction = Callable[..., Any]


def _gs() -> Any:
    try:
        import onnx_graphsurgeon as gs
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise PassError(f"onnx-graphsurgeon is not installed: {exc}") from None
    return gs


def to_graphsurgeon(model: ir.Model) -> Any:
    """An onnx-graphsurgeon ``Graph`` of ``model``, every weight read into memory."""
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    try:
        for graph in model.graphs():
            for value in graph.initializers.values():
                tensor = value.const_value
                if isinstance(tensor, ir.ExternalTensor):
                    swapped.append((value, tensor))
                    value.const_value = ir.Tensor(
                        tensor.numpy(), dtype=tensor.dtype, name=tensor.name
                    )
        proto = ir.to_proto(model)
    finally:
        for value, tensor in swapped:
            value.const_value = tensor
    return _gs().import_onnx(proto)


def from_graphsurgeon(graph: Any, model: ir.Model) -> None:
    """Replace ``model``'s graph contents and functions in place by those of the gs ``graph``."""
    exported = _gs().export_onnx(graph, do_type_check=False)
    exported.ir_version = model.ir_version
    new = ir.from_proto(exported)
    transplant(new, model)
    try:  # gs appends new nodes at the end: sort, so functions need not call graph.toposort()
        model.graph.sort()
        for function in model.functions.values():
            function.sort()
    except ValueError as exc:
        raise PassError(f"the graph left by the graphsurgeon function has a cycle: {exc}") from None


def _attr_key(value: Any, gs: Any) -> Any:
    if isinstance(value, gs.Graph):
        return ("graph", fingerprint(value, functions=False))
    if isinstance(value, gs.Tensor):
        return ("tensor", value.name, _shape_key(value.shape), str(value.dtype))
    if isinstance(value, np.ndarray):
        return ("array", value.shape, str(value.dtype))
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v, gs) for v in value)
    return repr(value)


def _shape_key(shape: Any) -> Any:
    return None if shape is None else tuple(str(d) for d in shape)


def _tensor_key(tensor: Any) -> tuple[Any, ...]:
    return (
        tensor.name,
        _shape_key(getattr(tensor, "shape", None)),
        str(getattr(tensor, "dtype", None)),
    )


def fingerprint(graph: Any, *, functions: bool = True) -> tuple[Any, ...]:
    """A cheap structural summary of a gs graph (no weight values read).

    A gs ``Function``'s ``functions`` is the model's whole list (itself included), so functions are
    summarized once, from the main graph.
    """
    gs = _gs()
    nodes = tuple(
        (
            node.op,
            node.domain or "",
            node.name,
            tuple(t.name for t in node.inputs),
            tuple(t.name for t in node.outputs),
            tuple(sorted((k, _attr_key(v, gs)) for k, v in node.attrs.items())),
        )
        for node in graph.nodes
    )
    constants = tuple(
        sorted(
            _tensor_key(t)
            for node in graph.nodes
            for t in node.inputs
            if isinstance(t, gs.Constant)
        )
    )
    summaries = (
        tuple(
            (f.domain, f.name, fingerprint(f, functions=False))
            for f in (getattr(graph, "functions", None) or ())
        )
        if functions
        else ()
    )
    return (
        nodes,
        tuple(_tensor_key(t) for t in graph.inputs),
        tuple(_tensor_key(t) for t in graph.outputs),
        constants,
        summaries,
    )


class GraphSurgeonPass(SurgeryPass):
    """Base of passes written as a function over an onnx-graphsurgeon Graph (see :func:`gs_pass`)."""

    function: ClassVar[GsFunction | None] = None
    takes_options: ClassVar[bool] = False

    def call(self, model: ir.Model) -> SurgeryResult:
        function = type(self).function
        if function is None:
            raise PassError("no graphsurgeon function attached", pass_name=self.name)
        graph = to_graphsurgeon(model)
        nodes_before = len(graph.nodes)
        before = fingerprint(graph)
        try:
            returned = function(graph, self.options) if self.takes_options else function(graph)
        except SurgeryError:
            raise
        except RecursionError as exc:
            raise PassError(
                f"the graphsurgeon function {function.__qualname__}() raised RecursionError: {exc} "
                "(onnx-graphsurgeon 0.6.1's graph.toposort() recurses forever on a model with both a "
                "subgraph and a local function: call toposort(mode='nodes') or leave the sorting to "
                "the adapter, which sorts the result)",
                pass_name=self.name,
            ) from exc
        except Exception as exc:
            raise PassError(
                f"the graphsurgeon function {function.__qualname__}() raised {type(exc).__name__}: {exc}",
                pass_name=self.name,
            ) from exc
        if returned is not None and not isinstance(returned, (bool, np.bool_)):
            raise PassError(
                f"{function.__qualname__}() must return True, False or None, not {type(returned).__name__}",
                pass_name=self.name,
            )
        modified = fingerprint(graph) != before if returned is None else bool(returned)
        if not modified:
            return SurgeryResult(
                model, False, stats={"nodes_before": nodes_before, "nodes_after": nodes_before}
            )
        try:
            from_graphsurgeon(graph, model)
        except (onnx.checker.ValidationError, ValueError, TypeError, KeyError) as exc:
            raise PassError(
                f"the graph {function.__qualname__}() left cannot be exported: {type(exc).__name__}: {exc}",
                pass_name=self.name,
            ) from exc
        return SurgeryResult(
            model, True, stats={"nodes_before": nodes_before, "nodes_after": len(model.graph)}
        )


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-")) + "Pass"


def gs_pass(
    *,
    name: str,
    numerics: Numerics = Numerics.EXACT,
    options: type | None = None,
    tolerance: Tolerance | None = None,
) -> Callable[[GsFunction], type[GraphSurgeonPass]]:
    """Decorator: turn ``fn(graph[, options]) -> bool | None`` into a pass class.

    Args:
        name: the kebab-case pass name.
        numerics: how the pass may change outputs (``Numerics.APPROX`` needs ``tolerance``).
        options: a frozen dataclass of options (fields built with :func:`surgery.options.option`);
            the function then takes it as its second argument.
        tolerance: the default tolerance of an approx pass.

    The returned class is not registered; decorate it with :func:`surgery.register` (above
    ``@gs_pass``) to use it by name in a ``passes.toml``.
    """
    options_cls = options or NoOptions
    if not dataclasses.is_dataclass(options_cls):
        raise TypeError(f"gs_pass(name={name!r}): options must be a dataclass, got {options_cls!r}")

    def decorate(fn: GsFunction) -> type[GraphSurgeonPass]:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not params:
            raise TypeError(f"{fn.__qualname__} must take the graph as its first argument")
        takes_options = len(params) >= 2
        if options is not None and not takes_options:
            raise TypeError(
                f"{fn.__qualname__} declares no options parameter but gs_pass was given options"
            )
        doc = inspect.getdoc(fn) or f"{name}: a pass written with onnx-graphsurgeon."
        namespace = {
            "name": name,
            "numerics": Numerics(numerics),
            "Options": options_cls,
            "default_tolerance": tolerance,
            "function": staticmethod(fn),
            "takes_options": takes_options,
            "__doc__": doc,
            "__module__": fn.__module__,
            "__qualname__": _class_name(name),
        }
        return type(_class_name(name), (GraphSurgeonPass,), namespace)

    return decorate
