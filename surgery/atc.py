"""The Huawei ATC command line for a written model, checked against ATC's documented rules.

ATC (Ascend Tensor Compiler) turns an ONNX model into an ``.om`` for a given SoC. It needs every
input's shape in ``--input_shape`` (``"x:1,3,224,224;s:"``: a scalar is ``name:``), ``--framework=5``
for ONNX, and ``--soc_version``. What this module gets right, and why (facts in
``shared/ascend/precision-and-semantics.md``):

- ``--input_format`` is one value for the whole model: ``NCHW`` only when an input is an image that
  feeds a convolution-like op (a 4-D spectrogram or a ``[B, T, H, D]`` tensor is ``ND``), and ``ND``
  whenever ``--dynamic_dims`` is used (ATC requires it).
- Gears: ``--dynamic_batch_size`` (dim 0 of every input is ``-1``) or ``--dynamic_dims`` (each profile
  gives a value for every ``-1`` across all inputs, in input order). Both need 2 to 100 profiles, are
  mutually exclusive, and ``--dynamic_dims`` cannot be combined with AIPP (``--insert_op_conf``).
- Shape ranges (``1~8``, ``-1``) are refused for Ascend310 and Ascend310B (static shapes or gears only);
  ``-1`` means "any value >= 1" on CANN 6.3/7.0 and ">= 0" from CANN 8.0.RC1, which the command notes.
- ``--out_nodes`` names the outputs (``node:index``) when a split head's outputs are not the original's.
- Precision flags: ``--precision_mode`` or ``--precision_mode_v2`` (never both) and ``--keep_dtype``.
- Tensor names are untrusted: the line is shell-quoted, and names ATC's own syntax cannot carry
  (``;``, ``,``, line breaks) are refused with one line instead of a wrong command.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx_ir as ir

from surgery.errors import InputError
from surgery.shapes.infer import is_known_dim

__all__ = [
    "MAX_PROFILES",
    "MIN_PROFILES",
    "SOC_PLACEHOLDER",
    "AtcCommand",
    "atc_command",
    "dynamic_batch_command",
    "dynamic_dims_command",
    "input_format",
    "input_roles",
    "input_shapes",
    "keep_dtype_path",
    "planned_keep_dtype",
    "precision_flags",
    "range_command",
    "report_atc_commands",
    "supports_ranges",
]


#: Shown when no ``--soc-version`` was given; ATC rejects it, so it cannot be run by mistake.
SOC_PLACEHOLDER = "<SOC_VERSION e.g. Ascend310P3>"
#: ``--dynamic_batch_size`` / ``--dynamic_dims`` take 2 to 100 profiles (canncommercial 850 atlasatcparam_16_0020).
MIN_PROFILES, MAX_PROFILES = 2, 100

_IMAGE_TYPES = {
    ir.DataType.FLOAT,
    ir.DataType.FLOAT16,
    ir.DataType.BFLOAT16,
    ir.DataType.DOUBLE,
    ir.DataType.UINT8,
}
#: Ops whose data input is laid out NCHW: an input reaching one of them (at input 0) is an image.
_CONV_LIKE = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "LpPool",
        "BatchNormalization",
        "InstanceNormalization",
        "DepthToSpace",
        "SpaceToDepth",
        "DeformConv",
        "LRN",
        "MaxRoiPool",
        "RoiAlign",
        "QLinearConv",
        "ConvInteger",
    }
)
#: Elementwise ops that keep the layout on the way from an input to the first convolution (normalization).
_LAYOUT_KEEPING = frozenset(
    {
        "Cast",
        "Identity",
        "Sub",
        "Add",
        "Mul",
        "Div",
        "Clip",
        "Relu",
        "Sigmoid",
        "Neg",
        "Abs",
        "Pad",
        "QuantizeLinear",
        "DequantizeLinear",
        "Sqrt",
        "Pow",
    }
)
#: Characters ATC's ``--input_shape``/``--out_nodes`` syntax uses between entries and dims, and line breaks.
#: (A ``:`` inside a name, as TensorFlow-derived models write ``input:0``, is left alone: the dims follow the
#: last one.)
_UNSAFE_NAME = re.compile(r"[;,\n\r\x00]")
_NO_RANGES = re.compile(r"^Ascend310(B\d*)?$")


@dataclasses.dataclass(frozen=True)
class AtcCommand:
    """One ``atc`` invocation."""

    model: str
    output: str
    input_shape: str
    input_format: str
    soc_version: str
    dynamic_batch_size: str | None = None
    dynamic_dims: str | None = None
    out_nodes: str | None = None
    precision: tuple[str, ...] = ()
    """Precision arguments, e.g. ``("--precision_mode=force_fp16", "--keep_dtype=keep.txt")``."""
    dynamic_inputs: tuple[str, ...] = ()
    """Inputs that still had a dynamic dim (shown as -1): ATC will refuse them without gears."""
    notes: tuple[str, ...] = ()

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
        if self.dynamic_dims:
            args.append(f"--dynamic_dims={self.dynamic_dims}")
        if self.out_nodes:
            args.append(f"--out_nodes={self.out_nodes}")
        args.extend(self.precision)
        args.append(f"--soc_version={self.soc_version}")
        return args

    def line(self) -> str:
        return shlex.join(self.argv())

    def with_precision(self, precision: Sequence[str]) -> AtcCommand:
        return dataclasses.replace(self, precision=tuple(precision))

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
            "dynamic_dims": self.dynamic_dims,
            "out_nodes": self.out_nodes,
            "precision": list(self.precision),
            "dynamic_inputs": list(self.dynamic_inputs),
            "notes": list(self.notes),
        }


def _real_inputs(model: ir.Model) -> list[ir.Value]:
    inits = model.graph.initializers
    return [v for v in model.graph.inputs if v.name not in inits]


def _check_name(name: str, what: str) -> str:
    if _UNSAFE_NAME.search(name):
        raise InputError(
            f"atc: {what} name {name!r} contains a character ATC's command syntax uses "
            "(';', ',' or a line break): rename it before compiling"
        )
    return name


def input_shapes(model: ir.Model) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Each real input's shape, ``-1`` for a dim that is not static; and the inputs with such dims."""
    shapes: dict[str, tuple[int, ...]] = {}
    dynamic: list[str] = []
    for value in _real_inputs(model):
        name = value.name or ""
        if value.shape is None:
            shapes[name] = ()
            dynamic.append(name)
            continue
        dims = tuple(int(d) if is_known_dim(d) else -1 for d in value.shape)
        if -1 in dims:
            dynamic.append(name)
        shapes[name] = dims
    return shapes, dynamic


