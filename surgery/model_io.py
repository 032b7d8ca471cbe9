"""Model I/O: load a model from a path, a ``ModelProto`` or an ``ir.Model``; save atomically.

Everything stays lazy and external: weights in external data files are memory-mapped by onnx-ir
and never pass through a protobuf message, so models over 2 GB load, check, run and save.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Union

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from surgery.errors import InputError
from surgery.graph import find_cycle, iter_graphs

__all__ = [
    "ModelLike",
    "load",
    "to_ir",
    "check_names",
    "check_proto",
    "check_acyclic",
    "check_external_data",
    "contain_external_data",
    "like_input",
    "save",
    "external_tensors",
    "initializer_bytes",
    "graph_initializer_bytes",
    "light_proto",
    "LightProto",
]

logger = logging.getLogger(__name__)

ModelLike = Union[str, os.PathLike, onnx.ModelProto, ir.Model]

#: Initializers at or above this size are left out of in-memory protos (checker, ORT, snapshots).
LIGHT_THRESHOLD = 1024
#: A model whose initializers exceed this many bytes is saved with external data.
EXTERNAL_DATA_THRESHOLD = 1 << 30


def load(path: str | os.PathLike, *, base_dir: str | os.PathLike | None = None) -> ir.Model:
    """Load a model file (and check its external data is there) without reading the weights.

    External data must lie inside the model's folder (or inside ``base_dir`` when given): see
    :func:`check_external_data`.

    Raises:
        InputError: a missing, unreadable, truncated or non-ONNX file, names that are not UTF-8,
            or external data that is missing or outside its folder.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not an ONNX model")
    try:
        proto = onnx.load(path, load_external_data=False)
    except (DecodeError, RuntimeError) as exc:
        raise InputError(f"{path}: not a valid ONNX model (truncated or corrupt protobuf: {exc})") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the model: {exc}") from None
    except Exception as exc:
        raise InputError(f"{path}: not a valid ONNX model: {type(exc).__name__}: {exc}") from None
    check_proto(proto, path)
    try:
        model = ir.from_proto(proto)
    except (DecodeError, RuntimeError) as exc:
        raise InputError(f"{path}: not a valid ONNX model (truncated or corrupt protobuf: {exc})") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the model: {exc}") from None
    except Exception as exc:  # onnx-ir raises plain exceptions for malformed content
        raise InputError(f"{path}: not a valid ONNX model: {type(exc).__name__}: {exc}") from None
    if model.ir_version is None or model.ir_version <= 0 or (len(model.graph) == 0 and not model.graph.outputs):
        raise InputError(f"{path}: not an ONNX model (no ir_version or empty graph)")
    del proto
    check_names(model, path)
    check_acyclic(model, path)
    check_external_data(model, path, base_dir=base_dir if base_dir is not None else path.parent)
    return model


def external_tensors(model: ir.Model) -> Iterator[tuple[ir.Value, ir.ExternalTensor]]:
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor):
                yield value, tensor


def _external_in_attributes(model: ir.Model) -> Iterator[tuple[str, ir.ExternalTensor]]:
    """Tensors held by node attributes (``Constant`` values) that point at external data."""
    for graph in iter_graphs(model):
        for node in graph:
            for attr in node.attributes.values():
                if attr.type is ir.AttributeType.TENSOR and not attr.is_ref():
                    tensor = attr.as_tensor()
                    if isinstance(tensor, ir.ExternalTensor):
                        yield f"{node.name or node.op_type}.{attr.name}", tensor
                elif attr.type is ir.AttributeType.TENSORS and not attr.is_ref():
                    for i, tensor in enumerate(attr.as_tensors()):
                        if isinstance(tensor, ir.ExternalTensor):
                            yield f"{node.name or node.op_type}.{attr.name}[{i}]", tensor


def _outside(location: str) -> bool:
    """Whether a location escapes its folder on its face: absolute (POSIX or Windows) or with ``..``."""
    if not location or "\x00" in location:
        return True
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    return (
        posix.is_absolute() or windows.is_absolute() or bool(windows.drive) or location.startswith(("\\", "/"))
        or ".." in posix.parts or ".." in windows.parts
    )


