"""Pipelines: an ordered list of configured passes, plus input and verification settings.

Read from ``passes.toml`` (schema_version 1) or built from Python. The file is strict: unknown
keys, unknown pass names, unknown options and values of the wrong type are errors that say what was
expected, with a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from surgery import registry, tomlwrite
from surgery.errors import PipelineError
from surgery.options import did_you_mean, path_options
from surgery.pass_base import SurgeryPass, Tolerance
from surgery.shapes.spec import MAX_DIM
from surgery.verify.inputs import InputsConfig, InputSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "SCHEMA_VERSION",
    "Mode",
    "Pipeline",
    "Step",
    "StepVerify",
    "VerifyConfig",
    "load_pipeline",
    "parse_pipeline",
]

SCHEMA_VERSION = 1
Mode = Literal["each", "end", "off"]
_MODES = ("each", "end", "off")
_TOP_KEYS = ("schema_version", "inputs", "verify", "pass", "buckets", "plugins")
#: Deepest nesting of tables/arrays a passes.toml may have (the schema needs 4: [[pass]] → table → array → array).
MAX_DEPTH = 8
_VERIFY_KEYS = (
    "checker",
    "ort",
    "parity",
    "signature",
    "rtol",
    "atol",
    "seed",
    "parity_max_nodes",
    "samples",
    "int_tolerance",
    "allow_unexercised",
)
_STEP_VERIFY_KEYS = ("checker", "ort", "parity", "signature", "rtol", "atol")
_GATE_KEYS = ("checker", "ort", "parity", "signature")
_INPUT_KEYS = ("shape", "dtype", "range", "value")


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """Pipeline-wide gate settings (``[verify]``)."""

    checker: Mode = "each"
    ort: Mode = "each"
    parity: Mode = "each"
    signature: Mode = "each"
    rtol: float = 1e-4
    atol: float = 1e-5
    seed: int = 0
    parity_max_nodes: int = 20000
    """Above this node count, per-pass parity becomes end-only (ORT session creation is superlinear)."""
    samples: int = 3
    """Parity samples: the planned one plus wider ones (and a second size where a dim is symbolic)."""
    int_tolerance: int | None = None
    """Absolute difference allowed on integer outputs (None: integers must be equal)."""
    allow_unexercised: bool = False
    """Accept a changed If branch / Loop body that no parity sample executed."""

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(self.rtol, self.atol)

    def with_mode(self, mode: Mode) -> VerifyConfig:
        return dataclasses.replace(self, checker=mode, ort=mode, parity=mode, signature=mode)


@dataclasses.dataclass(frozen=True)
class StepVerify:
    """A pass's own overrides (``[pass.verify]``); None means "as the pipeline says"."""

    checker: Mode | None = None
    ort: Mode | None = None
    parity: Mode | None = None
    signature: Mode | None = None
    rtol: float | None = None
    atol: float | None = None

    @property
    def tolerance(self) -> Tolerance | None:
        if self.rtol is None and self.atol is None:
            return None
        return Tolerance(
            self.rtol if self.rtol is not None else 0.0, self.atol if self.atol is not None else 0.0
        )


@dataclasses.dataclass
class Step:
    """One configured pass in a pipeline."""

    pass_: SurgeryPass
    verify: StepVerify = dataclasses.field(default_factory=StepVerify)
    from_data: bool = False
    """Read from a passes.toml document: user code it names runs only with an opt-in (``allow_code``)."""

    @property
    def name(self) -> str:
        return self.pass_.name


