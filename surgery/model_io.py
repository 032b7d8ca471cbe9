"""Model I/O: load a model from a path, a ``ModelProto`` or an ``ir.Model``; save atomically (:class:`Transaction`).

Everything stays lazy and external: weights in external data files are memory-mapped by onnx-ir
and never pass through a protobuf message, so models over 2 GB load, check, run and save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from surgery import protoload
from surgery.errors import InputError
from surgery.graph import find_cycle, iter_graphs

__all__ = [
    "STAGING_PREFIX",
    "FileRangesTensor",
    "LightProto",
    "ModelLike",
    "Transaction",
    "check_acyclic",
    "check_external_data",
    "check_names",
    "check_proto",
    "clean_stale_staging",
    "contain_external_data",
    "external_tensors",
    "from_file_proto",
    "graph_initializer_bytes",
    "initializer_bytes",
    "light_proto",
    "like_input",
    "load",
    "save",
    "to_ir",
]

logger = logging.getLogger(__name__)

ModelLike = str | os.PathLike | onnx.ModelProto | ir.Model

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
    proto = protoload.read(path)  # file checks, parse and the cycle check, before any conversion
    return from_file_proto(proto, path, base_dir=base_dir)


def from_file_proto(
    proto: onnx.ModelProto, path: str | os.PathLike, *, base_dir: str | os.PathLike | None = None
) -> ir.Model:
    """The second half of :func:`load`: ``proto`` as read from ``path`` by :func:`surgery.protoload.read`."""
    path = Path(path)
    check_proto(proto, path)
    try:
        model = ir.from_proto(proto)
    except (DecodeError, RuntimeError) as exc:
        raise InputError(
            f"{path}: not a valid ONNX model (truncated or corrupt protobuf: {exc})"
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the model: {exc}") from None
    except Exception as exc:  # onnx-ir raises plain exceptions for malformed content
        raise InputError(f"{path}: not a valid ONNX model: {type(exc).__name__}: {exc}") from None
    if (
        model.ir_version is None
        or model.ir_version <= 0
        or (len(model.graph) == 0 and not model.graph.outputs)
    ):
        raise InputError(f"{path}: not an ONNX model (no ir_version or empty graph)")
    del proto
    check_names(model, path)  # (acyclic: checked on the proto by protoload.read)
    check_external_data(model, path, base_dir=base_dir if base_dir is not None else path.parent)
    return model


def file_identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(inode, mtime in ns) of a file, None if it is missing: tells a file replaced since apart."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


class FileRangesTensor(ir.LazyTensor):
    """A lazy tensor whose bytes are byte ranges of existing files, in order (``ranges``: path,
    offset, length), e.g. weights of external data put side by side row by row.

    Read like any lazy tensor (``func`` builds it); saved, its ranges are copied file to file in
    the kernel, never through this process's memory, as long as the files are the ones the ranges
    were taken from (:meth:`ranges_intact`); otherwise saving builds it with ``func``.
    """

    def __init__(
        self,
        func: Any,
        *,
        dtype: ir.DataType,
        shape: ir.Shape,
        ranges: list[tuple[str, int, int]],
        name: str | None = None,
    ) -> None:
        super().__init__(func, dtype=dtype, shape=shape, name=name)
        self.ranges = ranges
        self._files = {path: file_identity(path) for path in {r[0] for r in ranges}}

    def ranges_intact(self) -> bool:
        """Whether every file still is the one the ranges were taken from (same inode and mtime)."""
        return sum(r[2] for r in self.ranges) == self.nbytes and all(
            known is not None and file_identity(path) == known
            for path, known in self._files.items()
        )


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
        posix.is_absolute()
        or windows.is_absolute()
        or bool(windows.drive)
        or location.startswith(("\\", "/"))
        or ".." in posix.parts
        or ".." in windows.parts
    )


def contain_external_data(
    model: ir.Model, where: object, *, base_dir: str | os.PathLike | None = None
) -> None:
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
    tensors = [(v.name, t) for v, t in external_tensors(model)] + list(
        _external_in_attributes(model)
    )
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
        tensor_folder = str(tensor.base_dir)
        real = real_folders.setdefault(tensor_folder, os.path.realpath(tensor_folder))
        target = os.path.realpath(os.path.join(tensor_folder, str(tensor.location)))
        if os.path.commonpath([real, target]) != real:
            raise InputError(
                f"{where}: tensor '{name}' has its data at {str(tensor.location)!r}, which leads outside the model's "
                "folder through a symbolic link: refused"
            )


def check_external_data(
    model: ir.Model, path: object, *, base_dir: str | os.PathLike | None = None
) -> None:
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
            stack += [
                g for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs
            ]
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
    if (
        sparse.values.data_location == onnx.TensorProto.EXTERNAL
        or sparse.indices.data_location == onnx.TensorProto.EXTERNAL
    ):
        raise InputError(
            f"{where}: sparse initializer '{name}' keeps its data in an external file, which is not supported"
        )
    try:
        elem = onnx.helper.tensor_dtype_to_np_dtype(sparse.values.data_type)
    except Exception:
        raise InputError(
            f"{where}: sparse initializer '{name}' has an unsupported data type {sparse.values.data_type}"
        ) from None
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
            raise InputError(
                f"{where}: sparse initializer '{name}' has indices outside its shape {dims}"
            )
        indices = np.ravel_multi_index(indices.T, dims)
    indices = indices.reshape(-1)
    if indices.size != values.size or (
        indices.size and (indices.min() < 0 or indices.max() >= size)
    ):
        raise InputError(
            f"{where}: sparse initializer '{name}' has indices that do not match its values or shape {dims}"
        )
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
            logger.info(
                "%s: densified sparse initializer(s) %s", where, ", ".join(t.name for t in dense)
            )


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
                parts = [*parts[:4], "...", *parts[-3:]]
            names = " -> ".join(parts)
            raise InputError(
                f"{where}: the graph has a cycle: {names}; an ONNX graph must be acyclic"
            )


def check_names(model: ir.Model, where: object) -> None:
    """Refuse names that are not text: protobuf hands non-UTF-8 strings over as ``bytes``.

    ONNX strings are UTF-8; a name that is not cannot be matched, printed or written to a
    passes.toml faithfully, and breaks serialization later with an obscure error.

    Raises:
        InputError: naming the first such name (its bytes escaped) and where it is.
    """

    def bad(name: object, what: str) -> None:
        if name is not None and not isinstance(name, str):
            raise InputError(
                f"{where}: the {what} name {name!r} is not UTF-8 text; rename it in the model"
            )

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
            raise InputError(
                f"the ModelProto is not a valid ONNX model: {type(exc).__name__}: {exc}"
            ) from None
        check_names(converted, "the ModelProto")
        check_acyclic(converted, "the ModelProto")
        check_external_data(converted, "the ModelProto", base_dir=base_dir)
        return converted
    if isinstance(model, (str, os.PathLike)):
        return load(model, base_dir=base_dir)
    raise InputError(
        f"expected a path, an onnx.ModelProto or an onnx_ir.Model, got {type(model).__name__}"
    )


def like_input(original: ModelLike, model: ir.Model) -> onnx.ModelProto | ir.Model:
    """Return ``model`` in the same kind as ``original`` was given (proto in, proto out)."""
    if isinstance(original, onnx.ModelProto):
        return ir.to_proto(model)
    return model


def graph_initializer_bytes(graph: ir.Graph) -> int:
    """Total size of one graph's initializers (not its subgraphs'), without reading external data."""
    return sum(
        v.const_value.nbytes for v in graph.initializers.values() if v.const_value is not None
    )


def initializer_bytes(model: ir.Model) -> int:
    """Total size of all initializers in all graphs, without reading external data."""
    return sum(
        graph_initializer_bytes(graph)
        for graph in iter_graphs(model, functions=False)
        if isinstance(graph, ir.Graph)
    )


class LightProto:
    """A ``ModelProto`` of the model with large main-graph initializers left out.

    The large tensors are replaced by external-data placeholders (``location = "__surgery_mem__"``);
    :attr:`tensors` keeps the ``ir`` tensor objects (memory-mapped or in memory, never copied) so
    ONNX Runtime can be given them as external initializers, and a snapshot can be turned back
    into a full model. Subgraph initializers stay inline (they are small in practice); one kept
    in an external-data file is read into the proto, because a proto carries no folder its
    relative location could be resolved against (ORT and the checker would look in the working
    directory). :data:`SUBGRAPH_INLINE_LIMIT` bytes of them at most: more is an ``InputError``.
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
                if tensor is None or (
                    tensor.nbytes < threshold and not isinstance(tensor, ir.ExternalTensor)
                ):
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
                    shape=ir.Shape(tensor.shape.numpy()),
                    name=name,
                    base_dir="",
                )
            swapped.extend(_inline_subgraph_external(model))
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
                graph.input.append(
                    onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                )
        del graph.initializer[:]
        graph.initializer.extend(keep)
        return proto

    def full_model(self) -> ir.Model:
        """Rebuild a complete ``ir.Model`` from the light proto and the kept tensors."""
        model = ir.from_proto(self.proto)
        for name, tensor in self.tensors.items():
            model.graph.initializers[name].const_value = tensor
        return model