def contain_external_data(model: ir.Model, where: object, *, base_dir: str | os.PathLike | None = None) -> None:
    """Refuse external data that lies outside its folder, before touching the file system.

    The folder is ``base_dir`` when given, else each tensor's own (the model file's folder;
    the working directory for a tensor read from a ``ModelProto``, which carries none).
    Absolute locations and ``..`` are refused on the text alone; a location that reaches outside
    through a symbolic link is refused after resolving it. The message names the tensor and the
    location written in the model, and says nothing about the file outside (whether it exists,
    its size). Every tensor's ``base_dir`` is set to the folder, so onnx-ir's own checks apply.

    Raises:
        InputError: for the first tensor outside its folder.
    """
    tensors = [(v.name, t) for v, t in external_tensors(model)] + list(_external_in_attributes(model))
    for name, tensor in tensors:
        location = str(tensor.location)
        if _outside(location):
            raise InputError(
                f"{where}: tensor '{name}' has its data at {location!r}, outside the model's folder: "
                "external data must be a relative path inside it (absolute paths and '..' are refused)"
            )
        folder = Path(base_dir) if base_dir is not None else Path(tensor.base_dir or os.getcwd())
        tensor.base_dir = str(folder)
    real_folders: dict[str, str] = {}
    for name, tensor in tensors:
        folder = str(tensor.base_dir)
        real = real_folders.setdefault(folder, os.path.realpath(folder))
        target = os.path.realpath(os.path.join(folder, str(tensor.location)))
        if os.path.commonpath([real, target]) != real:
            raise InputError(
                f"{where}: tensor '{name}' has its data at {str(tensor.location)!r}, which leads outside the model's "
                "folder through a symbolic link: refused"
            )


def check_external_data(model: ir.Model, path: object, *, base_dir: str | os.PathLike | None = None) -> None:
    """Raise :class:`InputError` when external data is outside its folder, missing or too short.

    Containment (:func:`contain_external_data`) is checked first, so nothing is looked up outside.
    """
    contain_external_data(model, path, base_dir=base_dir)
    sizes: dict[str, int] = {}
    for value, tensor in external_tensors(model):
        file = Path(tensor.base_dir) / tensor.location
        key = str(file)
        if key not in sizes:
            sizes[key] = file.stat().st_size if file.is_file() else -1
        if sizes[key] < 0:
            raise InputError(
                f"{path}: external data file '{tensor.location}' of tensor '{value.name}' is missing "
                f"(looked in {file.parent})"
            )
        end = (tensor.offset or 0) + (tensor.length if tensor.length is not None else tensor.nbytes)
        if end > sizes[key]:
            raise InputError(
                f"{path}: external data file '{tensor.location}' is truncated: tensor '{value.name}' "
                f"needs bytes up to {end}, the file has {sizes[key]}"
            )


#: A sparse initializer is densified when its dense form is at most this many bytes, refused above.
DENSIFY_LIMIT = 1 << 28


