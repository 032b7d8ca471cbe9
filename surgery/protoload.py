"""Reading a model file into a ``ModelProto`` and the checks that need nothing more than onnx.

:func:`read` is the first step of :func:`surgery.model_io.load`: the file checks, the protobuf
parse (weights left on disk) and the dependency-cycle check, in linear time over the protobuf's
names. It imports onnx only (not onnx-ir or numpy), so that a command given a model it must refuse
— a graph with a cycle, a truncated file — refuses it before paying for the rest (``surgery
doctor`` on a 20 000-node cyclic graph exits 2 without converting it to onnx-ir).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from surgery.cycles import cycle_among
from surgery.errors import InputError

__all__ = ["check_proto_acyclic", "cycle_message", "find_proto_cycle", "quick_cycle_check", "read"]

#: Files above this size are left to onnx by :func:`quick_cycle_check`: weights held inline, or so many
#: nodes that scanning them in Python would cost about as much as the import it saves.
QUICK_SCAN_LIMIT = 4 << 20


def read(path: str | os.PathLike) -> Any:
    """The ``onnx.ModelProto`` in ``path`` (external data not loaded), refused when unusable.

    Raises:
        InputError: a missing, empty, unreadable, truncated or non-ONNX file, or a graph with a cycle.
    """
    import onnx
    from google.protobuf.message import DecodeError

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
        raise InputError(
            f"{path}: not a valid ONNX model (truncated or corrupt protobuf: {exc})"
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the model: {exc}") from None
    except Exception as exc:
        raise InputError(f"{path}: not a valid ONNX model: {type(exc).__name__}: {exc}") from None
    check_proto_acyclic(proto, path)
    return proto


def cycle_message(where: object, cycle: list[tuple[str, str]]) -> str:
    """The one line naming the nodes of a cycle (the first repeated at the end)."""
    parts = [f"'{name or '?'}' ({op})" for name, op in cycle]
    if len(parts) > 8:
        parts = [*parts[:4], "...", *parts[-3:]]
    return f"{where}: the graph has a cycle: {' -> '.join(parts)}; an ONNX graph must be acyclic"


def check_proto_acyclic(proto: Any, where: object) -> None:
    """Refuse a proto whose main graph, a subgraph or a function body has a dependency cycle.

    Raises:
        InputError: naming the nodes on one cycle (see :func:`cycle_message`).
    """
    for nodes in _node_lists(proto):
        cycle = find_proto_cycle(nodes)
        if cycle:
            raise InputError(cycle_message(where, cycle))


def _node_lists(proto: Any) -> Iterator[Any]:
    """The node list of the main graph, of every function and of every nested subgraph."""
    stack = [proto.graph.node] + [f.node for f in proto.functions]
    while stack:
        nodes = stack.pop()
        yield nodes
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append(attr.g.node)
                stack.extend(g.node for g in attr.graphs)


def _subgraphs(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def _outer_reads(graph: Any) -> set[str]:
    """Names a subgraph (and the subgraphs inside it) reads from enclosing scopes."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    reads: set[str] = set()
    for node in graph.node:
        defined.update(node.output)
    for node in graph.node:
        reads.update(node.input)
        for sub in _subgraphs(node):
            reads |= _outer_reads(sub)
    reads.discard("")
    return reads - defined


def find_proto_cycle(nodes: Any) -> list[tuple[str, str]] | None:
    """A dependency cycle among protobuf ``nodes`` as ``(name, op_type)`` pairs, or None.

    The same check as :func:`surgery.graph.find_cycle` (:func:`surgery.cycles.cycle_among`; outer-scope
    reads of subgraphs count as inputs), on names: a node depends on the node that
    produces each name it reads. The cycle starts at the node that comes first in the graph.
    """
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                if (
                    out in producer
                ):  # a name produced twice: model_io.check_proto names it, not a cycle
                    return None
                producer[out] = i
    deps: list[set[int]] = []
    for node in nodes:
        names: Any = node.input
        if len(node.attribute):
            extra: set[str] = set()
            for sub in _subgraphs(node):
                extra |= _outer_reads(sub)
            if extra:
                names = [*node.input, *sorted(extra)]
        deps.append({j for name in names if (j := producer.get(name)) is not None})
    cycle = cycle_among(deps)
    return None if cycle is None else [(nodes[k].name, nodes[k].op_type) for k in cycle]