def _format_shapes(shapes: Mapping[str, Sequence[int | str]]) -> str:
    for name in shapes:
        _check_name(name, "input")
    return ";".join(f"{name}:{','.join(str(d) for d in dims)}" for name, dims in shapes.items())


def input_roles(model: ir.Model) -> dict[str, str]:
    """``image`` for an input that reaches a convolution-like op's data input through layout-keeping
    elementwise ops (at most 16 hops), ``nd`` for every other input."""
    roles: dict[str, str] = {}
    for value in _real_inputs(model):
        role = "nd"
        if value.shape is not None and len(value.shape) == 4 and value.dtype in _IMAGE_TYPES:
            queue: deque[tuple[ir.Value, int]] = deque([(value, 0)])
            seen = {id(value)}
            while queue and role == "nd":
                current, hops = queue.popleft()
                for node, index in current.uses():
                    if node.op_type in _CONV_LIKE and index == 0:
                        role = "image"
                        break
                    if node.op_type in _LAYOUT_KEEPING and hops < 16:
                        for out in node.outputs:
                            if id(out) not in seen:
                                seen.add(id(out))
                                queue.append((out, hops + 1))
        roles[value.name or ""] = role
    return roles


def input_format(model: ir.Model) -> str:
    """``NCHW`` when an input is an image feeding a convolution-like op, else ``ND``."""
    return "NCHW" if "image" in input_roles(model).values() else "ND"


def supports_ranges(soc_version: str | None) -> bool:
    """False for Ascend310 and Ascend310B: only static shapes or gears compile there."""
    return not (soc_version and _NO_RANGES.match(soc_version))