#: Bytes of subgraph initializers in external data that :class:`LightProto` reads into its proto.
SUBGRAPH_INLINE_LIMIT = 1 << 30


def _inline_subgraph_external(model: ir.Model) -> list[tuple[ir.Value, ir.TensorProtocol]]:
    """Swap each external-data initializer of a subgraph (If/Loop/Scan body) for its bytes in memory.

    Returns the swaps for the caller to undo. The bytes are read from the memory-mapped file once,
    for the proto; the model keeps its ``ExternalTensor``.
    """
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    total = 0
    try:
        for graph in model.graphs():
            if graph is model.graph:
                continue
            for value in graph.initializers.values():
                tensor = value.const_value
                if not isinstance(tensor, ir.ExternalTensor):
                    continue
                total += tensor.nbytes
                if total > SUBGRAPH_INLINE_LIMIT:
                    raise InputError(
                        f"the model: subgraph initializers in external data exceed {SUBGRAPH_INLINE_LIMIT} bytes "
                        f"(at '{value.name}' in graph '{graph.name}'); move large weights to the main graph"
                    )
                inline = ir.Tensor(tensor.numpy(), dtype=tensor.dtype, name=tensor.name)
                swapped.append((value, tensor))
                value.const_value = inline
    except BaseException:
        for value, tensor in swapped:
            value.const_value = tensor
        raise
    return swapped