@dataclasses.dataclass
class Pipeline:
    steps: list[Step]
    inputs: InputsConfig = dataclasses.field(default_factory=InputsConfig)
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    buckets: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    source: Path | None = None
    allow_code: bool = False
    """The caller opted in to running the user code the pipeline names (``--allow-code``)."""
    plugins: tuple[Path, ...] = ()
    """Plug-in files the pipeline names (``plugins = [...]``), imported when it was read."""

    @classmethod
    def from_toml(
        cls,
        text: str,
        *,
        base_dir: Path = Path("."),
        source: Path | None = None,
        allow_code: bool = False,
    ) -> Pipeline:
        """Read ``passes.toml`` text (what :meth:`to_toml` writes); see :func:`parse_pipeline`.

        Raises:
            PipelineError: invalid TOML, or a document that is not a valid pipeline.
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PipelineError(f"invalid TOML: {exc}") from None
        except RecursionError:
            raise PipelineError("invalid TOML: nested too deeply") from None
        return parse_pipeline(doc, base_dir=base_dir, source=source, allow_code=allow_code)

    def to_toml(
        self,
        *,
        complete: bool = False,
        header: Sequence[Any] = (),
        notes: Mapping[int, Sequence[Any]] | None = None,
        allow_nonfinite: bool = False,
    ) -> str:
        """This pipeline as ``passes.toml`` text, written through :mod:`surgery.tomlwrite`.

        ``Pipeline.from_toml(p.to_toml())`` has the same steps, options, ``[pass.verify]``
        overrides, ``[verify]``, ``[inputs]``, buckets and plug-ins as ``p`` (paths as the file
        reads them; ``inputs.arrays``, given from Python, are not pipeline text and are left out).

        Args:
            complete: write every ``[verify]`` setting and every option, defaults included (the
                reproducer: what failed must replay even where a later version changes a default);
                otherwise only settings that differ from the defaults and the options each pass was
                built with (:meth:`SurgeryPass.given_options`).
            header: comment lines that open the file.
            notes: comment lines before step ``i`` (``notes[len(steps)]``: after the last step);
                every line goes through :func:`surgery.tomlwrite.comment`, an empty one stays empty.
            allow_nonfinite: write NaN and infinity (a file that will not load) instead of refusing.

        Raises:
            surgery.tomlwrite.Unrepresentable: a name TOML cannot hold (bytes that are not UTF-8).
        """
        doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        if self.plugins:
            doc["plugins"] = [str(p) for p in self.plugins]
        inputs: dict[Any, Any] = {
            name: tomlwrite.plain(dataclasses.asdict(spec))
            for name, spec in self.inputs.specs.items()
        }
        if self.inputs.data is not None:
            inputs["data"] = str(self.inputs.data)
        if inputs:
            doc["inputs"] = inputs
        default = VerifyConfig()
        verify = tomlwrite.plain(
            {
                f.name: getattr(self.verify, f.name)
                for f in dataclasses.fields(VerifyConfig)
                if complete or getattr(self.verify, f.name) != getattr(default, f.name)
            }
        )
        if verify:
            doc["verify"] = verify
        if self.buckets:
            doc["buckets"] = dict(self.buckets)
        tables = []
        for step in self.steps:
            options = step.pass_.options_dict() if complete else step.pass_.given_options()
            table = {"name": step.name, **tomlwrite.plain(options)}
            overrides = tomlwrite.plain(dataclasses.asdict(step.verify))
            if overrides:
                table["verify"] = overrides
            tables.append(table)
        if tables:
            doc["pass"] = tables
        return tomlwrite.dumps(
            tomlwrite.plain(doc), allow_nonfinite=allow_nonfinite, header=header, notes=notes
        )

    @classmethod
    def from_passes(cls, passes: Sequence[SurgeryPass | Step]) -> Pipeline:
        steps = []
        for p in passes:
            if isinstance(p, Step):
                steps.append(p)
            elif isinstance(p, SurgeryPass):
                steps.append(Step(p))
            else:
                raise PipelineError(
                    f"a pipeline holds SurgeryPass instances, got {type(p).__name__}"
                )
        return cls(steps)

    def disable(self, names: Sequence[str]) -> None:
        known = {s.name for s in self.steps}
        for name in names:
            if name not in known:
                raise PipelineError(
                    f"--disable {name}: no such pass in the pipeline{did_you_mean(name, known)}"
                )
        self.steps = [s for s in self.steps if s.name not in set(names)]

    def check_code(self, allow_code: bool = False) -> None:
        """Refuse to run user code named by a pipeline file unless the caller opted in.

        Checked before anything runs (and after ``--disable``, so a disabled step needs no opt-in).

        Raises:
            PipelineError: naming the first step and the file it would import.
        """
        if allow_code or self.allow_code:
            return
        for i, step in enumerate(self.steps, 1):
            code = step.pass_.user_code() if step.from_data else None
            if code:
                where = f"{self.source}: " if self.source else ""
                raise PipelineError(
                    f"{where}[[pass]] #{i} ({step.name}) would import the Python module {code}; a pipeline file is "
                    "data, so its code runs only when you ask: add --allow-code (Python: allow_code=True)"
                )


def _check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise PipelineError(
                f"{where}: unknown key '{key}'{did_you_mean(key, allowed)}; expected one of: {', '.join(allowed)}"
            )


def _mode(value: Any, where: str) -> Mode:
    if value not in _MODES:
        raise PipelineError(f"{where}: expected one of each, end, off, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PipelineError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise PipelineError(f"{where}: must be a finite number, got {value!r}")
    if value < 0:
        raise PipelineError(f"{where}: must not be negative, got {value!r}")
    return float(value)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PipelineError(f"{where}: expected an integer, got {value!r}")
    return value


def parse_verify(table: Mapping[str, Any], base: VerifyConfig | None = None) -> VerifyConfig:
    if not isinstance(table, Mapping):
        raise PipelineError("[verify] must be a table")
    _check_keys(table, _VERIFY_KEYS, "[verify]")
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        where = f"[verify] {key}"
        if key in _GATE_KEYS:
            kwargs[key] = _mode(value, where)
        elif key in ("rtol", "atol"):
            kwargs[key] = _number(value, where)
        elif key == "allow_unexercised":
            if not isinstance(value, bool):
                raise PipelineError(f"{where}: expected true or false, got {value!r}")
            kwargs[key] = value
        else:
            kwargs[key] = _int(value, where)
            if key in ("samples", "int_tolerance") and value < (1 if key == "samples" else 0):
                raise PipelineError(
                    f"{where}: must be {'at least 1' if key == 'samples' else 'non-negative'}, got {value!r}"
                )
    return dataclasses.replace(base or VerifyConfig(), **kwargs)


def _parse_step_verify(table: Any, where: str) -> StepVerify:
    if not isinstance(table, Mapping):
        raise PipelineError(f"{where}: must be a table")
    _check_keys(table, _STEP_VERIFY_KEYS, where)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key in _GATE_KEYS:
            kwargs[key] = _mode(value, f"{where} {key}")
        else:
            kwargs[key] = _number(value, f"{where} {key}")
    return StepVerify(**kwargs)


def _parse_inputs(table: Any, base_dir: Path) -> InputsConfig:
    if not isinstance(table, Mapping):
        raise PipelineError("[inputs] must be a table")
    specs: dict[str, InputSpec] = {}
    data: Path | None = None
    for name, spec in table.items():
        where = f"[inputs] {name}"
        if name == "data" and isinstance(spec, str):
            data = (base_dir / spec) if not Path(spec).is_absolute() else Path(spec)
            continue
        if not isinstance(spec, Mapping):
            raise PipelineError(
                f"{where}: expected a table like {{ shape = [1, 3, 224, 224] }}, got {spec!r}"
            )
        _check_keys(spec, _INPUT_KEYS, where)
        shape = spec.get("shape")
        if shape is not None and (
            not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise PipelineError(
                f"{where} shape: expected a list of non-negative integers, got {shape!r}"
            )
        dtype = spec.get("dtype")
        if dtype is not None:
            import numpy as np

            try:
                np.dtype(dtype)
            except TypeError:
                raise PipelineError(f"{where} dtype: unknown dtype {dtype!r}") from None
        if shape is not None and any(d > MAX_DIM for d in shape):
            raise PipelineError(
                f"{where} shape: {shape!r} has a dim above {MAX_DIM}, more than any tensor can hold"
            )
        rng = spec.get("range")
        if rng is not None and (
            not isinstance(rng, list)
            or len(rng) != 2
            or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in rng
            )
            or rng[0] > rng[1]
        ):
            raise PipelineError(
                f"{where} range: expected [low, high] (finite numbers) with low <= high, got {rng!r}"
            )
        specs[name] = InputSpec(
            shape=tuple(shape) if shape is not None else None,
            dtype=dtype,
            range=(float(rng[0]), float(rng[1])) if rng is not None else None,
            value=spec.get("value"),
        )
    return InputsConfig(specs=specs, data=data)


def _parse_buckets(table: Any) -> dict[str, tuple[int, ...]]:
    if not isinstance(table, Mapping):
        raise PipelineError("[buckets] must be a table like { batch = [1, 4, 8] }")
    buckets: dict[str, tuple[int, ...]] = {}
    for dim, sizes in table.items():
        if (
            not isinstance(sizes, list)
            or not sizes
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
        ):
            raise PipelineError(
                f"[buckets] {dim}: expected a list of positive integers, got {sizes!r}"
            )
        buckets[dim] = tuple(sizes)
    return buckets


def _depth(value: Any, limit: int, level: int = 0) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (stops as soon as it does)."""
    if level > limit:
        return True
    if isinstance(value, Mapping):
        return any(_depth(v, limit, level + 1) for v in value.values())
    if isinstance(value, list):
        return any(_depth(v, limit, level + 1) for v in value)
    return False