def precision_flags(
    mode: str, keep_dtype: str | os.PathLike | None = None, *, v2: bool = False
) -> tuple[str, ...]:
    """``--precision_mode=...`` (or ``--precision_mode_v2=...``) and ``--keep_dtype=FILE``.

    ``mode`` is a v2 name (``fp16``, ``mixed_float16``, ``origin``) or an older ``--precision_mode``
    value. ``--keep_dtype`` has no effect with ``origin``/``must_keep_origin_dtype``: refused.
    """
    from surgery.precision.emulate import Mode

    parsed = Mode.parse(mode)
    args = [f"--precision_mode_v2={parsed.value}" if v2 else f"--precision_mode={parsed.v1}"]
    if keep_dtype is not None:
        if parsed is Mode.ORIGIN:
            raise InputError(
                "atc: --keep_dtype has no effect with precision mode origin (must_keep_origin_dtype)"
            )
        args.append(f"--keep_dtype={keep_dtype}")
    return tuple(args)


def _om_stem(path: str | os.PathLike) -> str:
    p = Path(path)
    return str(p.with_suffix("")) if p.suffix == ".onnx" else str(p)


def atc_command(
    model: ir.Model,
    model_path: str | os.PathLike,
    *,
    soc_version: str | None = None,
    output: str | os.PathLike | None = None,
    precision: Sequence[str] = (),
    out_nodes: Sequence[str] | None = None,
) -> AtcCommand:
    """The ``atc`` line that compiles ``model`` (as written at ``model_path``) to ``OUTPUT.om``.

    ``out_nodes``: graph output names to list in ``--out_nodes`` (as ``producer:index``).
    """
    shapes, dynamic = input_shapes(model)
    return AtcCommand(
        model=str(model_path),
        output=_om_stem(output if output is not None else model_path),
        input_shape=_format_shapes(shapes),
        input_format=input_format(model),
        soc_version=soc_version or SOC_PLACEHOLDER,
        dynamic_inputs=tuple(dynamic),
        out_nodes=_out_nodes(model, out_nodes) if out_nodes else None,
        precision=tuple(precision),
    )


def _out_nodes(model: ir.Model, names: Sequence[str]) -> str:
    by_name = {v.name: v for v in model.graph.outputs}
    parts = []
    for name in names:
        value = by_name.get(name)
        if value is None:
            raise InputError(f"atc: '{name}' is not an output of the model")
        producer = value.producer()
        if producer is None or not producer.name:
            raise InputError(f"atc: output '{name}' has no named producer node for --out_nodes")
        parts.append(f"{_check_name(producer.name, 'node')}:{value.index()}")
    return ";".join(parts)