def _proto_graphs(proto: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    """The main graph and every nested subgraph of a proto (functions have no initializers)."""
    stack = [proto.graph]
    for function in proto.functions:
        for node in function.node:
            stack += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
            stack += [g for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs]
    while stack:
        graph = stack.pop()
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def _has_sparse(proto: onnx.ModelProto) -> bool:
    return any(len(g.sparse_initializer) for g in _proto_graphs(proto))


def _densify(sparse: onnx.SparseTensorProto, where: object) -> onnx.TensorProto:
    """The dense initializer of a sparse one (COO values + linear or [NNZ, rank] indices)."""
    import numpy as np
    from onnx import numpy_helper

    name = sparse.values.name
    dims = [int(d) for d in sparse.dims]
    if sparse.values.data_location == onnx.TensorProto.EXTERNAL or sparse.indices.data_location == onnx.TensorProto.EXTERNAL:
        raise InputError(f"{where}: sparse initializer '{name}' keeps its data in an external file, which is not supported")
    try:
        elem = onnx.helper.tensor_dtype_to_np_dtype(sparse.values.data_type)
    except Exception:
        raise InputError(f"{where}: sparse initializer '{name}' has an unsupported data type {sparse.values.data_type}") from None
    size = 1
    for d in dims:
        if d < 0:
            raise InputError(f"{where}: sparse initializer '{name}' has a negative dim in {dims}")
        size *= d
    if size * np.dtype(elem).itemsize > DENSIFY_LIMIT:
        raise InputError(
            f"{where}: sparse initializer '{name}' would take {size * np.dtype(elem).itemsize} bytes dense "
            f"(shape {dims}); sparse initializers are densified up to {DENSIFY_LIMIT} bytes: densify it at export"
        )
    try:
        values = numpy_helper.to_array(sparse.values).reshape(-1)
        indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    except Exception as exc:
        raise InputError(f"{where}: sparse initializer '{name}' cannot be read: {exc}") from None
    if indices.ndim == 2 and indices.shape[1] == len(dims) and len(dims) > 1:
        if ((indices < 0) | (indices >= np.array(dims))).any():
            raise InputError(f"{where}: sparse initializer '{name}' has indices outside its shape {dims}")
        indices = np.ravel_multi_index(indices.T, dims)
    indices = indices.reshape(-1)
    if indices.size != values.size or (indices.size and (indices.min() < 0 or indices.max() >= size)):
        raise InputError(f"{where}: sparse initializer '{name}' has indices that do not match its values or shape {dims}")
    dense = np.zeros(size, dtype=elem)
    dense[indices] = values
    return numpy_helper.from_array(dense.reshape(dims), name=name)


def check_proto(proto: onnx.ModelProto, where: object) -> None:
    """Checks onnx-ir cannot make itself, run on the proto before it is converted.

    - A tensor produced twice (two nodes, or a node and a graph input) is named as such: onnx-ir
      otherwise fails with an unhelpful deserialization error.
    - Sparse initializers (which onnx-ir drops, leaving their consumers reading nothing) are
      densified in place when small, refused by name when not.

    Raises:
        InputError: naming the tensor.
    """
    for graph in _proto_graphs(proto):
        producers: dict[str, str] = {i.name: "a graph input" for i in graph.input if i.name}
        for init in graph.initializer:
            producers.setdefault(init.name, "an initializer")
        for node in graph.node:
            for out in node.output:
                if not out:
                    continue
                first = producers.get(out)
                if first is not None:
                    raise InputError(
                        f"{where}: tensor '{out}' is produced twice (by {first} and by node "
                        f"'{node.name or node.op_type}'); every tensor name must have one producer"
                    )
                producers[out] = f"node '{node.name or node.op_type}'"
        if len(graph.sparse_initializer):
            dense = [_densify(sp, where) for sp in graph.sparse_initializer]
            del graph.sparse_initializer[:]
            graph.initializer.extend(dense)
            logger.info("%s: densified sparse initializer(s) %s", where, ", ".join(t.name for t in dense))


def check_acyclic(model: ir.Model, where: object) -> None:
    """Refuse a graph with a dependency cycle (linear time; every topological walk would loop).

    Raises:
        InputError: naming the nodes on one cycle.
    """
    for graph in iter_graphs(model):
        cycle = find_cycle(graph)
        if cycle:
            parts = [f"'{n.name or '?'}' ({n.op_type})" for n in cycle]
            if len(parts) > 8:
                parts = parts[:4] + ["..."] + parts[-3:]
            names = " -> ".join(parts)
            raise InputError(f"{where}: the graph has a cycle: {names}; an ONNX graph must be acyclic")


def check_names(model: ir.Model, where: object) -> None:
    """Refuse names that are not text: protobuf hands non-UTF-8 strings over as ``bytes``.

    ONNX strings are UTF-8; a name that is not cannot be matched, printed or written to a
    passes.toml faithfully, and breaks serialization later with an obscure error.

    Raises:
        InputError: naming the first such name (its bytes escaped) and where it is.
    """
    def bad(name: object, what: str) -> None:
        if name is not None and not isinstance(name, str):
            raise InputError(f"{where}: the {what} name {name!r} is not UTF-8 text; rename it in the model")

    for graph in iter_graphs(model):
        bad(graph.name, "graph")
        values = list(graph.inputs) + list(graph.outputs)
        if isinstance(graph, ir.Graph):
            values += list(graph.initializers.values())
        for value in values:
            bad(value.name, "value")
        for node in graph:
            bad(node.name, "node")
            bad(node.op_type, "op type")
            bad(node.domain, "domain")
            for value in node.outputs:
                bad(value.name, "value")


def to_ir(model: ModelLike, *, base_dir: str | os.PathLike | None = None) -> ir.Model:
    """Accept a path, a ``ModelProto`` or an ``ir.Model`` and return an ``ir.Model``.

    Whatever the kind, external data must lie inside the model's folder: the file's folder, the
    tensors' own folder for an ``ir.Model``, the working directory for a ``ModelProto`` loaded
    with ``load_external_data=False`` (it carries no folder) — or ``base_dir`` when given.
    """
    if isinstance(model, ir.Model):
        check_names(model, "the model")
        check_acyclic(model, "the model")
        check_external_data(model, "the model", base_dir=base_dir)
        return model
    if isinstance(model, onnx.ModelProto):
        if _has_sparse(model):  # densify a copy of the graphs: the caller's proto is left untouched
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            model = copy
        check_proto(model, "the ModelProto")
        try:
            converted = ir.from_proto(model)
        except Exception as exc:  # onnx-ir raises plain exceptions for malformed content
            raise InputError(f"the ModelProto is not a valid ONNX model: {type(exc).__name__}: {exc}") from None
        check_names(converted, "the ModelProto")
        check_acyclic(converted, "the ModelProto")
        check_external_data(converted, "the ModelProto", base_dir=base_dir)
        return converted
    if isinstance(model, (str, os.PathLike)):
        return load(model, base_dir=base_dir)
    raise InputError(f"expected a path, an onnx.ModelProto or an onnx_ir.Model, got {type(model).__name__}")


def like_input(original: ModelLike, model: ir.Model) -> Any:
    """Return ``model`` in the same kind as ``original`` was given (proto in, proto out)."""
    if isinstance(original, onnx.ModelProto):
        return ir.to_proto(model)
    return model


def graph_initializer_bytes(graph: ir.Graph) -> int:
    """Total size of one graph's initializers (not its subgraphs'), without reading external data."""
    return sum(v.const_value.nbytes for v in graph.initializers.values() if v.const_value is not None)


def initializer_bytes(model: ir.Model) -> int:
    """Total size of all initializers in all graphs, without reading external data."""
    return sum(graph_initializer_bytes(graph) for graph in iter_graphs(model, functions=False))


class LightProto:
    """A ``ModelProto`` of the model with large main-graph initializers left out.

    The large tensors are replaced by external-data placeholders (``location = "__surgery_mem__"``);
    :attr:`tensors` keeps the ``ir`` tensor objects (memory-mapped or in memory, never copied) so
    ONNX Runtime can be given them as external initializers, and a snapshot can be turned back
    into a full model. Subgraph initializers stay inline (they are small in practice).
    """

    PLACEHOLDER = "__surgery_mem__"

    def __init__(self, model: ir.Model, threshold: int = LIGHT_THRESHOLD) -> None:
        self.tensors: dict[str, ir.TensorProtocol] = {}
        self.values: dict[str, ir.Value] = {}
        swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
        try:
            for name, value in model.graph.initializers.items():
                tensor = value.const_value
                # external tensors always: their location is relative to a folder a proto does not carry
                if tensor is None or (tensor.nbytes < threshold and not isinstance(tensor, ir.ExternalTensor)):
                    continue
                if tensor.dtype in (ir.DataType.STRING,):
                    continue
                self.tensors[name] = tensor
                self.values[name] = value
                swapped.append((value, tensor))
                value.const_value = ir.ExternalTensor(
                    location=self.PLACEHOLDER,
                    offset=0,
                    length=tensor.nbytes,
                    dtype=tensor.dtype,
                    shape=tensor.shape,
                    name=name,
                    base_dir="",
                )
            self.proto: onnx.ModelProto = ir.to_proto(model)
        finally:
            for value, tensor in swapped:
                value.const_value = tensor

    def for_checker(self) -> onnx.ModelProto:
        """A copy of the light proto in which placeholder initializers become graph inputs.

        The checker refuses external data it cannot open; as typed graph inputs, the large
        weights still take part in type and shape checking.
        """
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        graph = proto.graph
        keep = [t for t in graph.initializer if t.name not in self.tensors]
        stripped = [t for t in graph.initializer if t.name in self.tensors]
        input_names = {i.name for i in graph.input}
        for t in stripped:
            if t.name not in input_names:
                graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        del graph.initializer[:]
        graph.initializer.extend(keep)
        return proto

    def full_model(self) -> ir.Model:
        """Rebuild a complete ``ir.Model`` from the light proto and the kept tensors."""
        model = ir.from_proto(self.proto)
        for name, tensor in self.tensors.items():
            model.graph.initializers[name].const_value = tensor
        return model


def light_proto(model: ir.Model, threshold: int = LIGHT_THRESHOLD) -> LightProto:
    return LightProto(model, threshold)


@contextlib.contextmanager
def _staging_dir(target: Path) -> Iterator[Path]:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _uses_external_data(model: ir.Model) -> bool:
    return next(external_tensors(model), None) is not None


def save(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    size_threshold_bytes: int = 1024,
) -> list[Path]:
    """Write ``model`` to ``path`` atomically and return the files written.

    The model and its external data (``<file>.data``) are written into a staging folder beside
    the target and then renamed into place, the data file first, so a reader never sees a model
    that points at data that is not there and a failure leaves no partial output.

    ``external_data=None`` keeps weights external when the model had external data or its
    initializers exceed 1 GiB.
    """
    path = Path(path)
    if not path.parent.exists():
        raise InputError(f"{path}: the output folder {path.parent} does not exist")
    if external_data is None:
        external_data = _uses_external_data(model) or initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data_name = f"{path.name}.data"
    written: list[Path] = []
    with _staging_dir(path) as staging:
        staged_model = staging / path.name
        if external_data:
            ir.save(model, staged_model, external_data=data_name, size_threshold_bytes=size_threshold_bytes)
        else:
            ir.save(model, staged_model)
        staged_data = staging / data_name
        if staged_data.exists():
            os.replace(staged_data, path.parent / data_name)
            written.append(path.parent / data_name)
        os.replace(staged_model, path)
        written.insert(0, path)
    logger.debug("saved %s", ", ".join(map(str, written)))
    return written
