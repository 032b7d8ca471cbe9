"""Independent checks of a rewritten model: none of this imports ``surgery``.

The zoo judges onnx-surgery (and its peers) from outside, with onnx, ONNX Runtime and OpenVINO
only, so a bug in the tool's own gates cannot hide a bug in its output. Every check returns a
``(ok, detail)`` pair; ``detail`` is one line saying what was wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

CONTROL_FLOW = {"If", "Loop", "Scan"}
MAX_OPSET = 18


def _graphs(graph: onnx.GraphProto):
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _all_graphs(model: onnx.ModelProto):
    yield from _graphs(model.graph)
    for function in model.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from _graphs(attr.g)


def node_count(model: onnx.ModelProto) -> int:
    """Nodes in the main graph, its subgraphs and the model-local functions."""
    return sum(len(g.node) for g in _all_graphs(model)) + sum(len(f.node) for f in model.functions)


def op_histogram(model: onnx.ModelProto, *, standard_only: bool = False) -> dict[str, int]:
    ops: dict[str, int] = {}
    nodes = [n for g in _all_graphs(model) for n in g.node] + [
        n for f in model.functions for n in f.node
    ]
    for n in nodes:
        if standard_only and n.domain not in ("", "ai.onnx"):
            continue
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ops


def check_checker(path: Path) -> tuple[bool, str]:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - any checker failure is a failed row
        return False, _line(exc)
    return True, ""


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_ort(path: Path) -> tuple[bool, str]:
    try:
        ort_session(path)
    except Exception as exc:  # noqa: BLE001
        return False, _line(exc)
    return True, ""


def _dims_static(type_proto: onnx.TypeProto) -> bool:
    if not type_proto.HasField("tensor_type"):
        return (
            type_proto.HasField("sequence_type") is False
            and type_proto.HasField("map_type") is False
        )
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return False
    return all(d.HasField("dim_value") and d.dim_value >= 0 for d in tensor.shape.dim)


def check_static(model: onnx.ModelProto) -> tuple[bool, str]:
    """Every input, output and intermediate tensor has a fully known shape after onnx's own
    ``infer_shapes(data_prop=True)`` (annotations the model carries are not trusted: they are
    replaced by a fresh inference where it can tell)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=False, strict_mode=False, data_prop=True
        )
    except Exception as exc:  # noqa: BLE001
        return False, "infer_shapes: " + _line(exc)
    dynamic: list[str] = []
    for graph in _graphs(inferred.graph):
        produced = {o for n in graph.node for o in n.output if o}
        known = {v.name: v for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
        for name in (
            [i.name for i in graph.input] + [o.name for o in graph.output] + sorted(produced)
        ):
            value = known.get(name)
            if value is None or not _dims_static(value.type):
                dynamic.append(name)
    if dynamic:
        return False, f"{len(dynamic)} tensor(s) not static, e.g. {dynamic[0]!r}"
    return True, ""


def check_no_control_flow(model: onnx.ModelProto) -> tuple[bool, str]:
    found = {op: n for op, n in op_histogram(model).items() if op in CONTROL_FLOW}
    if found:
        return False, ", ".join(f"{n} {op}" for op, n in sorted(found.items()))
    return True, ""


def check_opset(model: onnx.ModelProto) -> tuple[bool, str]:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > MAX_OPSET:
            return False, f"ai.onnx opset {entry.version} > {MAX_OPSET}"
    return True, ""


#: Domains of ONNX Runtime's contrib ops (fused by the ORT optimizer some peers run): no ONNX
#: compiler (ATC's parser registers ai.onnx ops only) takes them.
ORT_DOMAINS = ("com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc")


def newer_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Ops of ``model`` a target limited to ai.onnx opsets <= MAX_OPSET cannot take, with their
    counts: standard ops no such opset has (e.g. Gelu, opset 20; Attention, opset 23) and ONNX
    Runtime contrib ops (``com.microsoft.Attention``). A peer that keeps them has fewer nodes than
    a model the target (ATC: opsets 8-18) can take, where each must be written with older ops."""
    found: dict[str, int] = {}
    nodes = [n for g in _all_graphs(model) for n in g.node] + [
        n for f in model.functions for n in f.node
    ]
    for n in nodes:
        if n.domain in ORT_DOMAINS:
            key = f"{n.domain}.{n.op_type}"
        elif n.domain in ("", "ai.onnx") and onnx.defs.has(n.op_type):
            try:
                onnx.defs.get_schema(n.op_type, MAX_OPSET, "")
                continue
            except onnx.defs.SchemaError:
                key = n.op_type
        else:
            continue
        found[key] = found.get(key, 0) + 1
    return found


def check_no_float64(model: onnx.ModelProto) -> tuple[bool, str]:
    double = onnx.TensorProto.DOUBLE
    for graph in _all_graphs(model):
        for init in graph.initializer:
            if init.data_type == double:
                return False, f"float64 initializer {init.name!r}"
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            if value.type.tensor_type.elem_type == double:
                return False, f"float64 tensor {value.name!r}"
        for node in graph.node:
            for attr in node.attribute:
                if (
                    node.op_type in ("Cast", "CastLike", "RandomNormal", "RandomUniform", "EyeLike")
                    and attr.name in ("to", "dtype")
                    and attr.i == double
                ):
                    return False, f"{node.op_type} to float64 ({node.name or node.output[0]})"
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == double:
                    return False, f"float64 constant ({node.name or node.output[0]})"
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
        for value in inferred.graph.value_info:
            if value.type.tensor_type.elem_type == double:
                return False, f"float64 tensor {value.name!r}"
    except Exception:  # noqa: BLE001, S110 - the static check reports inference failures
        pass
    return True, ""


def run_ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort_session(path)
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise KeyError(f"no sample for input {missing[0]!r}")
    outputs = session.run(None, {n: feeds[n] for n in names})
    return {o.name: v for o, v in zip(session.get_outputs(), outputs, strict=True)}


def compare(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], rtol: float, atol: float
) -> tuple[bool, str]:
    """Outputs of the same names must have the same shape and agree within rtol/atol."""
    if set(reference) != set(candidate):
        return False, f"outputs differ: {sorted(reference)} vs {sorted(candidate)}"
    worst = ""
    for name, ref in reference.items():
        got = np.asarray(candidate[name])
        ref = np.asarray(ref)
        if ref.shape != got.shape:
            return False, f"{name!r}: shape {list(got.shape)} != {list(ref.shape)}"
        if ref.dtype.kind in "fc":
            if not np.allclose(
                got.astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True
            ):
                diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
                return (
                    False,
                    f"{name!r}: max |diff| {float(np.nanmax(diff)):.3g} (rtol {rtol}, atol {atol})",
                )
        elif not np.array_equal(got, ref):
            return False, f"{name!r}: {int(np.sum(got != ref))} element(s) differ"
    return True, worst


def check_parity(
    original: Path | dict[str, np.ndarray],
    candidate: Path,
    feeds: dict[str, np.ndarray],
    rtol: float,
    atol: float,
) -> tuple[bool, str]:
    """``original`` is the original model's path, or its outputs on ``feeds`` computed once."""
    try:
        ref = original if isinstance(original, dict) else run_ort(original, feeds)
        got = run_ort(candidate, feeds)
    except Exception as exc:  # noqa: BLE001
        return False, _line(exc)
    return compare(ref, got, rtol, atol)


def check_split_parity(
    original: Path | dict[str, np.ndarray],
    head: Path,
    tail: Path,
    feeds: dict[str, np.ndarray],
    rtol: float,
    atol: float,
) -> tuple[bool, str]:
    """A model split into a head (for the compiler) and a CPU tail: run the head, then the tail on
    the head's outputs and the graph inputs it reads, and compare the original's outputs (each
    from whichever part computes it) with the original's."""
    try:
        ref = original if isinstance(original, dict) else run_ort(original, feeds)
        values: dict[str, np.ndarray] = dict(feeds)
        values.update(run_ort(head, feeds))
        values.update(run_ort(tail, values))
    except Exception as exc:  # noqa: BLE001
        return False, "head then tail: " + _line(exc)
    return compare(ref, {name: values[name] for name in ref if name in values}, rtol, atol)


def check_openvino(
    path: Path, feeds: dict[str, np.ndarray], rtol: float, atol: float
) -> tuple[tuple[bool, str], tuple[bool, str]]:
    """OpenVINO's ONNX frontend as a second shape inference: every op output static, and its CPU
    result equal to ONNX Runtime's on the same sample."""
    try:
        import openvino as ov
    except ImportError:
        return (False, "openvino not installed"), (False, "openvino not installed")
    try:
        model = ov.convert_model(str(path))
    except Exception as exc:  # noqa: BLE001
        failed = (False, "convert_model: " + _line(exc))
        return failed, failed
    dynamic = []
    for op in model.get_ordered_ops():
        for i in range(op.get_output_size()):
            if not op.get_output_partial_shape(i).is_static:
                dynamic.append(
                    f"{op.get_type_name()} {op.get_friendly_name()}: {op.get_output_partial_shape(i)}"
                )
    static = (
        not dynamic,
        f"{len(dynamic)} dynamic output(s), e.g. {dynamic[0]}" if dynamic else "",
    )
    try:
        core = ov.Core()
        compiled = core.compile_model(
            model, "CPU", {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}
        )
        request = compiled.create_infer_request()
        # a port carries every name of its tensor (OpenVINO merges the names of folded tensors)
        inputs = {}
        for port in compiled.inputs:
            name = next((n for n in port.get_names() if n in feeds), port.get_any_name())
            inputs[port.get_any_name()] = feeds[name]
        result = request.infer(inputs)
        ref = run_ort(path, feeds)
        got = {}
        for port, value in result.items():
            for name in port.get_names():
                if name in ref:
                    got[name] = np.asarray(value)
        match = compare(ref, got, rtol, atol)
    except Exception as exc:  # noqa: BLE001
        match = (False, _line(exc))
    return static, match


def static_readiness(
    original: Path | dict[str, np.ndarray],
    candidate: Path,
    feeds: dict[str, np.ndarray],
    rtol: float,
    atol: float,
    tail: Path | None = None,
) -> dict[str, Any]:
    """The checks every tool's output is judged by (onnx-surgery's and the peers').

    ``original`` is the original model's path or its outputs on ``feeds`` (computed once per row).
    With ``tail`` the candidate is the head of a split (what the compiler gets): it is judged
    alone, and parity is head then tail against the original."""
    result: dict[str, Any] = {}
    result["checker"] = check_checker(candidate)
    result["ort"] = check_ort(candidate)
    try:
        model = onnx.load(str(candidate))
    except Exception as exc:  # noqa: BLE001
        failed = (False, _line(exc))
        for key in ("static", "no_cf", "opset", "no_f64", "parity"):
            result[key] = failed
        result["nodes"] = None
        return result
    result["static"] = check_static(model)
    result["no_cf"] = check_no_control_flow(model)
    result["opset"] = check_opset(model)
    result["no_f64"] = check_no_float64(model)
    if not result["ort"][0]:
        result["parity"] = (False, "no ORT session")
    elif tail is not None:
        result["parity"] = check_split_parity(original, candidate, tail, feeds, rtol, atol)
    else:
        result["parity"] = check_parity(original, candidate, feeds, rtol, atol)
    result["nodes"] = node_count(model)
    result["newer_ops"] = newer_ops(model)
    return result


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = next((t for t in text if t.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {first.strip()[:200]}"
