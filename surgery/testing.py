"""Test helpers for pass authors: build small models, run them in ONNX Runtime, count ops.

Used by onnx-surgery's own tests and offered to users who write passes::

    from surgery.testing import make_model, vi, ort_run, op_counts
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from surgery.graph import iter_graphs
from surgery.verify.ort import run_model

IR_VERSION = 9  # what onnxruntime 1.31 accepts; onnx 1.23's make_model would stamp 14


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Mapping[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    ir_version: int = IR_VERSION,
    functions: Sequence[onnx.FunctionProto] = (),
    extra_opsets: Mapping[str, int] | None = None,
    name: str = "g",
) -> onnx.ModelProto:
    """A checked ModelProto with an explicit ``ir_version`` (never the library default)."""
    graph = helper.make_graph(
        list(nodes),
        name,
        list(inputs),
        list(outputs),
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    for domain, version in (extra_opsets or {}).items():
        opsets.append(helper.make_opsetid(domain, version))
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def vi(name: str, elem_type: int, shape: Sequence[int | str | None] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def to_ir(model: onnx.ModelProto | ir.Model) -> ir.Model:
    return model if isinstance(model, ir.Model) else ir.from_proto(model)


def ort_run(model: onnx.ModelProto | ir.Model | str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of ``model`` in ONNX Runtime, by output name."""
    if isinstance(model, str):
        model = ir.load(model)
    return run_model(to_ir(model), feeds)


def op_counts(model: onnx.ModelProto | ir.Model, *, functions: bool = True) -> collections.Counter[str]:
    """Op type histogram over every graph (subgraphs and, by default, functions)."""
    counts: collections.Counter[str] = collections.Counter()
    for graph in iter_graphs(to_ir(model), functions=functions):
        for node in graph:
            counts[node.op_type] += 1
    return counts


def node_names(model: onnx.ModelProto | ir.Model) -> set[str]:
    return {n.name for g in iter_graphs(to_ir(model)) for n in g if n.name}


def assert_close(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-6,
                 names: Iterable[str] | None = None) -> None:
    for key in names if names is not None else b:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)
