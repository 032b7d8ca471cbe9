"""ONNX Runtime in a worker process, so that a crash of ORT is an error and not the end of the run.

ORT kernels can kill their process (an integer ``INT_MIN / -1`` raises SIGFPE, a bad index can
SIGSEGV, a failed internal check aborts). In process, that takes the user's run with it: no
message, no reproducer, exit 136. Every gate and oracle session therefore runs in one worker
process per run, started on first use, reused by consecutive sessions and killed at the end
(:func:`shutdown`, :func:`scope`, and at interpreter exit).

Weights are never copied through the pipe:

- an initializer backed by an external-data file is memory-mapped by the worker from that file;
- an in-memory initializer is written once to a spill file that the worker memory-maps; the
  spill is keyed by the tensor object, so the consecutive sessions of a run (whose passes keep
  most weights) write each tensor once, and the file is removed when the tensor is freed.

Only the light protobuf (small), the feeds and the outputs travel through the pipe. The worker
keeps nothing once a session is closed, so a session is never held twice.

The same engine (:func:`build_session`, :func:`run_session`) runs in process when isolation is
off (``SURGERY_ORT_ISOLATION=0`` or :func:`isolation`), which the bench uses to measure the cost.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import functools
import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "OrtCrash",
    "WeightSpec",
    "Worker",
    "build_session",
    "from_ort_value",
    "get_worker",
    "isolated",
    "isolation",
    "prestart",
    "run_session",
    "scope",
    "shutdown",
    "to_ort_value",
]

logger = logging.getLogger(__name__)

_FOUR_BIT = {21: "uint4", 22: "int4", 23: "float4_e2m1"}  # ONNX element types stored two per byte
_SPILL_PREFIX = "surgery-ort-"


def _ort_exceptions() -> Any:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return state


class OrtCrash(_ort_exceptions().RuntimeException):  # type: ignore[misc]
    """The ONNX Runtime worker died (a signal) while loading or running a session.

    A subclass of ORT's own ``RuntimeException``, so every caller that handles ORT failures
    (the ort gate, the oracle) handles a crash the same way, with this message.
    """

    def __init__(
        self, message: str, *, signal_name: str | None = None, returncode: int | None = None
    ) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.returncode = returncode


# -------------------------------------------------------------------------------- the engine


def _numpy_types() -> dict[int, np.dtype]:
    """ONNX element type → numpy dtype, without onnx or onnx-ir (the worker imports neither)."""
    table = {
        1: np.float32,
        2: np.uint8,
        3: np.int8,
        4: np.uint16,
        5: np.int16,
        6: np.int32,
        7: np.int64,
        8: np.object_,
        9: np.bool_,
        10: np.float16,
        11: np.float64,
        12: np.uint32,
        13: np.uint64,
        14: np.complex64,
        15: np.complex128,
    }
    out = {k: np.dtype(v) for k, v in table.items()}
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes comes with onnx
        return out
    for code, name in (
        (16, "bfloat16"),
        (17, "float8_e4m3fn"),
        (18, "float8_e4m3fnuz"),
        (19, "float8_e5m2"),
        (20, "float8_e5m2fnuz"),
        (21, "uint4"),
        (22, "int4"),
        (23, "float4_e2m1fn"),
        (24, "float8_e8m0fnu"),
    ):
        if hasattr(ml_dtypes, name):
            out[code] = np.dtype(getattr(ml_dtypes, name))
    return out


_TYPES: dict[int, np.dtype] | None = None


def _ml_dtype(onnx_type: int) -> np.dtype | None:
    global _TYPES
    if _TYPES is None:
        _TYPES = _numpy_types()
    return _TYPES.get(onnx_type)


def to_ort_value(array: np.ndarray, onnx_type: int | None = None) -> Any:
    """An ``OrtValue`` for ``array`` (zero-copy for numpy dtypes ORT knows).

    ``ml_dtypes`` arrays (bfloat16, float8) are handed over as their raw bits with the ONNX
    element type; 4-bit types (int4, uint4, float4) are packed two per byte, as ORT stores them
    (ORT reads an unpacked array silently wrong).
    """
    import onnxruntime as ort

    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    if array.dtype.kind in "biufc" and array.dtype.type.__module__ == "numpy" and onnx_type is None:
        return ort.OrtValue.ortvalue_from_numpy(array)
    if onnx_type is None:
        onnx_type = _onnx_type_of(array.dtype)
    if onnx_type in _FOUR_BIT:
        packed = _pack4(array)
        value = ort.OrtValue.ortvalue_from_shape_and_type(list(array.shape), onnx_type)
        if packed.size:
            ctypes.memmove(value.data_ptr(), packed.ctypes.data, packed.size)
        return value
    if array.dtype.type.__module__ == "numpy" and array.dtype.kind in "biufc":
        return ort.OrtValue.ortvalue_from_numpy(array)
    bits = array.view(np.dtype(f"u{array.dtype.itemsize}"))
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, onnx_type)


def _onnx_type_of(dtype: np.dtype) -> int:
    _ml_dtype(1)
    assert _TYPES is not None
    for code, known in _TYPES.items():
        if known == dtype:
            return code
    raise TypeError(f"no ONNX element type for numpy dtype {dtype}")


def _pack4(array: np.ndarray) -> np.ndarray:
    """Two 4-bit elements per byte, low nibble first (the ONNX layout)."""
    if array.dtype.itemsize != 1:
        raise TypeError(f"cannot pack {array.dtype} as a 4-bit type")
    flat = array.reshape(-1).view(np.uint8) & 0x0F
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def from_ort_value(value: Any) -> Any:
    """A numpy array for an ORT output, with the right ``ml_dtypes`` dtype where numpy has none.

    ``session.run`` returns float8 outputs as uint8 and refuses bfloat16 ones; here the bytes
    are read at the value's address and viewed with the model's element type.
    """
    if not value.is_tensor():
        return value.numpy()
    onnx_type = value.element_type()
    dtype = _ml_dtype(onnx_type)
    if dtype is not None and dtype.type.__module__ == "numpy" and dtype.kind != "O":
        return value.numpy()
    if dtype is None or dtype.kind == "O":
        return value.numpy()
    shape = tuple(value.shape())
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = value.tensor_size_in_bytes()
    raw = np.empty(nbytes, np.uint8)
    if nbytes:
        ctypes.memmove(raw.ctypes.data, value.data_ptr(), nbytes)
    if onnx_type in _FOUR_BIT:
        unpacked = np.empty(raw.size * 2, np.uint8)
        unpacked[0::2] = raw & 0x0F
        unpacked[1::2] = raw >> 4
        out = unpacked[:count].view(dtype)
        if dtype.name.startswith("int4"):  # sign-extend the nibble
            out = ((unpacked[:count].astype(np.int8) << 4) >> 4).view(np.uint8).view(dtype)
        return out.reshape(shape)
    return raw.view(dtype).reshape(shape)


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """Where the worker finds one initializer's bytes: a file region it memory-maps."""

    name: str
    path: str
    offset: int
    length: int
    onnx_type: int
    shape: tuple[int, ...]


