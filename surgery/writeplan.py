"""The write plan: every file a run reads and writes, checked before anything is written.

Why: a user's input must never be overwritten by accident. Comparing one output path with the
model path is not enough: the model's weights may live in ``weights.bin``, the report may be
pointed at the pipeline, a bucket output ``OUT.batch1.onnx`` may already be an input, a path may
be a symlink or a hard link to an input. So each command lists what it reads (the model and every
external-data file whatever its name, the pipeline TOML, npz arrays, rule modules, rename maps)
and what it writes (models, artifacts, bucket outputs, reports, manifests, emitted pipelines, the
reproducer folder); the plan compares every write with every read and with every other write, by
resolved path and by inode, and refuses an overlap with :class:`InputError` (exit 2) naming both
files. ``in_place`` allows exactly one overlap: the output model replacing the input model.

The plan also owns the run's :class:`surgery.model_io.Transaction`: commands stage their files in
it and commit once, so all outputs of a run appear together or not at all.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from surgery.errors import InputError

if TYPE_CHECKING:  # the CLI imports output_arg at start-up: onnx-ir is imported when a plan is made
    import onnx_ir as ir

__all__ = [
    "REPRODUCER_FILES",
    "STAGING_PREFIX",
    "WritePlan",
    "check_output_file",
    "output_arg",
    "output_or_stdout",
]


#: Prefix of a run's staging folder (see :class:`surgery.model_io.Transaction`).
STAGING_PREFIX = ".surgery-staging-"
#: What a reproducer folder holds (see :mod:`surgery.instruments.reproducer`).
REPRODUCER_FILES = ("model.onnx", "model.onnx.data", "inputs.npz", "passes.toml", "README.txt")


@dataclasses.dataclass(frozen=True)
class _Entry:
    role: str
    path: Path
    owner: str = ""

    def describe(self) -> str:
        return f"{self.role} {self.path}" + (f" of {self.owner}" if self.owner else "")


def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """Resolved path (symlinks followed) and (device, inode) when the file exists."""
    resolved = path.resolve()
    try:
        st = os.stat(path)
    except OSError:
        return resolved, None
    return resolved, (st.st_dev, st.st_ino)


def _same(a: Path, b: Path) -> bool:
    ra, ia = _identity(a)
    rb, ib = _identity(b)
    return ra == rb or (ia is not None and ia == ib)


def output_arg(text: str) -> Path:
    """argparse type of an output file: '' and ``folder/`` are refused with one line (exit 2)."""
    import argparse

    if not text:
        raise argparse.ArgumentTypeError("an empty path; give a file name such as out.onnx")
    if text.endswith(("/", os.sep)) and not text.rstrip("/" + os.sep).endswith(".onnx"):
        raise argparse.ArgumentTypeError(
            f"'{text}' names a folder; give a file name inside it, e.g. {text}out.onnx"
        )
    return Path(text)


def output_or_stdout(text: str | None, flag: str) -> Path | None:
    """A flag taking a file or '-' (stdout): the file is checked as :func:`output_arg` does, in one line."""
    import argparse

    if text is None or text == "-":
        return None
    try:
        return output_arg(text)
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"{flag}: {exc}") from None


def check_output_file(path: Path, role: str) -> None:
    """Refuse an output path that cannot be a file we write: '', a folder, a missing or read-only folder."""
    text = os.fspath(path)
    if text in ("", "."):
        raise InputError(
            f"{role}: '{text}' is an empty path or the current folder; give a file name such as out.onnx"
        )
    if path.is_dir():
        raise InputError(
            f"{role} {path}: is a folder; give a file name inside it, e.g. {path / 'out.onnx'}"
        )
    parent = path.parent
    if not parent.exists():
        raise InputError(f"{role} {path}: the output folder {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"{role} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{role} {path}: the output folder {parent} is not writable")


def write_text_file(path: str | os.PathLike, text: str, role: str) -> Path:
    """Write one text file atomically (a hidden temporary file beside it, renamed over it), for
    Python callers that manage their own files; commands stage their files in a :class:`WritePlan`.

    Raises:
        InputError: the path cannot be a file we write (see :func:`check_output_file`).
    """
    target = Path(path)
    check_output_file(target, role)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


class WritePlan:
    """What one run reads and writes; see the module docstring."""

    def __init__(
        self, *, in_place: bool = False, hint: str = "use --in-place to overwrite it"
    ) -> None:
        self.in_place = in_place
        self.hint = hint
        self.reads: list[_Entry] = []
        self.writes: list[_Entry] = []
        self.folders: list[_Entry] = []
        self.model_path: Path | None = None
        self.model_data: list[Path] = []
        from surgery import model_io

        self.transaction = model_io.Transaction()

    # -- reads ---------------------------------------------------------------------------------
    def read(self, path: str | os.PathLike | None, role: str, owner: str = "") -> None:
        """Record a file the run reads (nothing happens for ``None``)."""
        if path is None:
            return
        entry = _Entry(role, Path(path), owner)
        self.reads.append(entry)
        self.transaction.protect.append(entry.path)
        for write in self.writes:
            self._check(write, entry)
        for folder in self.folders:
            self._check_in_folder(folder, entry)

    def read_model(
        self,
        model: ir.Model | None,
        path: str | os.PathLike | None,
        role: str = "the input model",
        *,
        own: bool = False,
    ) -> None:
        """Record a model file and every external-data file its tensors name."""
        self.read(path, role)
        if model is None:
            return
        from surgery import model_io

        seen: set[Path] = set()
        for _, tensor in model_io.external_tensors(model):
            file = Path(tensor.base_dir) / tensor.location
            if file not in seen:
                seen.add(file)
                self.read(
                    file, "the external data file", f"{role} {path}" if path is not None else role
                )
                if own:
                    self.model_data.append(file)

    def read_pipeline(self, pipeline: object) -> None:
        """The pipeline's TOML, its ``[inputs] data`` file, and files or rule modules its passes name."""
        self.read(getattr(pipeline, "source", None), "the pipeline")
        inputs = getattr(pipeline, "inputs", None)
        self.read(getattr(inputs, "data", None), "the input arrays")
        from surgery.options import path_options

        for step in getattr(pipeline, "steps", []):
            options = getattr(step.pass_, "options", None)
            for key in path_options(type(options)):
                value = getattr(options, key, None)
                if not isinstance(value, str) or not value:
                    continue
                where = Path(value)
                if where.is_file():
                    self.read(where, f"the file of pass {step.name}")
                elif where.is_dir():  # a folder a pass imports modules from (rewrite rules)
                    for module in sorted(where.glob("*.py")):
                        self.read(module, f"a module of pass {step.name}")

    # -- writes --------------------------------------------------------------------------------
    def write(self, path: str | os.PathLike | None, role: str) -> None:
        """Record a file the run writes; refuse it at once when it is unusable or overlaps."""
        if path is None:
            return
        entry = _Entry(role, Path(path))
        check_output_file(entry.path, role)
        for read in self.reads:
            self._check(entry, read)
        for other in self.writes:
            if _same(entry.path, other.path):
                raise InputError(f"{entry.describe()} and {other.describe()} are the same file")
        for folder in self.folders:
            self._check_in_folder(folder, entry)
        self.writes.append(entry)

    def write_model(self, path: str | os.PathLike | None, role: str = "the output") -> None:
        """A model output; with ``in_place`` it may be the input model itself."""
        self.write(path, role)

    def reproducer(
        self, path: str | os.PathLike | None, *, explicit: bool, role: str = "--repro"
    ) -> None:
        """The folder a failing gate writes; an explicit one must be new or empty.

        The default folder (``OUT.repro``) may also hold a previous run's reproducer, which it replaces.
        """
        if path is None:
            return
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{role} {folder}: exists and is not a folder")
        if folder.is_dir():
            names = {p.name for p in folder.iterdir() if not p.name.startswith(STAGING_PREFIX)}
            if names and (explicit or not names <= set(REPRODUCER_FILES)):
                raise InputError(
                    f"{role} {folder}: the reproducer folder must be new or empty; it holds "
                    f"{', '.join(sorted(names)[:3])}{' …' if len(names) > 3 else ''}"
                )
        elif not folder.parent.is_dir():
            raise InputError(f"{role} {folder}: the folder {folder.parent} does not exist")
        entry = _Entry(f"the reproducer folder ({role})", folder)
        for other in self.reads + self.writes:
            self._check_in_folder(entry, other)
        self.folders.append(entry)

    # -- checks --------------------------------------------------------------------------------
    def _check(self, write: _Entry, read: _Entry) -> None:
        if not _same(write.path, read.path):
            return
        if (
            self.in_place
            and self.model_path is not None
            and _same(read.path, self.model_path)
            and write.role == "the output"
        ):
            return
        if read.role == "the input model" and write.role == "the output":
            raise InputError(
                f"{write.path}: the output path is the input model {read.path}; {self.hint}"
            )
        raise InputError(f"{write.describe()} would overwrite {read.describe()}")

    def _check_in_folder(self, folder: _Entry, other: _Entry) -> None:
        """A reproducer writes REPRODUCER_FILES into ``folder``: none may be a read or another write."""
        for name in REPRODUCER_FILES:
            if _same(folder.path / name, other.path):
                raise InputError(
                    f"{folder.describe()} would overwrite {other.describe()} with its {name}"
                )

    def set_model(self, model: ir.Model | None, path: str | os.PathLike | None) -> None:
        """Record the input model (the one ``in_place`` may replace) and its external data."""
        self.model_path = Path(path) if path is not None else None
        self.read_model(model, path, own=True)

    # -- commit ----------------------------------------------------------------------------------
    @property
    def committed(self) -> bool:
        return self.transaction.committed

    def commit(self) -> list[Path]:
        """Make every staged file visible at once (see :class:`surgery.model_io.Transaction`)."""
        if self.in_place:
            # the input's own data is the old data of the model it replaces: it may go once replaced
            own = set(self.model_data)
            self.transaction.protect = [p for p in self.transaction.protect if p not in own]
        return self.transaction.commit()

    def abort(self) -> None:
        self.transaction.abort()

    def paths(self, entries: Iterable[_Entry]) -> list[Path]:
        return [e.path for e in entries]
