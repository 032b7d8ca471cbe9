"""ONNX operator schemas as rules and dtype passes need them.

Thin, cached wrappers over ``onnx.defs``: the schema an op resolves to at a given opset, attribute
values with schema defaults filled in, and which inputs/outputs bind which type variable (so a
dtype pass knows that ``Reshape``'s ``shape`` is always int64 while its ``data`` follows ``T``).
"""

from __future__ import annotations

import functools
from typing import Any

import onnx
import onnx_ir as ir
from onnx import defs

from surgery.graph import is_onnx_domain

__all__ = [
    "TypeBinding",
    "allowed_types",
    "attr_default",
    "attr_value",
    "get_schema",
    "opset_of",
    "since_version",
    "type_bindings",
]


def _domain(domain: str) -> str:
    return "" if is_onnx_domain(domain) else domain


@functools.lru_cache(maxsize=4096)
def get_schema(op_type: str, version: int, domain: str = "") -> defs.OpSchema | None:
    """The schema ``op_type`` resolves to in opset ``version`` of ``domain``, or None."""
    try:
        return defs.get_schema(op_type, max_inclusive_version=version, domain=_domain(domain))
    except defs.SchemaError:
        return None


def since_version(op_type: str, version: int, domain: str = "") -> int | None:
    """The ``since_version`` of the schema ``op_type`` resolves to at ``version`` (None if none)."""
    schema = get_schema(op_type, version, domain)
    return schema.since_version if schema is not None else None


@functools.lru_cache(maxsize=4096)
def _attr_default(op_type: str, name: str, version: int, domain: str) -> Any:
    schema = get_schema(op_type, version, domain)
    if schema is None or name not in schema.attributes:
        return None
    proto = schema.attributes[name].default_value
    if proto is None or proto.type == onnx.AttributeProto.UNDEFINED:
        return None
    value = onnx.helper.get_attribute_value(proto)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return tuple(value)
    return value


def attr_default(op_type: str, name: str, version: int, domain: str = "") -> Any:
    """The schema default of attribute ``name`` (strings decoded, lists as tuples), else None."""
    return _attr_default(op_type, name, version, _domain(domain))


def _plain(attr: ir.Attr) -> Any:
    value = attr.value
    if attr.type in (ir.AttributeType.INTS, ir.AttributeType.FLOATS, ir.AttributeType.STRINGS):
        return tuple(value)
    return value


def attr_value(node: ir.Node, name: str, version: int | None = None, default: Any = None) -> Any:
    """The value of attribute ``name`` of ``node``, else the schema default, else ``default``.

    Lists come back as tuples. ``version`` is the opset the node lives in (for schema defaults).
    """
    attr = node.attributes.get(name)
    if attr is not None and not attr.is_ref():
        return _plain(attr)
    if version is not None:
        found = attr_default(node.op_type, name, version, node.domain)
        if found is not None:
            return found
    return default


def opset_of(imports: dict[str, int] | Any, domain: str = "") -> int | None:
    """The version a graph's opset imports give ``domain`` (``""`` and ``ai.onnx`` are one)."""
    domain = _domain(domain)
    if domain in imports:
        return int(imports[domain])
    if domain == "" and "ai.onnx" in imports:
        return int(imports["ai.onnx"])
    return None


class TypeBinding:
    """For one node: the type variable (or fixed type set) of each input and output.

    ``inputs[i]``/``outputs[i]`` is ``(type_str, allowed)`` where ``type_str`` is the schema's
    type string (``"T"`` or ``"tensor(int64)"``) and ``allowed`` the set of ``ir.DataType``s it
    admits (empty when the schema allows non-tensor types only).
    """

    def __init__(self, schema: defs.OpSchema, num_inputs: int, num_outputs: int) -> None:
        constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}

        def expand(
            params: list[defs.OpSchema.FormalParameter], count: int
        ) -> list[tuple[str, frozenset]]:
            out: list[tuple[str, frozenset]] = []
            for i in range(count):
                if not params:
                    break
                param = params[min(i, len(params) - 1)]
                if (
                    i >= len(params)
                    and param.option != defs.OpSchema.FormalParameterOption.Variadic
                ):
                    break
                type_str = param.type_str
                allowed = constraints.get(type_str, [type_str])
                out.append((type_str, frozenset(_dtypes(allowed))))
            return out

        self.inputs = expand(list(schema.inputs), num_inputs)
        self.outputs = expand(list(schema.outputs), num_outputs)

    def is_generic_input(self, index: int) -> bool:
        return index < len(self.inputs) and not self.inputs[index][0].startswith("tensor(")


def _dtypes(type_strs: Any) -> list[ir.DataType]:
    found = []
    for s in type_strs:
        if s.startswith("tensor(") and s.endswith(")"):
            dtype = _NAMED.get(s[len("tensor(") : -1])
            if dtype is not None:
                found.append(dtype)
    return found


_NAMED = {
    "float": ir.DataType.FLOAT,
    "double": ir.DataType.DOUBLE,
    "float16": ir.DataType.FLOAT16,
    "bfloat16": ir.DataType.BFLOAT16,
    "int8": ir.DataType.INT8,
    "int16": ir.DataType.INT16,
    "int32": ir.DataType.INT32,
    "int64": ir.DataType.INT64,
    "uint8": ir.DataType.UINT8,
    "uint16": ir.DataType.UINT16,
    "uint32": ir.DataType.UINT32,
    "uint64": ir.DataType.UINT64,
    "bool": ir.DataType.BOOL,
    "string": ir.DataType.STRING,
    "complex64": ir.DataType.COMPLEX64,
    "complex128": ir.DataType.COMPLEX128,
    "float8e4m3fn": ir.DataType.FLOAT8E4M3FN,
    "float8e4m3fnuz": ir.DataType.FLOAT8E4M3FNUZ,
    "float8e5m2": ir.DataType.FLOAT8E5M2,
    "float8e5m2fnuz": ir.DataType.FLOAT8E5M2FNUZ,
    "uint4": ir.DataType.UINT4,
    "int4": ir.DataType.INT4,
}


@functools.lru_cache(maxsize=4096)
def _bindings(
    op_type: str, version: int, domain: str, num_inputs: int, num_outputs: int
) -> TypeBinding | None:
    schema = get_schema(op_type, version, domain)
    if schema is None:
        return None
    return TypeBinding(schema, num_inputs, num_outputs)


def type_bindings(node: ir.Node, version: int) -> TypeBinding | None:
    """The :class:`TypeBinding` of ``node`` in opset ``version`` (None for unknown ops)."""
    return _bindings(
        node.op_type, version, _domain(node.domain), len(node.inputs), len(node.outputs)
    )


def allowed_types(op_type: str, version: int, domain: str = "") -> dict[str, frozenset]:
    """Map each type parameter of the schema to the set of ``ir.DataType``s it admits."""
    schema = get_schema(op_type, version, domain)
    if schema is None:
        return {}
    return {
        c.type_param_str: frozenset(_dtypes(c.allowed_type_strs)) for c in schema.type_constraints
    }