def _finite(value: Any, where: str) -> None:
    """NaN and infinity mean nothing as an option, and a NaN tolerance makes every comparison fail."""
    if isinstance(value, float) and not math.isfinite(value):
        raise PipelineError(f"{where}: must be a finite number, got {value!r}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{where}[{i}]")


def _code_folders(options_cls: type | None) -> list[str]:
    """Fields that name the folder user code is imported from: empty means the pipeline's folder."""
    if not dataclasses.is_dataclass(options_cls):
        return []
    return [f.name for f in dataclasses.fields(options_cls) if f.metadata.get("code_folder")]


def _load_plugins(value: Any, base_dir: Path, allow_code: bool) -> tuple[Path, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PipelineError(f"plugins: expected a list of Python file names, got {value!r}")
    files = [(Path(v) if Path(v).is_absolute() else base_dir / v) for v in value]
    if not allow_code:
        raise PipelineError(
            f"plugins: the pipeline would import {', '.join(map(str, files))}; a pipeline file is data, so its "
            "code runs only when you ask: add --allow-code (Python: allow_code=True)"
        )
    for file in files:
        registry.load_plugin(file, what="plugins")
    return tuple(f.absolute() for f in files)


def parse_pipeline(
    doc: Mapping[str, Any],
    *,
    base_dir: Path = Path("."),
    source: Path | None = None,
    allow_code: bool = False,
) -> Pipeline:
    """Build a :class:`Pipeline` from a parsed ``passes.toml`` document.

    Parsing runs no user code: a ``rewrite`` module is imported when its pass runs, and then only
    with the opt-in :meth:`Pipeline.check_code` asks for. ``plugins`` must be imported to know
    their pass names, so they are imported here, and only when ``allow_code`` is true.
    """
    if _depth(doc, MAX_DEPTH):
        raise PipelineError(
            f"pipeline: tables and arrays nest deeper than {MAX_DEPTH} levels; no passes.toml needs that"
        )
    _check_keys(doc, _TOP_KEYS, "pipeline")
    plugins = _load_plugins(doc["plugins"], base_dir, allow_code) if "plugins" in doc else ()
    version = doc.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise PipelineError(
            f"schema_version {version!r} is not supported (this version reads {SCHEMA_VERSION})"
        )
    verify = parse_verify(doc.get("verify", {}))
    inputs = _parse_inputs(doc.get("inputs", {}), base_dir)
    buckets = _parse_buckets(doc.get("buckets", {}))
    raw_steps = doc.get("pass", [])
    if not isinstance(raw_steps, list):
        raise PipelineError("'pass' must be an array of tables: write each pass as [[pass]]")
    steps: list[Step] = []
    for i, raw in enumerate(raw_steps, 1):
        if not isinstance(raw, Mapping):
            raise PipelineError(f"[[pass]] #{i}: must be a table")
        name = raw.get("name")
        if not isinstance(name, str):
            raise PipelineError(f'[[pass]] #{i}: needs a name, e.g. name = "cleanup"')
        cls = registry.get(name)
        options = {k: v for k, v in raw.items() if k not in ("name", "verify")}
        _finite(options, f"[[pass]] #{i} ({name})")
        options_cls = getattr(cls, "Options", None)
        for key in _code_folders(options_cls):
            if options.get(key, "") == "":
                options[key] = str(base_dir.absolute())
        for key in path_options(options_cls):
            value = options.get(key)
            if isinstance(value, str) and value:
                given = Path(value).expanduser()
                options[key] = str(given if given.is_absolute() else base_dir / given)
        step_verify = _parse_step_verify(raw.get("verify", {}), f"[[pass]] #{i} ({name}) verify")
        steps.append(Step(cls(**options), step_verify, from_data=True))
    return Pipeline(
        steps=steps,
        inputs=inputs,
        verify=verify,
        buckets=buckets,
        source=source,
        allow_code=allow_code,
        plugins=plugins,
    )


def load_pipeline(path: str | os.PathLike, *, allow_code: bool = False) -> Pipeline:
    """Read and validate a ``passes.toml`` file (``allow_code``: see :func:`parse_pipeline`)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such pipeline file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not a text file") from None
    try:
        return Pipeline.from_toml(text, base_dir=path.parent, source=path, allow_code=allow_code)
    except PipelineError as exc:
        raise PipelineError(f"{path}: {exc}") from None


def parse_set(assignment: str) -> tuple[str, str, Any]:
    """Parse ``--set PASS.key=value`` (PASS a pass name or a 1-based index); the value is TOML."""
    if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
        raise PipelineError(
            f'--set {assignment}: expected PASS.key=value (e.g. fix-shapes.shapes="x:1,3,224,224")'
        )
    target, raw = assignment.split("=", 1)
    step, key = target.rsplit(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    except RecursionError:
        raise PipelineError(f"--set {target}: the value nests too deeply") from None
    if _depth(value, MAX_DEPTH):
        raise PipelineError(f"--set {target}: the value nests deeper than {MAX_DEPTH} levels")
    _finite(value, f"--set {target}")
    return step, key, value


def apply_sets(pipeline: Pipeline, assignments: Sequence[str]) -> None:
    """Apply ``--set`` overrides to the pipeline's passes (re-validating their options)."""
    for assignment in assignments:
        step_ref, key, value = parse_set(assignment)
        if step_ref.isdigit():
            index = int(step_ref) - 1
            if not 0 <= index < len(pipeline.steps):
                raise PipelineError(
                    f"--set {assignment}: the pipeline has {len(pipeline.steps)} passes"
                )
            targets = [pipeline.steps[index]]
        else:
            targets = [s for s in pipeline.steps if s.name == step_ref]
            if not targets:
                raise PipelineError(
                    f"--set {assignment}: no pass '{step_ref}' in the pipeline"
                    f"{did_you_mean(step_ref, [s.name for s in pipeline.steps])}"
                )
        for step in targets:
            options = tomlwrite.plain(step.pass_.given_options())  # TOML form, re-validated
            options[key] = value
            step.pass_ = type(step.pass_)(**options)


def is_pass_list(text: str) -> bool:
    """True when a PIPELINE argument is a comma-separated list of pass names, not a passes.toml path.

    ``make-static,cleanup`` is a list; anything with a path separator or a ``.toml`` suffix, or that
    names an existing file, is a file.
    """
    if not text or text.endswith(".toml") or "/" in text or "\\" in text or Path(text).exists():
        return False
    return all(
        part.strip() and all(c.isalnum() or c == "-" for c in part.strip())
        for part in text.split(",")
    )


def pipeline_from_names(text: str, assignments: Sequence[str] = ()) -> Pipeline:
    """Build a pipeline from ``"make-static,cleanup"``; ``--set`` assignments become the passes' options.

    The options are given when each pass is built (a pass such as ``fix-shapes`` refuses to be built
    without them), so every assignment must name a pass of the list (by name or 1-based position).
    """
    names = [part.strip() for part in text.split(",")]
    tables: list[dict[str, Any]] = [{"name": name} for name in names]
    for assignment in assignments:
        step_ref, key, value = parse_set(assignment)
        if step_ref.isdigit():
            index = int(step_ref) - 1
            if not 0 <= index < len(tables):
                raise PipelineError(f"--set {assignment}: the pipeline has {len(tables)} passes")
            targets = [tables[index]]
        else:
            targets = [t for t in tables if t["name"] == step_ref]
            if not targets:
                raise PipelineError(
                    f"--set {assignment}: no pass '{step_ref}' in the pipeline{did_you_mean(step_ref, names)}"
                )
        for table in targets:
            if key in ("name", "verify"):
                raise PipelineError(f"--set {assignment}: '{key}' is not a pass option")
            table[key] = value
    return parse_pipeline({"schema_version": SCHEMA_VERSION, "pass": tables}, base_dir=Path.cwd())


def set_input_shapes(pipeline: Pipeline, spec: str) -> None:
    """``--input-shape SPEC``: set the shapes of the pipeline's ``fix-shapes`` step, or insert one first.

    Shapes given here win over the same inputs' shapes in the file; other inputs keep theirs.
    """
    from surgery.shapes.spec import parse_shapes

    shapes = {k: list(v) for k, v in parse_shapes(spec, where="--input-shape").items()}
    cls = registry.get("fix-shapes")
    for step in pipeline.steps:
        if step.name == "fix-shapes":
            options = tomlwrite.plain(step.pass_.given_options())
            current = options.get("shapes") or {}
            if isinstance(current, str):
                current = {
                    k: list(v) for k, v in parse_shapes(current, where="fix-shapes.shapes").items()
                }
            options["shapes"] = {**dict(current), **shapes}
            step.pass_ = cls(**options)
            return
    pipeline.steps.insert(0, Step(cls(shapes=shapes)))
