"""The Huawei ATC command line for a written model.

ATC (Ascend Tensor Compiler) turns an ONNX model into an ``.om`` for a given SoC. It needs every
input's shape in ``--input_shape`` (``"x:1,3,224,224;s:"``), ``--framework=5`` for ONNX, and
``--soc_version``. Dynamic batch "gears" are one alternative to one model per batch size:
``--input_shape`` marks dim 0 as ``-1`` and ``--dynamic_batch_size="1,4,8"`` lists the sizes.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Sequence
from typing import Any
from pathlib import Path

import onnx_ir as ir

from surgery.shapes.infer import is_known_dim
from surgery.shapes.spec import format_atc_shapes

__all__ = [
    "AtcCommand",
    "atc_command",
    "dynamic_batch_command",
    "report_atc_commands",
    "input_shapes",
    "input_format",
    "SOC_PLACEHOLDER",
]

#: Shown when no ``--soc-version`` was given; ATC rejects it, so it cannot be run by mistake.
SOC_PLACEHOLDER = "<SOC_VERSION e.g. Ascend310P3>"

_FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE, ir.DataType.UINT8}


@dataclasses.dataclass(frozen=True)
class AtcCommand:
    """One ``atc`` invocation."""

    model: str
    output: str
    input_shape: str
    input_format: str
    soc_version: str
    dynamic_batch_size: str | None = None
    dynamic_inputs: tuple[str, ...] = ()
    """Inputs that still had a dynamic dim (shown as -1): ATC will refuse them without gears."""

    def argv(self) -> list[str]:
        args = [
            "atc",
            f"--model={self.model}",
            "--framework=5",
            f"--output={self.output}",
            f"--input_format={self.input_format}",
            f"--input_shape={self.input_shape}",
        ]
        if self.dynamic_batch_size:
            args.append(f"--dynamic_batch_size={self.dynamic_batch_size}")
        args.append(f"--soc_version={self.soc_version}")
        return args

    def line(self) -> str:
        return shlex.join(self.argv())

    def to_dict(self) -> dict[str, object]:
        return {
            "command": self.line(),
            "argv": self.argv(),
            "model": self.model,
            "output": self.output,
            "input_shape": self.input_shape,
            "input_format": self.input_format,
            "soc_version": self.soc_version,
            "dynamic_batch_size": self.dynamic_batch_size,
            "dynamic_inputs": list(self.dynamic_inputs),
        }


def _real_inputs(model: ir.Model) -> list[ir.Value]:
    inits = model.graph.initializers
    return [v for v in model.graph.inputs if v.name not in inits]


def input_shapes(model: ir.Model) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Each real input's shape, ``-1`` for a dim that is not static; and the inputs with such dims."""
    shapes: dict[str, tuple[int, ...]] = {}
    dynamic: list[str] = []
    for value in _real_inputs(model):
        if value.shape is None:
            shapes[value.name] = ()
            dynamic.append(value.name)
            continue
        dims = tuple(int(d) if is_known_dim(d) else -1 for d in value.shape)
        if -1 in dims:
            dynamic.append(value.name)
        shapes[value.name] = dims
    return shapes, dynamic


def input_format(model: ir.Model) -> str:
    """``NCHW`` when an input is a 4-D image tensor, else ``ND``."""
    for value in _real_inputs(model):
        if value.shape is not None and len(value.shape) == 4 and value.dtype in _FLOAT_TYPES:
            return "NCHW"
    return "ND"


def _om_stem(path: str | os.PathLike) -> str:
    p = Path(path)
    return str(p.with_suffix("")) if p.suffix == ".onnx" else str(p)


def atc_command(
    model: ir.Model,
    model_path: str | os.PathLike,
    *,
    soc_version: str | None = None,
    output: str | os.PathLike | None = None,
) -> AtcCommand:
    """The ``atc`` line that compiles ``model`` (as written at ``model_path``) to ``OUTPUT.om``."""
    shapes, dynamic = input_shapes(model)
    return AtcCommand(
        model=str(model_path),
        output=_om_stem(output if output is not None else model_path),
        input_shape=format_atc_shapes(shapes),
        input_format=input_format(model),
        soc_version=soc_version or SOC_PLACEHOLDER,
        dynamic_inputs=tuple(dynamic),
    )


def dynamic_batch_command(
    static_model: ir.Model,
    source_path: str | os.PathLike,
    batch_sizes: Sequence[int],
    *,
    soc_version: str | None = None,
    output: str | os.PathLike | None = None,
) -> AtcCommand:
    """The single-model alternative to per-batch buckets: dim 0 of every input as an ATC gear.

    ``static_model`` is one bucket's result (its other dims are the ones to use); ``source_path``
    is the model ATC should compile (one whose dim 0 is still dynamic).
    """
    shapes, _ = input_shapes(static_model)
    geared = {name: (-1, *dims[1:]) if dims else dims for name, dims in shapes.items()}
    return AtcCommand(
        model=str(source_path),
        output=_om_stem(output if output is not None else source_path) + "_dynamic_batch",
        input_shape=format_atc_shapes(geared),
        input_format=input_format(static_model),
        soc_version=soc_version or SOC_PLACEHOLDER,
        dynamic_batch_size=",".join(str(int(b)) for b in batch_sizes),
    )


def report_atc_commands(report: Any, model: ir.Model, output: str | os.PathLike, *, soc_version: str | None = None) -> list[AtcCommand]:
    """Put the ``atc`` line of every model a run wrote into ``report.extra["atc"]``.

    The main model is written at ``output``; ``ir.Model`` artifacts at ``report.artifacts[key]``.
    """
    commands = [atc_command(model, output, soc_version=soc_version)]
    for key, path in report.artifacts.items():
        extra = report.models.get(key)
        if isinstance(extra, ir.Model):
            commands.append(atc_command(extra, path, soc_version=soc_version))
    report.extra["atc"] = [c.to_dict() for c in commands]
    return commands