def _profiles_checked(count: int, what: str) -> None:
    if not MIN_PROFILES <= count <= MAX_PROFILES:
        raise InputError(
            f"atc: {what} needs {MIN_PROFILES} to {MAX_PROFILES} profiles, got {count}"
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
    sizes = [int(b) for b in batch_sizes]
    _profiles_checked(len(sizes), "--dynamic_batch_size")
    if any(b < 1 for b in sizes) or len(set(sizes)) != len(sizes):
        raise InputError(f"atc: --dynamic_batch_size sizes must be distinct and >= 1, got {sizes}")
    shapes, dynamic = input_shapes(static_model)
    if dynamic:
        raise InputError(
            f"atc: gears need a static model per gear; input(s) {', '.join(dynamic)} are still dynamic"
        )
    if any(not dims for dims in shapes.values()):
        raise InputError(
            "atc: --dynamic_batch_size needs every input to have a batch dim (a scalar input has none)"
        )
    geared = {name: (-1, *dims[1:]) for name, dims in shapes.items()}
    return AtcCommand(
        model=str(source_path),
        output=_om_stem(output if output is not None else source_path) + "_dynamic_batch",
        input_shape=_format_shapes(geared),
        input_format=input_format(static_model),
        soc_version=soc_version or SOC_PLACEHOLDER,
        dynamic_batch_size=",".join(str(b) for b in sizes),
    )


def dynamic_dims_command(
    model: ir.Model,
    model_path: str | os.PathLike,
    profiles: Sequence[Mapping[str, Sequence[int]]],
    *,
    soc_version: str | None = None,
    output: str | os.PathLike | None = None,
    aipp_config: str | os.PathLike | None = None,
) -> AtcCommand:
    """``--dynamic_dims`` gears: ``profiles`` lists, per gear, each input's full static shape.

    Dims that differ between profiles become ``-1`` in ``--input_shape`` (a dim every profile gives the
    same size is written as that size, also where the model leaves it dynamic); each profile then lists the
    value of every ``-1`` across all inputs in input order. Refused: fewer than 2 or more than 100
    profiles, a profile that misses an input or changes a rank, a dim the model fixes to another
    value, and AIPP (``aipp_config``), which ATC does not allow with ``--dynamic_dims``.
    """
    if aipp_config is not None:
        raise InputError(
            "atc: --dynamic_dims cannot be combined with AIPP (--insert_op_conf); "
            "use one static model per gear instead"
        )
    _profiles_checked(len(profiles), "--dynamic_dims")
    shapes, _ = input_shapes(model)
    for i, profile in enumerate(profiles):
        for name, dims in shapes.items():
            if name not in profile:
                raise InputError(
                    f"atc: --dynamic_dims profile {i + 1} has no shape for input '{name}'"
                )
            given = tuple(int(d) for d in profile[name])
            if len(given) != len(dims):
                raise InputError(
                    f"atc: --dynamic_dims profile {i + 1}: input '{name}' has rank {len(dims)}, "
                    f"the profile gives {len(given)} dims"
                )
            for axis, (d, g) in enumerate(zip(dims, given, strict=True)):
                if g < 1 or (d != -1 and d != g):
                    raise InputError(
                        f"atc: --dynamic_dims profile {i + 1}: input '{name}' dim {axis} is {g}, "
                        f"the model has {d if d != -1 else 'a dynamic dim'}"
                    )
        extra = set(profile) - set(shapes)
        if extra:
            raise InputError(
                f"atc: --dynamic_dims profile {i + 1} names unknown input(s) {', '.join(sorted(extra))}"
            )
    geared: dict[str, tuple[int, ...]] = {}
    for name, dims in shapes.items():
        # a dim every gear gives the same size is fixed to it (even where the model leaves it dynamic)
        geared[name] = tuple(
            -1 if len({int(p[name][a]) for p in profiles}) > 1 else int(profiles[0][name][a])
            for a, d in enumerate(dims)
        )
    order = [(name, a) for name, dims in geared.items() for a, d in enumerate(dims) if d == -1]
    if not order:
        raise InputError(
            "atc: --dynamic_dims profiles do not differ in any dim: compile the static model instead"
        )
    rows = [",".join(str(int(p[name][a])) for name, a in order) for p in profiles]
    if len(set(rows)) != len(rows):
        raise InputError("atc: --dynamic_dims profiles repeat a gear")
    return AtcCommand(
        model=str(model_path),
        output=_om_stem(output if output is not None else model_path) + "_dynamic_dims",
        input_shape=_format_shapes(geared),
        input_format="ND",
        soc_version=soc_version or SOC_PLACEHOLDER,
        dynamic_dims=";".join(rows),
    )


def range_command(
    model: ir.Model,
    model_path: str | os.PathLike,
    *,
    cann: int,
    soc_version: str | None = None,
    ranges: Mapping[str, Mapping[int, tuple[int, int]]] | None = None,
    output: str | os.PathLike | None = None,
) -> AtcCommand:
    """A dynamic-shape (range) command: each dynamic dim as ``lo~hi`` (from ``ranges``) or ``-1``.

    Refused on Ascend310/310B (no ranges there). ``cann`` (7 or 8) decides what an unbounded ``-1``
    means: ">= 1" on CANN 6.3/7.0, ">= 0" from 8.0.RC1. A range's lower bound must be >= 1 on CANN 7;
    an unbounded ``-1`` is written as is, with a note saying what it admits on that release.
    """
    if cann not in (7, 8):
        raise InputError(f"atc: --cann must be 7 or 8, got {cann}")
    if not supports_ranges(soc_version):
        raise InputError(
            f"atc: {soc_version} takes only static shapes or gears: shape ranges and -1 are "
            "not supported there; use buckets or --dynamic_dims"
        )
    shapes, dynamic = input_shapes(model)
    ranges = ranges or {}
    written: dict[str, list[str]] = {}
    unbounded = False
    for name, dims in shapes.items():
        text = []
        for axis, d in enumerate(dims):
            rng = ranges.get(name, {}).get(axis)
            if rng is not None:
                lo, hi = int(rng[0]), int(rng[1])
                if not (0 <= lo <= hi) or (cann == 7 and lo < 1):
                    raise InputError(
                        f"atc: range {lo}~{hi} for '{name}' dim {axis} is not valid on CANN {cann}"
                    )
                if d != -1 and not lo <= d <= hi:
                    raise InputError(f"atc: '{name}' dim {axis} is fixed to {d}, outside {lo}~{hi}")
                text.append(f"{lo}~{hi}" if lo != hi else str(lo))
            elif d == -1:
                text.append("-1")
                unbounded = True
            else:
                text.append(str(d))
        written[name] = text
    notes = []
    if unbounded:
        notes.append(
            "-1 means any value >= 1 on CANN 6.3/7.0"
            if cann == 7
            else "-1 means any value >= 0 from CANN 8.0.RC1 (an empty tensor is accepted): give a range lo~hi "
            "where a dim must be >= 1"
        )
    return AtcCommand(
        model=str(model_path),
        output=_om_stem(output if output is not None else model_path),
        input_shape=_format_shapes(written),
        input_format=input_format(model),
        soc_version=soc_version or SOC_PLACEHOLDER,
        dynamic_inputs=tuple(dynamic),
        notes=tuple(notes),
    )


def report_atc_commands(
    report: Any,
    model: ir.Model,
    output: str | os.PathLike,
    *,
    soc_version: str | None = None,
    cann: int | None = None,
) -> list[AtcCommand]:
    """Put the ``atc`` line of every model a run wrote into ``report.extra["atc"]``.

    The main model is written at ``output``; ``ir.Model`` artifacts at ``report.files[key]``.
    A split head whose outputs are not the original model's gets ``--out_nodes``. A name ATC's
    syntax cannot carry becomes a warning entry instead of a command (the model is already written).
    A model left with dynamic dims gets, with ``cann``, the dynamic-shape command of that release
    (:func:`range_command`); on Ascend310/310B, which take only static shapes or gears, an error entry.
    """
    commands: list[AtcCommand] = []
    entries: list[dict[str, object]] = []
    targets: list[tuple[ir.Model, str | os.PathLike, bool]] = [
        (model, output, bool(getattr(report, "chained", None)))
    ]
    for key, path in report.files.items():
        extra = report.models.get(key)
        if isinstance(extra, ir.Model):
            targets.append((extra, path, False))
    original = list(report.extra.get("original_outputs") or [])
    precision = _planned_precision(report, output)
    for part, path, is_head in targets:
        try:
            outs = [v.name or "" for v in part.graph.outputs]
            out_nodes = outs if is_head and original and outs != original else None
            command = atc_command(
                part,
                path,
                soc_version=soc_version,
                out_nodes=out_nodes,
                precision=precision if part is model else (),
            )
            if command.dynamic_inputs and (cann is not None or not supports_ranges(soc_version)):
                ranged = range_command(part, path, cann=cann or 8, soc_version=soc_version)
                command = dataclasses.replace(
                    command, input_shape=ranged.input_shape, notes=(*command.notes, *ranged.notes)
                )
        except InputError as exc:
            entries.append({"command": None, "error": str(exc), "model": str(path)})
            continue
        commands.append(command)
        entries.append(command.to_dict())
    report.extra["atc"] = entries
    return commands


def keep_dtype_path(output: str | os.PathLike) -> Path:
    """``out.onnx`` → ``out.keep_dtype.txt``: where a run's ``--keep_dtype`` file goes."""
    return Path(output).with_name(Path(_om_stem(output)).name + ".keep_dtype.txt")


def planned_keep_dtype(report: Any) -> list[str]:
    """The keep_dtype lines of a run's ``precision-plan`` step (empty without one or when none are needed)."""
    plan = report.models.get("precision-plan")
    return list(plan.get("keep_dtype") or []) if isinstance(plan, Mapping) else []


def _planned_precision(report: Any, output: str | os.PathLike) -> tuple[str, ...]:
    """Precision flags from a ``precision-plan`` step; its keep_dtype file (staged by the run beside
    ``output`` in its write plan) is ``report.files["keep_dtype"]``."""
    plan = report.models.get("precision-plan")
    if not isinstance(plan, Mapping):
        return ()
    keep = report.files.get("keep_dtype") if planned_keep_dtype(report) else None
    return precision_flags(
        str(plan.get("mode", "fp16")), keep, v2=plan.get("flag") == "precision_mode_v2"
    )
