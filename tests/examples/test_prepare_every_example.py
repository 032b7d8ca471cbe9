"""``surgery prepare``, one command, on the model of every example (issue 15, "Done when").

Each example's own script builds its model in an empty folder; prepare gets only the decisions the
example needs (``--input-shape``, ``--pin``, ``--data``, ``--soc``); the result must exit 0 and a fresh
``surgery doctor`` on it must find nothing that will fail. Example 30 deploys the NPU head of
``surgery split``, so that head is what prepare gets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# id: (build command, run in the example folder with {out} the empty work folder; the model; prepare flags)
CASES: dict[str, tuple[list[str], str, list[str]]] = {
    "01_basics": ([], "{ex}/01_basics/model.onnx", ["--input-shape", "images:1,3,32,32"]),
    "02_graphsurgeon_pass": (
        [
            "-c",
            "import onnx, sys; sys.path.insert(0, '.'); from make_model import build; "
            "onnx.save(build(), sys.argv[1])",
            "{out}/block.onnx",
        ],
        "{out}/block.onnx",
        [],
    ),
    "03_user_passes": (["make_model.py", "{out}/model.onnx"], "{out}/model.onnx", []),
    "10_static_shapes_vad": (
        ["build_models.py", "{out}"],
        "{out}/vad.onnx",
        ["--input-shape", "input:1,512;state:2,1,16", "--pin", "sr=16000"],
    ),
    "10_static_shapes_paddle": (
        ["build_models.py", "{out}"],
        "{out}/paddle.onnx",
        ["--input-shape", "x:1,3,64,64"],
    ),
    "12_audio_front_end": (
        ["build_model.py", "{out}"],
        "{out}/frontend.onnx",
        ["--input-shape", "signal:1,16000"],
    ),
    "20_atc_rewrites": (["export.py", "{out}/model.onnx"], "{out}/model.onnx", []),
    "21_dynamo_opset23": (["export.py", "{out}/model.onnx"], "{out}/model.onnx", []),
    "22_real_model_fixes_detector": (["export.py", "{out}"], "{out}/detector.onnx", []),
    "22_real_model_fixes_frontend": (["export.py", "{out}"], "{out}/frontend.onnx", []),
    "30_split_nms": (
        ["detector.py", "{out}"],
        "{out}/head.onnx",
        ["--input-shape", "images:1,3,32,32"],
    ),
    "40_doctor": ([], "{ex}/40_doctor/model.onnx", ["--input-shape", "images:1,3,32,32"]),
    "50_audio_inputs_frontend": (
        ["make_models.py", "{out}"],
        "{out}/frontend.onnx",
        ["--input-shape", "waveform:1,16000"],
    ),
    "50_audio_inputs_overflow": (["make_models.py", "{out}"], "{out}/overflow.onnx", []),
    "50_precision": (
        ["export.py", "{out}"],
        "{out}/block.onnx",
        ["--data", "{out}/hidden.npz", "--soc", "Ascend310P3"],
    ),
}


def _folder(case: str) -> Path:
    return next(p for p in sorted(EXAMPLES.iterdir()) if case.startswith(p.name))


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, cwd=cwd, check=False, timeout=1800
    )


def _prepare(case: str, build: list[str], model: str, flags: list[str], tmp_path: Path) -> None:
    out = tmp_path / "work"
    out.mkdir()

    def fill(text: str) -> str:
        return text.format(out=out, ex=EXAMPLES)

    if build:
        proc = _run([fill(a) for a in build], cwd=_folder(case))
        assert proc.returncode == 0, proc.stderr[-3000:]
    if case == "30_split_nms":  # the deployment: the NPU head of the split, the NMS tail on the CPU
        proc = _run(
            [
                "-m",
                "surgery",
                "split",
                str(out / "detector_legacy.onnx"),
                "--head",
                str(out / "head.onnx"),
                "--tail",
                str(out / "tail.onnx"),
            ],
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    ready = tmp_path / "ready.onnx"
    proc = _run(
        ["-m", "surgery", "prepare", fill(model), "-o", str(ready), *map(fill, flags)], cwd=tmp_path
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("surgery: error")]
    assert proc.returncode == 0, "\n".join(errors) or proc.stderr[-3000:]
    assert "ready for ATC" in proc.stdout and "atc: atc --model=" in proc.stdout
    assert (tmp_path / "ready.passes.toml").is_file()
    doctor = _run(["-m", "surgery", "doctor", str(ready), "--report", "-"], cwd=tmp_path)
    report = json.loads(doctor.stdout)
    will_fail = [f["title"] for f in report["findings"] if f["severity"] == "will-fail"]
    assert doctor.returncode == 0 and will_fail == [], will_fail


@pytest.mark.parametrize("case", sorted(CASES))
def test_prepare_makes_the_example_ready(case, tmp_path):
    _prepare(case, *CASES[case], tmp_path)