def _map_weight(spec: WeightSpec) -> Any:
    """The ``OrtValue`` of one weight, memory-mapped from its file (copied only if misaligned)."""
    dtype = _ml_dtype(spec.onnx_type)
    if dtype is None:
        raise TypeError(f"initializer '{spec.name}': unsupported element type {spec.onnx_type}")
    if spec.length == 0:
        return to_ort_value(np.zeros(spec.shape, dtype), spec.onnx_type)
    raw: np.ndarray = np.memmap(
        spec.path, dtype=np.uint8, mode="r", offset=spec.offset, shape=(spec.length,)
    )
    if spec.onnx_type in _FOUR_BIT:
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_shape_and_type(list(spec.shape), spec.onnx_type)
        ctypes.memmove(value.data_ptr(), raw.ctypes.data, spec.length)
        return value
    if raw.ctypes.data % dtype.itemsize:
        raw = np.array(raw)  # ORT kernels may assume element alignment
    array = raw.view(dtype).reshape(spec.shape)
    return to_ort_value(array, spec.onnx_type if dtype.type.__module__ != "numpy" else None)


def build_session(
    proto: bytes,
    weights: Sequence[tuple[str, Any]],
    *,
    optimize: bool = False,
    threads: int = 0,
    folder: str | None = None,
    prepack: bool = False,
) -> Any:
    """An ORT CPU session of a light proto whose large initializers are given as ``OrtValue``s
    (``weights``, kept alive as long as the session) or as external data in ``folder``
    (memory-mapped by ORT itself).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads:
        options.intra_op_num_threads = threads
    # A gate's session runs a few samples and is closed: prepacking the MatMul/Conv weights (a copy
    # of each into MLAS's layout while the session opens) never pays back. Measured on the 1.4 GB
    # decoder: opening took 3.9 s with it and 1.6 s without; three samples 3.5 s with, 3.8 s without.
    # Prepacked kernels round differently (by an ulp), so sessions that stand for "what ORT computes
    # by default" (a deployed runtime, a test's reference) keep it: ``prepack=True``.
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if folder is not None:
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", folder
        )
    if weights:
        options.add_external_initializers([n for n, _ in weights], [v for _, v in weights])
    return ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])


def session_signature(session: Any) -> tuple[list[str], dict[str, str], list[str]]:
    inputs = session.get_inputs()
    return (
        [i.name for i in inputs],
        {i.name: i.type for i in inputs},
        [o.name for o in session.get_outputs()],
    )


def run_session(session: Any, feeds: Mapping[str, Any], wanted: Sequence[str]) -> dict[str, Any]:
    """Run ``session``; ``ml_dtypes`` feeds and outputs are converted through ``OrtValue``s."""
    plain = all(
        isinstance(v, np.ndarray) and v.dtype.type.__module__ == "numpy" for v in feeds.values()
    )
    if plain:
        types = {o.name: o.type for o in session.get_outputs()}
        if all(types.get(n) not in _EXOTIC_OUTPUTS for n in wanted):
            return dict(zip(wanted, session.run(list(wanted), dict(feeds)), strict=True))
    values = {k: v if not isinstance(v, np.ndarray) else to_ort_value(v) for k, v in feeds.items()}
    results = session.run_with_ort_values(list(wanted), values)
    return {name: from_ort_value(value) for name, value in zip(wanted, results, strict=True)}


_EXOTIC_OUTPUTS = {
    "tensor(bfloat16)",
    "tensor(float8e4m3fn)",
    "tensor(float8e4m3fnuz)",
    "tensor(float8e5m2)",
    "tensor(float8e5m2fnuz)",
    "tensor(int4)",
    "tensor(uint4)",
    "tensor(float4e2m1)",
    "tensor(float8e8m0)",
}


# -------------------------------------------------------------------------------- the child


def _child_main(fd_in: int, fd_out: int) -> None:
    """The worker's loop: open / run / close sessions until told to exit or the parent is gone."""
    from multiprocessing.connection import Connection

    _die_with_parent()
    conn_in = Connection(fd_in, writable=False)
    conn_out = Connection(fd_out, readable=False)
    sessions: dict[int, tuple[Any, list[Any]]] = {}
    while True:
        try:
            message = conn_in.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        try:
            if kind == "exit":
                conn_out.send(("ok", _peak_rss_mb()))
                return
            if kind == "open":
                _, sid, proto, specs, folder, optimize, threads, prepack = message
                values = [(spec[0], _map_weight(WeightSpec(*spec))) for spec in specs]
                session = build_session(
                    proto,
                    values,
                    optimize=optimize,
                    threads=threads,
                    folder=folder,
                    prepack=prepack,
                )
                sessions[sid] = (session, values)
                conn_out.send(("ok", session_signature(session)))
            elif kind == "run":
                _, sid, feeds, wanted = message
                conn_out.send(("ok", run_session(sessions[sid][0], feeds, wanted)))
            elif kind == "close":  # no reply: the next request waits for it anyway
                sessions.pop(message[1], None)
            else:
                conn_out.send(("error", "builtins", "ValueError", f"unknown request {kind!r}"))
        except Exception as exc:  # handed to the parent, which raises the same class
            conn_out.send(("error", type(exc).__module__, type(exc).__name__, str(exc)))


