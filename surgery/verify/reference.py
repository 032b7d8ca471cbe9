"""The second oracle: onnx's ``ReferenceEvaluator`` for models ONNX Runtime has no kernel for.

ORT on CPU lacks e.g. float64 Conv, AveragePool and Erf; the reference evaluator runs every
standard op (about 10x slower), so it is used only when ORT cannot run a model.

It must run every model the tool can load. Given a proto with external data it refuses ("An
instance of LargeContainer should be created…"), and a proto holding the weights inline cannot
exceed 2 GB. So the evaluator is never given the weights in the proto: the large main-graph
initializers become graph inputs (the :class:`~surgery.model_io.LightProto` placeholders, as for
the checker) and are fed as arrays, memory-mapped from their external-data files or the ``ir``
tensors' own memory; initializers of subgraphs (small) are written inline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import onnx_ir as ir

from surgery.graph import iter_graphs
from surgery.model_io import LightProto

__all__ = ["run_reference"]


@contextlib.contextmanager
def _inline_subgraph_external_data(model: ir.Model) -> Iterator[None]:
    """Subgraph initializers backed by external data, read into memory while the proto is built."""
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    try:
        for graph in iter_graphs(model, functions=False):
            if graph is model.graph or not isinstance(graph, ir.Graph):
                continue
            for value in graph.initializers.values():
                tensor = value.const_value
                if isinstance(tensor, ir.ExternalTensor):
                    swapped.append((value, tensor))
                    value.const_value = ir.Tensor(
                        np.array(tensor.numpy()), dtype=tensor.dtype, name=tensor.name
                    )
        yield
    finally:
        for value, tensor in swapped:
            value.const_value = tensor


def _weight_array(tensor: ir.TensorProtocol) -> np.ndarray:
    array = tensor.numpy()
    return array if isinstance(array, np.ndarray) else np.asarray(array)


def run_reference(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` with ``onnx.reference.ReferenceEvaluator``; returns outputs by name."""
    from onnx.reference import ReferenceEvaluator

    from surgery.verify.ort import cast_feed

    with _inline_subgraph_external_data(model):
        light = LightProto(model)
    proto = light.for_checker()  # large initializers → typed graph inputs
    evaluator = ReferenceEvaluator(proto)
    types = {v.name: v.dtype.numpy() if v.dtype is not None else None for v in model.graph.inputs}
    usable = {k: cast_feed(v, types.get(k)) for k, v in feeds.items() if k in types}
    for name, tensor in light.tensors.items():
        if name not in usable:
            usable[name] = _weight_array(tensor)
    outputs = evaluator.run(None, usable)
    return {o.name: np.asarray(v) for o, v in zip(proto.graph.output, outputs, strict=True)}
