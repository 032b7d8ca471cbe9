"""Run an ``ir.Model`` in ONNX Runtime without serializing its weights.

Large main-graph initializers are handed to ORT as external initializers backed by the
``ir`` tensors' own memory (memory-mapped for external data), so a model over 2 GB runs and no
whole-model protobuf is ever built.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from surgery.model_io import LightProto

__all__ = ["OrtSession", "run_model", "is_missing_kernel"]

logger = logging.getLogger(__name__)


def _ort_value(tensor: ir.TensorProtocol) -> ort.OrtValue:
    array = tensor.numpy()
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    if array.dtype.kind in "biufc" and array.dtype.type.__module__ == "numpy":
        return ort.OrtValue.ortvalue_from_numpy(array)
    # ml_dtypes (bfloat16, float8, int4 …): hand ORT the raw bits with the ONNX element type.
    bits = array.view(np.dtype(f"u{array.dtype.itemsize}"))
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, int(tensor.dtype))


class OrtSession:
    """An ONNX Runtime CPU session over an ``ir.Model`` (or a prepared :class:`LightProto`)."""

    def __init__(self, model: ir.Model | LightProto, *, optimize: bool = False, threads: int = 0) -> None:
        light = model if isinstance(model, LightProto) else LightProto(model)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        if threads:
            options.intra_op_num_threads = threads
        # ORT drops initializers nothing uses before it takes external ones: leave those out.
        used = {n for n, v in light.values.items() if v.uses() or v.is_graph_output()}
        names = [n for n in light.tensors if n in used]
        # keep the OrtValues alive as long as the session: ORT uses their memory in place.
        self._values = [_ort_value(light.tensors[n]) for n in names]
        if names:
            options.add_external_initializers(names, self._values)
        proto = light.proto
        if len(names) < len(light.tensors):
            import onnx

            proto = onnx.ModelProto()
            proto.CopyFrom(light.proto)
            kept = [t for t in proto.graph.initializer if t.name not in light.tensors or t.name in used]
            del proto.graph.initializer[:]
            proto.graph.initializer.extend(kept)
        data = proto.SerializeToString()
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        del data
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._input_types = {i.name: _ORT_TYPES.get(i.type) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        wanted = list(outputs) if outputs is not None else self.output_names
        usable = {k: cast_feed(v, self._input_types.get(k)) for k, v in feeds.items() if k in self.input_names}
        results = self.session.run(wanted, usable)
        return dict(zip(wanted, results))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
        self._values = []
        gc.collect()


_ORT_TYPES = {
    "tensor(float)": np.dtype(np.float32), "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16), "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32), "tensor(int16)": np.dtype(np.int16), "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8), "tensor(uint16)": np.dtype(np.uint16), "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64), "tensor(bool)": np.dtype(np.bool_),
}


def cast_feed(array: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    """Cast a parity feed to the dtype a model now declares (e.g. float64 → float32 after narrowing).

    Only numeric-to-numeric casts of the same kind family are made; anything else is fed as is
    and ORT reports the mismatch.
    """
    array = np.asarray(array)
    if dtype is None or array.dtype == dtype:
        return array
    if array.dtype.kind in "fiub" and dtype.kind in "fiub":
        return array.astype(dtype)
    return array


def run_model(
    model: ir.Model, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Run ``model`` once in a fresh ORT session that is freed afterwards."""
    session = OrtSession(model)
    try:
        return session.run(feeds, outputs)
    finally:
        session.close()


def is_missing_kernel(exc: BaseException) -> bool:
    """Whether an ORT error says it has no kernel for an op/type (so the reference evaluator may)."""
    text = str(exc)
    return (
        "NOT_IMPLEMENTED" in text
        or "Could not find an implementation" in text
        or "not implemented" in text.lower()
    )