def light_proto(model: ir.Model, threshold: int = LIGHT_THRESHOLD) -> LightProto:
    return LightProto(model, threshold)


# --------------------------------------------------------------------------------------------
# Saving: every file of a run is staged in one folder beside its target and committed together.
# --------------------------------------------------------------------------------------------

from surgery.writeplan import STAGING_PREFIX, check_output_file  # noqa: E402  (one spelling: ``.surgery-staging-<pid>-<token>``)

#: Bytes handed to one ``copy_file_range`` call, so that a signal is seen between calls.
COPY_CHUNK = 64 << 20
#: Tensors at or above this size start at a 4 KiB boundary in the data file (page-aligned mmap).
ALIGN_THRESHOLD = 1 << 20
_ALIGNMENT = 4096
_OLD_MODEL_PARSE_LIMIT = 256 << 20
_TOKEN_DATA = re.compile(r"\.[0-9a-f]{8}\.data$")


def _token() -> str:
    return secrets.token_hex(4)


def _start_time(pid: int) -> str:
    """The process start time (clock ticks since boot) on Linux, '' elsewhere: tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19] if ")" in stat else ""


def _owner_alive(folder: Path) -> bool:
    """Whether the process that created the staging ``folder`` is still running."""
    try:
        pid = int(folder.name[len(STAGING_PREFIX) :].split("-", 1)[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    try:
        recorded = (folder / "owner").read_text().split()
    except OSError:
        recorded = []
    started = _start_time(pid)
    return not (len(recorded) == 2 and started and recorded[1] != started)


def clean_stale_staging(folder: Path) -> list[Path]:
    """Remove the staging folders in ``folder`` whose owner process is gone (a killed run's leftovers)."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            path = Path(entry.path)
            if not _owner_alive(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
                logger.info("removed %s, left by a run that is gone", path)
    return removed


def _write_error(target: Path, exc: OSError) -> InputError:
    reason = exc.strerror or str(exc)
    return InputError(f"{target}: cannot write: {reason}")


def _copy_range(src: int, dst: int, src_offset: int, dst_offset: int, length: int) -> None:
    """Copy ``length`` bytes between two files in the kernel (reflink where the filesystem has one)."""
    done = 0
    use_kernel = hasattr(os, "copy_file_range")
    while done < length:
        n = min(COPY_CHUNK, length - done)
        copied = 0
        if use_kernel:
            try:
                copied = os.copy_file_range(src, dst, n, src_offset + done, dst_offset + done)
            except OSError as exc:
                if exc.errno not in (
                    errno.EXDEV,
                    errno.ENOSYS,
                    errno.EINVAL,
                    errno.EOPNOTSUPP,
                    errno.EPERM,
                ):
                    raise
                use_kernel = False
        if not use_kernel:
            chunk = os.pread(src, n, src_offset + done)
            copied = os.pwrite(dst, chunk, dst_offset + done) if chunk else 0
        if copied <= 0:
            raise OSError(
                errno.EIO, f"short read: {length - done} bytes missing from the source data file"
            )
        done += copied


@dataclasses.dataclass
class _Layout:
    """Where each externalized tensor goes in the new data file."""

    value: ir.Value
    tensor: ir.TensorProtocol
    offset: int
    length: int


@dataclasses.dataclass
class _StagedModel:
    model: ir.Model
    target: Path
    staged: Path
    layout: list[_Layout]
    data_name: str | None
    staged_data: Path | None

    @property
    def data_target(self) -> Path | None:
        return self.target.parent / self.data_name if self.data_name else None


def _plan_layout(model: ir.Model, threshold: int) -> list[_Layout]:
    layout: list[_Layout] = []
    offset = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is None or tensor.dtype == ir.DataType.STRING:
                continue
            if not isinstance(tensor, ir.ExternalTensor) and tensor.nbytes <= threshold:
                continue
            length = tensor.nbytes
            if length >= ALIGN_THRESHOLD:
                offset = -(-offset // _ALIGNMENT) * _ALIGNMENT
            layout.append(_Layout(value, tensor, offset, length))
            offset += length
    return layout


def _reserve(fd: int, size: int) -> int:
    """``fallocate(fd, 0, 0, size)`` through libc (Linux): 0, or the errno it failed with.

    Not ``os.posix_fallocate``: where the file system cannot reserve blocks, glibc emulates that by
    writing every block, which would double the writes. Without libc's ``fallocate``: EOPNOTSUPP.
    """
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return errno.EOPNOTSUPP
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return 0 if function(fd, 0, 0, size) == 0 else ctypes.get_errno()


def _preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes for a new data file before copying into it.

    A full disk fails here, before gigabytes are copied; and ext4/xfs then copy into extents
    allocated at once instead of allocating block by block as the copy goes (``bench/bench_core.py``:
    the kernel copy of the decoder's 2.5 GB took about half the time). File systems without it
    (EOPNOTSUPP and the like) skip the reservation.

    Raises:
        OSError: ENOSPC, EDQUOT or EFBIG: the data file cannot have that size.
    """
    if size <= 0 or not sys.platform.startswith("linux"):
        return
    code = _reserve(fd, size)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        raise OSError(code, os.strerror(code))


def _tensor_bytes(tensor: ir.TensorProtocol) -> memoryview:
    """The bytes of ``tensor`` as saved, without the copy ``tobytes`` makes where its array already
    holds them (little-endian, one element per item: a lazy tensor's array is built once, not twice)."""
    if sys.byteorder == "little" and tensor.dtype.bitwidth % 8 == 0:
        array = tensor.numpy()
        if array.dtype.itemsize * 8 == tensor.dtype.bitwidth and array.dtype.byteorder != ">":
            return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
    return memoryview(tensor.tobytes())


def _write_data(layout: list[_Layout], path: Path) -> None:
    """Write the data file: bytes of unchanged external tensors are copied file to file in the kernel."""
    sources: dict[str, int] = {}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _preallocate(fd, max((item.offset + item.length for item in layout), default=0))
        end = 0
        for item in layout:
            tensor = item.tensor
            if isinstance(tensor, ir.ExternalTensor):
                src_path = os.path.join(tensor.base_dir, tensor.location)
                if src_path not in sources:
                    sources[src_path] = os.open(src_path, os.O_RDONLY)
                _copy_range(sources[src_path], fd, tensor.offset or 0, item.offset, item.length)
            elif isinstance(tensor, FileRangesTensor) and tensor.ranges_intact():
                position = item.offset
                for src_path, src_offset, length in tensor.ranges:
                    if src_path not in sources:
                        sources[src_path] = os.open(src_path, os.O_RDONLY)
                    _copy_range(sources[src_path], fd, src_offset, position, length)
                    position += length
            else:
                view = _tensor_bytes(tensor)
                written = 0
                while written < len(view):
                    written += os.pwrite(fd, view[written:], item.offset + written)
            end = max(end, item.offset + item.length)
        os.ftruncate(fd, end)
    finally:
        os.close(fd)
        for src in sources.values():
            os.close(src)


def _write_graph(staged: _StagedModel) -> None:
    """Serialize the model with its externalized tensors pointing at ``staged.data_name``."""
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    try:
        for item in staged.layout:
            swapped.append((item.value, item.tensor))
            item.value.const_value = ir.ExternalTensor(
                location=staged.data_name or "",
                offset=item.offset,
                length=item.length,
                dtype=item.tensor.dtype,
                shape=ir.Shape(item.tensor.shape.numpy()),
                name=item.value.name or "",
                base_dir=str(staged.target.parent),
            )
        if staged.staged.exists():
            staged.staged.unlink()
        ir.save(staged.model, staged.staged)
    finally:
        for value, tensor in swapped:
            value.const_value = tensor


def _referenced_data(model_file: Path) -> set[Path]:
    """External data files an existing model file names (in its folder); empty when it cannot tell."""
    try:
        if not model_file.is_file() or model_file.stat().st_size > _OLD_MODEL_PARSE_LIMIT:
            return set()
        proto = onnx.load_model(str(model_file), load_external_data=False)
    except Exception:  # not a model we can read: nothing of it is ours to remove
        return set()
    files: set[Path] = set()
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        for tensor in graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    files.add(model_file.parent / entry.value)
        for node in graph.node:
            for attr in node.attribute:
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
    return files


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class Transaction:
    """The files of one run, staged in ``.surgery-staging-<pid>-<token>/`` and committed together.

    Why: a run writes several files (a model and its weights, artifacts, bucket outputs, reports)
    and a reader must never see some of them new and some old, nor a model reading weights that
    are not its own. So each external data file is written under a name no existing model uses
    (``OUT.onnx.data`` when that name is free, else ``OUT.onnx.<token>.data``) and linked into
    place without replacing anything; then the other files are renamed over their targets, models
    last; only when every rename succeeded are the data files of the replaced models removed. A
    failure (or a signal) on the way puts back every replaced file and removes every new one.
    A staging folder whose process is gone (SIGKILL) is removed by the next transaction that
    stages into the same folder.

    ``protect`` names files that must survive the commit (the run's inputs): they are never removed
    as old data.
    """

    def __init__(self, protect: Iterator[Path] | list[Path] | None = None) -> None:
        self._folders: dict[Path, Path] = {}
        self._models: list[_StagedModel] = []
        self._files: list[tuple[Path, Path]] = []
        self.protect: list[Path] = list(protect or [])
        self.committed = False
        self.written: list[Path] = []

    # -- staging ---------------------------------------------------------------------------------
    def staging_folder(self, target: Path) -> Path:
        """This run's staging folder beside ``target`` (created on first use)."""
        parent = target.parent.resolve()
        if parent not in self._folders:
            check_output_file(target, "output")
            clean_stale_staging(parent)
            folder = parent / f"{STAGING_PREFIX}{os.getpid()}-{_token()}"
            try:
                folder.mkdir()
                (folder / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
            except OSError as exc:
                shutil.rmtree(folder, ignore_errors=True)
                raise _write_error(target, exc) from None
            self._folders[parent] = folder
        return self._folders[parent]

    def _staged_name(self, target: Path) -> Path:
        return self.staging_folder(target) / f"{len(self._models) + len(self._files)}-{target.name}"

    def add_model(
        self,
        model: ir.Model,
        target: str | os.PathLike,
        *,
        external_data: bool | None = None,
        size_threshold_bytes: int = 1024,
    ) -> list[Path]:
        """Stage ``model`` for ``target``; return the paths it will have (model, then its data)."""
        target = Path(target)
        if external_data is None:
            external_data = (
                _uses_external_data(model) or initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
            )
        staged_path = self._staged_name(target)
        layout = _plan_layout(model, size_threshold_bytes) if external_data else []
        data_name = None
        staged_data = None
        if layout:
            data_name = self._free_data_name(target)
            staged_data = staged_path.with_name(staged_path.name + ".data")
        staged = _StagedModel(model, target, staged_path, layout, data_name, staged_data)
        try:
            if staged_data is not None:
                _write_data(layout, staged_data)
            _write_graph(staged)
        except OSError as exc:
            raise _write_error(target, exc) from None
        self._models.append(staged)
        return [target] + ([staged.data_target] if staged.data_target else [])

    def _free_data_name(self, target: Path) -> str:
        taken = {m.data_target for m in self._models}
        name = f"{target.name}.data"
        if (
            (target.parent / name).exists()
            or (target.parent / name) in taken
            or _same_file(target.parent / name, target)
        ):
            name = f"{target.name}.{_token()}.data"
        return name

    def add_bytes(self, target: str | os.PathLike, data: bytes) -> Path:
        """Stage a file with ``data`` as its content."""
        target = Path(target)
        path = self.add_file(target)
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise _write_error(target, exc) from None
        return target

    def add_text(self, target: str | os.PathLike, text: str) -> Path:
        return self.add_bytes(target, text.encode("utf-8"))

    def add_file(self, target: str | os.PathLike) -> Path:
        """Reserve a staged path for ``target`` that the caller writes (e.g. a streamed JSON)."""
        target = Path(target)
        staged = self._staged_name(target)
        self._files.append((staged, target))
        return staged

    # -- commit ------------------------------------------------------------------------------------
    def commit(self) -> list[Path]:
        """Make every staged file visible; on any failure put everything back as it was."""
        if self.committed:
            return self.written
        masked = _block_signals()
        placed: list[Path] = []
        replaced: list[
            tuple[Path, Path | None, bool]
        ] = []  # (target, backup of what it replaced, existed)
        old_data: set[Path] = set()
        renames: list[tuple[Path, Path]] = []
        try:
            for staged in self._models:
                if staged.staged_data is not None:
                    placed.append(self._place_data(staged))
            renames = list(self._files) + [(m.staged, m.target) for m in self._models]
            models = {m.target for m in self._models}
            for i, (staged_path, target) in enumerate(renames):
                backup = None
                existed = target.exists() or target.is_symlink()
                if existed:
                    if target in models:
                        old_data |= _referenced_data(target)
                    backup = staged_path.with_name(f"backup-{i}")
                    try:
                        os.link(target, backup, follow_symlinks=False)
                    except OSError:
                        backup = None  # no hard links here: the old file cannot be put back
                os.replace(staged_path, target)
                replaced.append((target, backup, existed))
        except BaseException as exc:
            self._rollback(placed, replaced)
            _unblock_signals(masked)
            self.abort()
            if isinstance(exc, OSError):
                failed = (
                    renames[len(replaced)][1]
                    if len(replaced) < len(renames)
                    else self._models[0].target
                )
                raise _write_error(failed, exc) from None
            raise
        self.committed = True
        self.written = []
        for m in self._models:
            self.written.append(m.target)
            if m.data_target is not None:
                self.written.append(m.data_target)
        self.written += [target for _, target in self._files]
        _unblock_signals(masked)
        self._remove_old_data(old_data)
        self.abort()
        logger.debug("committed %s", ", ".join(map(str, self.written)))
        return self.written

    def _place_data(self, staged: _StagedModel) -> Path:
        """Link the staged data file under its fresh name; pick another when that name was just taken."""
        assert staged.staged_data is not None
        for _ in range(8):
            final = staged.data_target
            assert final is not None
            try:
                os.link(staged.staged_data, final)
                return final
            except FileExistsError:
                staged.data_name = f"{staged.target.name}.{_token()}.data"
                _write_graph(staged)  # the model must name the file it reads
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOTSUP):
                    raise
                # no hard links on this filesystem: a random name nobody uses, renamed into place
                if final.exists():
                    staged.data_name = f"{staged.target.name}.{_token()}.data"
                    _write_graph(staged)
                    continue
                os.replace(staged.staged_data, final)
                return final
        raise InputError(f"{staged.target}: could not find a free name for its external data")

    def _rollback(self, placed: list[Path], replaced: list[tuple[Path, Path | None, bool]]) -> None:
        kept: set[Path] = set()
        for target, backup, existed in reversed(replaced):
            try:
                if backup is not None:
                    os.replace(backup, target)
                elif not existed:
                    os.unlink(target)
                else:  # the old file is gone (no hard link could keep it): the new one, whole, stays
                    kept.add(target)
                    logger.warning("could not put the old %s back; the new one stays", target)
            except OSError as exc:
                kept.add(target)
                logger.warning("could not put %s back: %s", target, exc)
        keep_data = {m.data_target for m in self._models if m.target in kept}
        for path in placed:
            if path not in keep_data:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _remove_old_data(self, candidates: set[Path]) -> None:
        """Remove the data files only the replaced models used (named as this module names them)."""
        keep = {m.data_target for m in self._models if m.data_target is not None}
        for path in sorted(candidates):
            ours = any(
                path.name == f"{m.target.name}.data"
                or (
                    path.name.startswith(m.target.name)
                    and _TOKEN_DATA.fullmatch(path.name[len(m.target.name) :])
                )
                for m in self._models
                if m.target.parent.resolve() == path.parent.resolve()
            )
            if not ours:
                logger.info("left %s in place: not a data file this tool names", path)
                continue
            if any(_same_file(path, k) for k in keep) or any(
                _same_file(path, p) for p in self.protect
            ):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                logger.debug("removed the replaced model's data %s", path)

    def abort(self) -> None:
        """Remove the staging folders (and so every staged file that was not committed)."""
        for folder in self._folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        self._folders.clear()
        if not self.committed:
            self._models.clear()
            self._files.clear()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None or not self.committed:
            self.abort()


def _block_signals() -> set[int] | None:
    """Hold SIGINT/SIGTERM during the renames so a commit is never cut in half (delivered after)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _unblock_signals(previous: set[int] | None) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _uses_external_data(model: ir.Model) -> bool:
    return next(external_tensors(model), None) is not None


def save(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    size_threshold_bytes: int = 1024,
) -> list[Path]:
    """Write ``model`` to ``path`` atomically and return the files written (model, then its data).

    See :class:`Transaction`: the weights go to a data file only the new model names, bytes of
    unchanged external tensors are copied file to file by the kernel (never read into Python),
    and the model is renamed into place last. ``external_data=None`` keeps weights external when
    the model had external data or its initializers exceed 1 GiB.
    """
    path = Path(path)
    protect = [Path(t.base_dir) / t.location for _, t in external_tensors(model)]
    with Transaction(protect=protect) as tx:
        tx.add_model(
            model, path, external_data=external_data, size_threshold_bytes=size_threshold_bytes
        )
        return tx.commit()