def _peak_rss_mb() -> float | None:
    """The worker's own peak RSS (``VmHWM``; ``ru_maxrss`` carries the parent's over exec)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def _die_with_parent() -> None:
    """Ask Linux to kill the worker when its parent dies (even by SIGKILL, mid-run)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# -------------------------------------------------------------------------------- the parent


def _signal_name(returncode: int | None) -> str:
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _child_path() -> list[str]:
    """The parent's import path for the worker, without the working directory.

    The worker runs ``python -I`` (no ``PYTHONPATH``, no user site, no current folder), so an
    ``onnxruntime.py`` or ``numpy.py`` lying in the user's folder is never imported.
    """
    cwd = Path.cwd().resolve()
    return [p for p in sys.path if p and Path(p).resolve() != cwd]


class _Spill:
    """In-memory tensors written once to files the worker memory-maps, keyed by tensor object."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[int, tuple[weakref.ref, Path]] = {}
        self._digests: dict[int, bytes | None] = {}
        self._count = itertools.count()
        self.bytes_written = 0

    def known(self, tensor: Any) -> Path | None:
        """The spill file of ``tensor`` when its bytes cannot have changed since it was written.

        A tensor read from an inline model (``onnx_ir.serde.TensorProtoTensor``) is a read-only
        view of its protobuf's bytes: no pass can edit it in place, so the object identity is
        proof enough. Asking such a tensor for its array copies all its bytes out of the protobuf
        (1.6 GB for the 1.4 GB decoder, per session opened): this check comes first.
        """
        from onnx_ir.serde import TensorProtoTensor

        if not isinstance(tensor, TensorProtoTensor):
            return None
        entry = self._files.get(id(tensor))
        if entry is not None and entry[0]() is tensor and entry[1].exists():
            return entry[1]
        return None

    def path_of(self, tensor: Any, data: bytes | memoryview | np.ndarray) -> Path:
        from surgery.checksum import sampled_digest

        key = id(tensor)
        entry = self._files.get(key)
        # a pass may have edited the array in place: the same object with other bytes
        digest = sampled_digest(data)
        if (
            entry is not None
            and entry[0]() is tensor
            and entry[1].exists()
            and self._digests.get(key) == digest
        ):
            return entry[1]
        path = self.folder / f"w{next(self._count)}.bin"
        with open(path, "wb") as f:
            if isinstance(data, np.ndarray):
                data.tofile(f) if data.flags.c_contiguous else f.write(
                    np.ascontiguousarray(data).tobytes()
                )
            else:
                f.write(data)
        self.bytes_written += path.stat().st_size
        try:
            ref = weakref.ref(tensor, functools.partial(self._forgotten, key, path))
        except TypeError:  # not weak-referenceable: keep the spill for this session only
            return path
        self._files[key] = (ref, path)
        self._digests[key] = digest
        return path

    def _forgotten(self, key: int, path: Path, _ref: object) -> None:
        self._files.pop(key, None)
        self._digests.pop(key, None)
        with contextlib.suppress(OSError):
            path.unlink()


class Worker:
    """One ORT worker process: sessions are opened, run and closed in it by id."""

    def __init__(self) -> None:
        _clean_stale_folders()
        self.folder = Path(tempfile.mkdtemp(prefix=f"{_SPILL_PREFIX}{os.getpid()}-"))
        self.spill = _Spill(self.folder)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._send: Any = None
        self._recv: Any = None
        self._stderr: Any = None
        self.starts = 0

    # -- process ------------------------------------------------------------------------
    def _start(self) -> None:
        from multiprocessing.connection import Connection

        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # the worker runs this file as a script: it imports numpy and onnxruntime, not surgery
        boot = (
            "import sys, runpy; sys.path[:0] = " + repr(_child_path()) + "; "
            f"sys.argv = ['surgery-ort-worker', '{to_child_r}', '{from_child_w}']; "
            f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
        )
        self._stderr = open(self.folder / "stderr.log", "ab")  # noqa: SIM115 - open for the worker's lifetime; close() closes it
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", boot],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(to_child_r, from_child_w),
                close_fds=True,
                env=env,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        self.starts += 1

    def start(self) -> None:
        """Launch the process now (it is otherwise launched by the first request)."""
        with self._lock:
            if not self.alive:
                self._reset()
                self._start()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _request(self, message: tuple, what: str) -> Any:
        with self._lock:
            if not self.alive:
                self._reset()
                self._start()
            try:
                self._send.send(message)
                reply = self._recv.recv()
            except (EOFError, OSError, BrokenPipeError):
                raise self._crashed(what) from None
        if reply[0] == "ok":
            return reply[1] if len(reply) > 1 else None
        _, module, name, text = reply
        raise _exception(module, name, text)

    def _crashed(self, what: str) -> OrtCrash:
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        name = _signal_name(code)
        last = self._stderr_tail()
        self._reset()
        message = f"onnxruntime crashed ({name}) {what}"
        if last:
            message += f"; it said: {last}"
        logger.info("onnxruntime worker died: %s", message)
        return OrtCrash(message, signal_name=name, returncode=code)

    def _stderr_tail(self) -> str:
        path = self.folder / "stderr.log"
        with contextlib.suppress(OSError):
            lines = [
                ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()
            ]
            path.write_bytes(b"")
            for line in reversed(lines):
                if "Fatal Python error" in line or line.startswith(
                    ("File ", "Current thread", "Thread ")
                ):
                    continue
                return line[:200]
        return ""

    def _reset(self) -> None:
        for conn in (self._send, self._recv):
            with contextlib.suppress(Exception):
                conn.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._stderr is not None:
            with contextlib.suppress(Exception):
                self._stderr.close()
        self._proc = self._send = self._recv = self._stderr = None

    def close(self) -> None:
        """Stop the worker and remove its spill files."""
        global last_peak_rss_mb
        if self.alive:
            with contextlib.suppress(Exception), self._lock:
                self._send.send(("exit",))
                reply = self._recv.recv()
                last_peak_rss_mb = reply[1] if len(reply) > 1 else None
                self._proc.wait(timeout=5)  # type: ignore[union-attr]
        self._reset()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- sessions -------------------------------------------------------------------------
    def open(
        self,
        proto: bytes,
        specs: Sequence[WeightSpec],
        *,
        folder: str | None,
        optimize: bool,
        threads: int,
        label: str,
        prepack: bool = False,
    ) -> tuple[int, tuple]:
        """Open a session of ``proto`` whose weights are in ``folder`` (ORT maps them) or ``specs``."""
        sid = next(self._ids)
        plain = [dataclasses.astuple(spec) for spec in specs]  # the worker does not import surgery
        signature = self._request(
            ("open", sid, proto, plain, folder, optimize, threads, prepack), f"loading {label}"
        )
        return sid, signature

    def run(
        self, sid: int, feeds: Mapping[str, Any], wanted: Sequence[str], label: str
    ) -> dict[str, Any]:
        shapes = ", ".join(
            f"{k}{list(np.shape(v))} {getattr(v, 'dtype', '')}".rstrip() for k, v in feeds.items()
        )
        return self._request(
            ("run", sid, dict(feeds), list(wanted)),
            f"running {label} on inputs {shapes or '(none)'}",
        )

    def close_session(self, sid: int) -> None:
        """Free a session in the worker; requests are served in order, so the next one starts
        only once this session's memory is released."""
        with self._lock:
            if self.alive:
                with contextlib.suppress(OSError, BrokenPipeError):
                    self._send.send(("close", sid))


