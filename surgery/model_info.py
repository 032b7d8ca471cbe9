"""A model's vital signs, for ``surgery check``: checker, ORT load, I/O, dynamic dims, opsets, ops."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any

import onnx_ir as ir

from surgery import model_io
from surgery.errors import one_line
from surgery.graph import is_onnx_domain, iter_graphs
from surgery.instruments import checker
from surgery.shapes.dims import dynamic_dims, shape_text

__all__ = ["ModelInfo", "inspect_model"]


def _shape(value: ir.Value) -> str:
    return "?" if value.shape is None else shape_text(value.shape)


@dataclasses.dataclass
class ModelInfo:
    path: str
    ir_version: int
    opsets: dict[str, int]
    inputs: list[tuple[str, str, str]]
    outputs: list[tuple[str, str, str]]
    checker: str
    ort: str
    dynamic_dims: int
    ops: dict[str, int]
    functions: int
    initializer_bytes: int

    @property
    def ok(self) -> bool:
        return self.checker == "ok" and self.ort == "ok"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        return d

    def text(self) -> str:
        lines = [
            f"model: {self.path}",
            f"ir_version: {self.ir_version}",
            "opsets: " + ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(self.opsets.items())),
            f"checker (full): {self.checker}",
            f"onnxruntime load: {self.ort}",
            "inputs:",
        ]
        lines += [f"  {n}: {t} {s}" for n, t, s in self.inputs]
        lines.append("outputs:")
        lines += [f"  {n}: {t} {s}" for n, t, s in self.outputs]
        lines.append(f"dynamic dims: {self.dynamic_dims}")
        lines.append(f"model-local functions: {self.functions}")
        lines.append(f"weights: {self.initializer_bytes} bytes")
        lines.append(
            "ops: "
            + ", ".join(
                f"{op} {n}" for op, n in sorted(self.ops.items(), key=lambda kv: (-kv[1], kv[0]))
            )
        )
        return "\n".join(
            one_line(line) for line in lines
        )  # names from the model: one printable line each


def inspect_model(path: str | Path) -> ModelInfo:
    model = model_io.load(path)
    light = model_io.LightProto(model)
    outcome = checker.check(light, full=True)
    from surgery.instruments.parity import ORT_ERRORS
    from surgery.verify.ort import OrtSession

    try:
        OrtSession(light).close()
        ort_status = "ok"
    except ORT_ERRORS as exc:
        ort_status = "FAILED: " + str(exc).strip().splitlines()[0][:300]
    ops: collections.Counter[str] = collections.Counter()
    for graph in iter_graphs(model):
        for node in graph:
            ops[(node.domain + "::" if not is_onnx_domain(node.domain) else "") + node.op_type] += 1
    return ModelInfo(
        path=str(path),
        ir_version=model.ir_version,
        opsets=dict(model.opset_imports),
        inputs=[
            (v.name or "", str(v.dtype) if v.dtype else "?", _shape(v)) for v in model.graph.inputs
        ],
        outputs=[
            (v.name or "", str(v.dtype) if v.dtype else "?", _shape(v)) for v in model.graph.outputs
        ],
        checker="ok" if outcome else f"FAILED: {outcome.message}",
        ort=ort_status,
        dynamic_dims=dynamic_dims(model),
        ops=dict(ops),
        functions=len(model.functions),
        initializer_bytes=model_io.initializer_bytes(model),
    )
