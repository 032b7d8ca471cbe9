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


def ort_run(
    model: onnx.ModelProto | ir.Model | str, feeds: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Outputs of ``model`` in ONNX Runtime, by output name."""
    if isinstance(model, str):
        model = ir.load(model)
    return run_model(to_ir(model), feeds, prepack=True)  # what ORT computes by default


def op_counts(
    model: onnx.ModelProto | ir.Model, *, functions: bool = True
) -> collections.Counter[str]:
    """Op type histogram over every graph (subgraphs and, by default, functions)."""
    counts: collections.Counter[str] = collections.Counter()
    for graph in iter_graphs(to_ir(model), functions=functions):
        for node in graph:
            counts[node.op_type] += 1
    return counts


def node_names(model: onnx.ModelProto | ir.Model) -> set[str]:
    return {n.name for g in iter_graphs(to_ir(model)) for n in g if n.name}


def assert_close(
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray],
    rtol: float = 1e-5,
    atol: float = 1e-6,
    names: Iterable[str] | None = None,
) -> None:
    for key in names if names is not None else b:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _json_type_ok(value: object, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _JSON_TYPES[name])


def report_schema() -> dict:
    """The JSON Schema of the run report, as shipped in the package (``surgery/data/report.schema.json``)."""
    import json
    from importlib import resources

    return json.loads(
        resources.files("surgery").joinpath("data/report.schema.json").read_text(encoding="utf-8")
    )


def schema_errors(
    value: object, schema: dict | None = None, *, root: dict | None = None, where: str = "$"
) -> list[str]:
    """Every way ``value`` breaks ``schema`` (default: the report schema), one line each.

    Covers the subset of JSON Schema the report schema uses: ``type`` (one or a list), ``required``,
    ``properties``, ``items``, ``enum``, ``additionalProperties`` (false or a schema) and local
    ``$ref`` (``#`` and ``#/$defs/NAME``); jsonschema is not a dependency.
    """
    schema = report_schema() if schema is None else schema
    root = schema if root is None else root
    if "$ref" in schema:
        node: object = root
        for part in [p for p in schema["$ref"].lstrip("#").split("/") if p]:
            node = node[part]  # type: ignore[index]
        return schema_errors(value, node, root=root, where=where)  # type: ignore[arg-type]
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_json_type_ok(value, n) for n in names):
            return [f"{where}: {type(value).__name__} is not {'/'.join(names)}"]
    out: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} not one of {schema['enum']}")
    if isinstance(value, dict):
        out += [
            f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in value
        ]
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                out += schema_errors(item, props[key], root=root, where=f"{where}.{key}")
            elif extra is False:
                out.append(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                out += schema_errors(item, extra, root=root, where=f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += schema_errors(item, schema["items"], root=root, where=f"{where}[{i}]")
    return out