# -- a cycle check before onnx is imported ------------------------------------------------------
# Importing onnx costs more than finding a cycle among 20 000 nodes; doctor, asked about a model it
# must refuse, should not pay for it. The scan below reads only what the check needs from the
# protobuf wire format (ModelProto.graph = 7, GraphProto.node = 1; NodeProto input 1, output 2,
# name 3, op_type 4, attribute 5; AttributeProto g 6, graphs 11). It gives up (and leaves the
# check to :func:`read`) on anything it does not expect: a subgraph, a group, a malformed length.


class _Scanned:
    __slots__ = ("attribute", "input", "name", "op_type", "output")

    def __init__(self) -> None:
        self.input: list[str] = []
        self.output: list[str] = []
        self.name = ""
        self.op_type = ""
        self.attribute = ()


class _GiveUp(Exception):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _GiveUp
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field in ``buf[start:end]`` (end = value for varints)."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield field, wire, value, value
            continue
        if wire == 2:
            length, i = _varint(buf, i)
            j = i + length
        elif wire == 1:
            j = i + 8
        elif wire == 5:
            j = i + 4
        else:  # groups: not in ONNX files
            raise _GiveUp
        if j > end:
            raise _GiveUp
        yield field, wire, i, j
        i = j


def _text(buf: bytes, a: int, b: int) -> str:
    return buf[a:b].decode("utf-8", errors="backslashreplace")


def _scan_node(buf: bytes, i: int, end: int) -> _Scanned:
    """One NodeProto in ``buf[i:end]``; the common case (1-byte keys and lengths) read inline."""
    node = _Scanned()
    while i < end:
        key = buf[i]
        if key >= 0x80:
            key, i = _varint(buf, i)
        else:
            i += 1
        wire = key & 7
        if wire != 2:  # no scalar field of NodeProto matters here: skip it
            if wire == 0:
                i = _varint(buf, i)[1]
            elif wire in (1, 5):
                i += 8 if wire == 1 else 4
            else:
                raise _GiveUp
            continue
        length = buf[i] if i < end else 0x80
        if length < 0x80:
            i += 1
        else:
            length, i = _varint(buf, i)
        j = i + length
        if j > end:
            raise _GiveUp
        field = key >> 3
        if field == 1:
            node.input.append(buf[i:j].decode("utf-8", errors="backslashreplace"))
        elif field == 2:
            node.output.append(buf[i:j].decode("utf-8", errors="backslashreplace"))
        elif field == 3:
            node.name = buf[i:j].decode("utf-8", errors="backslashreplace")
        elif field == 4:
            node.op_type = buf[i:j].decode("utf-8", errors="backslashreplace")
        elif field == 5 and any(f in (6, 11) for f, _w, _a, _b in _fields(buf, i, j)):
            raise _GiveUp  # a subgraph reads outer names: leave it to the full check
        i = j
    return node


def _scan_main_graph(buf: bytes) -> list[_Scanned]:
    nodes: list[_Scanned] = []
    for field, wire, a, b in _fields(buf, 0, len(buf)):
        if field != 7 or wire != 2:
            continue
        for gfield, gwire, ga, gb in _fields(buf, a, b):
            if gfield == 1 and gwire == 2:
                nodes.append(_scan_node(buf, ga, gb))
    return nodes


def quick_cycle_check(path: str | os.PathLike) -> None:
    """Refuse a main graph with a cycle without importing onnx (see the comment above).

    Does nothing when the file is missing, large or holds what the scan does not read; the full
    check in :func:`read` still runs.

    Raises:
        InputError: the same one line as :func:`check_proto_acyclic`.
    """
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > QUICK_SCAN_LIMIT:
            return
        buf = path.read_bytes()
        nodes = _scan_main_graph(buf)
    except (OSError, _GiveUp, IndexError):
        return
    cycle = find_proto_cycle(nodes)
    if cycle:
        raise InputError(cycle_message(path, cycle))