def _exception(module: str, name: str, text: str) -> BaseException:
    import builtins

    state = _ort_exceptions()
    if module == state.__name__ or module.startswith("onnxruntime"):
        cls = getattr(state, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            return cls(text)
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(text)
        except Exception:
            pass
    return RuntimeError(f"{name}: {text}")


def _clean_stale_folders() -> None:
    """Remove spill folders of workers whose parent process is gone (killed runs)."""
    root = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for folder in root.glob(f"{_SPILL_PREFIX}*"):
            try:
                pid = int(folder.name[len(_SPILL_PREFIX) :].split("-", 1)[0])
            except ValueError:
                continue
            if pid == os.getpid() or _pid_alive(pid):
                continue
            shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -------------------------------------------------------------------------------- lifetime

_state_lock = threading.Lock()
#: peak RSS (MiB) of the last worker that was closed cleanly, for the bench.
last_peak_rss_mb: float | None = None
_worker: Worker | None = None
_isolated: bool | None = None


def isolated() -> bool:
    """Whether sessions run in the worker (default) or in this process."""
    if _isolated is not None:
        return _isolated
    return os.environ.get("SURGERY_ORT_ISOLATION", "1").strip().lower() not in (
        "0",
        "off",
        "false",
        "no",
    )


@contextlib.contextmanager
def isolation(enabled: bool) -> Iterator[None]:
    """Run sessions in the worker (``True``) or in process (``False``) inside the block."""
    global _isolated
    previous = _isolated
    _isolated = enabled
    try:
        yield
    finally:
        _isolated = previous


def get_worker() -> Worker:
    """The run's worker, started on first use."""
    global _worker
    with _state_lock:
        if _worker is None:
            _worker = Worker()
        return _worker


def shutdown() -> None:
    """Kill the worker (if any) and remove its spill files; the next session starts a new one."""
    global _worker
    with _state_lock:
        worker, _worker = _worker, None
    if worker is not None:
        worker.close()


_depth = 0


def prestart() -> None:
    """Launch the worker now (when isolation is on), so that its start-up (importing
    onnxruntime) overlaps the caller's own work (loading the model, the checker) instead of
    delaying the first session."""
    if isolated():
        get_worker().start()


@contextlib.contextmanager
def scope(*, prestart: bool = False) -> Iterator[None]:
    """One worker for the block (a run): reused by every session inside, killed at the end of
    the outermost scope (a worker started before the block, e.g. by :func:`prestart`, included).

    ``prestart`` launches the worker on entry (see :func:`prestart`).
    """
    global _depth
    if prestart:
        globals()["prestart"]()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            shutdown()


atexit.register(shutdown)


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), int(sys.argv[2]))
