"""The peers onnx-surgery is compared with, each given the same input shapes as the user gave it.

Run as ``python peers.py TOOL IN.onnx OUT.onnx 'x:1,3,224,224;y:1,10'`` (TOOL one of onnxsim,
onnxslim, polygraphy): each peer runs in its own child process so a crash or a hang is a failed
cell of the table, not a lost row. Every peer is called the way its documentation tells a user to
make a model static: onnxsim with ``overwrite_input_shapes``, onnxslim with ``input_shapes``,
Polygraphy with ``surgeon sanitize --fold-constants --override-input-shapes``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PEERS = ("onnxsim", "onnxslim", "polygraphy")


def _polygraphy() -> str:
    """The polygraphy command of this interpreter's environment, else the one on PATH (a venv
    made with --system-site-packages has the package but not the script)."""
    beside = Path(sys.executable).with_name("polygraphy")
    return str(beside) if beside.exists() else (shutil.which("polygraphy") or str(beside))


def parse_shapes(text: str) -> dict[str, list[int]]:
    """ATC syntax 'x:1,3,224,224;s:' -> {'x': [1, 3, 224, 224], 's': []}."""
    shapes: dict[str, list[int]] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, _, dims = item.rpartition(":")
        shapes[name] = [int(d) for d in dims.split(",") if d.strip()]
    return shapes


def run_peer(tool: str, source: Path, target: Path, shapes: dict[str, list[int]]) -> None:
    import onnx

    if tool == "onnxsim":
        import onnxsim

        model = onnx.load(str(source))
        names = {i.name for i in model.graph.input} - {i.name for i in model.graph.initializer}
        simplified, ok = onnxsim.simplify(
            model, overwrite_input_shapes={k: v for k, v in shapes.items() if k in names}
        )
        if not ok:
            raise RuntimeError("onnxsim: simplified model failed its own check")
        onnx.save(simplified, str(target))
    elif tool == "onnxslim":
        import onnxslim

        spec = [f"{name}:{','.join(str(d) for d in dims)}" for name, dims in shapes.items() if dims]
        slimmed = onnxslim.slim(str(source), input_shapes=spec or None)
        onnx.save(slimmed, str(target))
    elif tool == "polygraphy":
        argv = [
            _polygraphy(),
            "surgeon",
            "sanitize",
            str(source),
            "--fold-constants",
            "-o",
            str(target),
        ]
        override = [f"{name}:[{','.join(str(d) for d in dims)}]" for name, dims in shapes.items()]
        if override:
            argv += ["--override-input-shapes", *override]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not target.exists():
            lines = [
                ln
                for ln in (proc.stderr + proc.stdout).splitlines()
                if "ERROR" in ln or "Error" in ln
            ]
            raise RuntimeError(
                f"polygraphy exit {proc.returncode}: {(lines or ['no output'])[-1][:200]}"
            )
    else:
        raise ValueError(f"unknown peer {tool!r}")


if __name__ == "__main__":
    tool, src, dst, spec = sys.argv[1:5]
    try:
        run_peer(tool, Path(src), Path(dst), parse_shapes(spec))
    except Exception as exc:  # noqa: BLE001 - one line for the table, never a traceback
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"{tool}: {type(exc).__name__}: {message[:200]}", file=sys.stderr)
        sys.exit(1)
