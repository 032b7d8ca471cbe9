"""Run an ``ir.Model`` in ONNX Runtime without serializing its weights, in a worker process.

Large main-graph initializers are handed to ORT as external initializers: in the worker,
memory-mapped from the model's external-data files or from spill files written once (see
:mod:`surgery.verify.worker`); in process, backed by the ``ir`` tensors' own memory. A model over
2 GB runs and no whole-model protobuf is ever built.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from surgery.model_io import LightProto
from surgery.verify import worker
from surgery.verify.worker import OrtCrash, WeightSpec

__all__ = ["OrtCrash", "OrtSession", "cast_feed", "is_missing_kernel", "run_model"]


def _weight_spec(name: str, tensor: ir.TensorProtocol, spill: Any) -> WeightSpec:
    """Where the worker reads ``tensor``: its own external-data file, else a spill file."""
    dtype = int(tensor.dtype)
    shape = tuple(int(d) for d in tensor.shape.numpy())
    if isinstance(tensor, ir.ExternalTensor) and tensor.location != LightProto.PLACEHOLDER:
        length = tensor.length if tensor.length is not None else tensor.nbytes
        return WeightSpec(
            name,
            str(Path(tensor.path).resolve()),
            int(tensor.offset or 0),
            int(length),
            dtype,
            shape,
        )
    known = spill.known(tensor)
    if known is not None:
        return WeightSpec(name, str(known), 0, known.stat().st_size, dtype, shape)
    if tensor.dtype.bitwidth == 4:
        data: Any = tensor.tobytes()  # packed two per byte, as ORT stores them
    else:
        data = tensor.numpy()
        if data.dtype.itemsize * 8 != tensor.dtype.bitwidth:
            data = tensor.tobytes()
    path = spill.path_of(tensor, data)
    return WeightSpec(name, str(path), 0, path.stat().st_size, dtype, shape)


def _prepare(light: LightProto) -> tuple[onnx.ModelProto, list[str]]:
    """The light proto ORT is given (initializers nothing reads left out) and the kept weight names.

    The proto returned may be ``light.proto`` itself: copy it before changing it.
    """
    # ORT drops initializers nothing uses before it takes external ones: leave those out.
    used = {n for n, v in light.values.items() if v.uses() or v.is_graph_output()}
    names = [n for n in light.tensors if n in used]
    proto = light.proto
    if len(names) < len(light.tensors):
        proto = onnx.ModelProto()
        proto.CopyFrom(light.proto)
        kept = [t for t in proto.graph.initializer if t.name not in light.tensors or t.name in used]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
    return proto, names


def _locate(
    proto: onnx.ModelProto, specs: list[WeightSpec], fresh: bool
) -> tuple[bytes, str | None, list[WeightSpec]]:
    """Point the placeholders of the weights in one folder at their files; return the rest.

    ORT memory-maps external data it reads itself from files, but copies weights handed over as
    ``OrtValue``s (a 2.2 GB weight: 77 MB vs 4.3 GB resident). It only reads files inside one
    folder (the model's, or ``session.model_external_initializers_file_folder_path``) and refuses
    symbolic links out of it. So the folder holding most weight bytes (the model's external
    data, or the spill folder) is given to ORT; weights elsewhere are mapped by the worker and
    handed over as ``OrtValue``s.
    """
    if not specs:
        return proto.SerializeToString(), None, []
    sizes: dict[str, int] = {}
    for spec in specs:
        folder = str(Path(spec.path).parent)
        sizes[folder] = sizes.get(folder, 0) + spec.length
    folder = max(sizes, key=lambda f: sizes[f])
    located = {s.name: s for s in specs if str(Path(s.path).parent) == folder and s.length > 0}
    if not fresh:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        proto = copy
    for tensor in proto.graph.initializer:
        found = located.get(tensor.name)
        if found is None:
            continue
        spec = found
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (
            ("location", Path(spec.path).name),
            ("offset", str(spec.offset)),
            ("length", str(spec.length)),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return proto.SerializeToString(), folder, [s for s in specs if s.name not in located]


class OrtSession:
    """An ONNX Runtime CPU session over an ``ir.Model`` (or a prepared :class:`LightProto`).

    The session lives in the run's worker process (:mod:`surgery.verify.worker`): a crash of ORT
    raises :class:`~surgery.verify.worker.OrtCrash` here instead of killing the caller. The
    worker memory-maps the weights (external-data files, or spill files written once), so no
    weight crosses the pipe and none is held twice. With isolation off the session is built in
    this process from the ``ir`` tensors' own memory.
    """

    def __init__(
        self,
        model: ir.Model | LightProto,
        *,
        optimize: bool = False,
        threads: int = 0,
        prepack: bool = False,
    ) -> None:
        light = model if isinstance(model, LightProto) else LightProto(model)
        proto, names = _prepare(light)
        self.label = f"model '{light.proto.graph.name or 'main_graph'}'"
        self._worker: worker.Worker | None = None
        self._sid: int | None = None
        self._local: Any = None
        self._values: list[Any] = []
        self._generation = 0
        if worker.isolated():
            host = worker.get_worker()
            specs = [_weight_spec(n, light.tensors[n], host.spill) for n in names]
            data, folder, rest = _locate(proto, specs, fresh=proto is not light.proto)
            self._sid, signature = host.open(
                data,
                rest,
                folder=folder,
                optimize=optimize,
                threads=threads,
                label=self.label,
                prepack=prepack,
            )
            self._worker = host
            self._generation = host.starts
        else:
            data = proto.SerializeToString()
            # keep the OrtValues alive as long as the session: ORT uses their memory in place.
            self._values = [(n, _ort_value(light.tensors[n])) for n in names]
            self._local = worker.build_session(
                data, self._values, optimize=optimize, threads=threads, prepack=prepack
            )
            signature = worker.session_signature(self._local)
        del data
        self.input_names, types, self.output_names = signature
        self._input_types = {k: _ORT_TYPES.get(v) for k, v in types.items()}

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        wanted = list(outputs) if outputs is not None else self.output_names
        usable = {
            k: cast_feed(v, self._input_types.get(k))
            for k, v in feeds.items()
            if k in self.input_names
        }
        if self._worker is not None and self._sid is not None:
            if self._worker.starts != self._generation or not self._worker.alive:
                raise OrtCrash(
                    f"the session of {self.label} was lost: the onnxruntime worker crashed in another session"
                )
            return self._worker.run(self._sid, usable, wanted, self.label)
        if self._local is None:
            raise RuntimeError("the onnxruntime session is closed")
        return worker.run_session(self._local, usable, wanted)

    def close(self) -> None:
        if self._worker is not None and self._sid is not None:
            self._worker.close_session(self._sid)
        self._worker = self._sid = None
        if self._local is not None:
            self._local = None
            self._values = []
            gc.collect()  # ORT's arena and the external initializers go now, not at the next collection


def _ort_value(tensor: ir.TensorProtocol) -> Any:
    if tensor.dtype.bitwidth == 4:
        array = np.frombuffer(tensor.tobytes(), np.uint8)
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_shape_and_type(
            [int(d) for d in tensor.shape.numpy()], int(tensor.dtype)
        )
        if array.size:
            import ctypes

            ctypes.memmove(value.data_ptr(), array.ctypes.data, array.size)
        return value
    array = tensor.numpy()
    return worker.to_ort_value(
        array, None if array.dtype.type.__module__ == "numpy" else int(tensor.dtype)
    )


_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
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
    model: ir.Model,
    feeds: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None = None,
    *,
    prepack: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``model`` once in a fresh ORT session that is freed afterwards."""
    session = OrtSession(model, prepack=prepack)
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
