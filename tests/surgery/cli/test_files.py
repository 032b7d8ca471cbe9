"""File safety on the command line: no command overwrites an input, outputs appear all together.

Every case of issue 11 where an input was overwritten without ``--in-place`` is here, with its
symlink and hard-link variants: the command exits 2 with one line naming both files, every input
keeps its bytes and no file is added to the folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.cli import main
from surgery.testing import make_model, ort_run, vi

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "01_basics"
IMAGES = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.iterdir())
    }


@pytest.fixture
def work(tmp_path) -> Path:
    """model.onnx with its weights in weights.bin (not MODEL.onnx.data), passes.toml, inputs.npz."""
    proto = onnx.load(EXAMPLE / "model.onnx")
    onnx.save(
        proto,
        tmp_path / "model.onnx",
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    shutil.copy(EXAMPLE / "passes.toml", tmp_path / "passes.toml")
    np.savez(tmp_path / "inputs.npz", images=IMAGES)
    return tmp_path


def _split_net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node(
            "Conv", ["images", "c1.w"], ["/c1/Conv_output_0"], name="/c1/Conv", pads=[1, 1, 1, 1]
        ),
        h.make_node("Sigmoid", ["/c1/Conv_output_0"], ["scores"], name="/c1/Sigmoid"),
        h.make_node("Greater", ["scores", "thr"], ["/post/mask"], name="/post/Greater"),
        h.make_node("NonZero", ["/post/mask"], ["/post/nz"], name="/post/NonZero"),
        h.make_node("Transpose", ["/post/nz"], ["hits"], name="/post/Transpose", perm=[1, 0]),
    ]
    inits = {
        "c1.w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "thr": np.array(0.8, np.float32),
    }
    return make_model(
        nodes,
        [vi("images", T.FLOAT, [1, 3, 8, 8])],
        [vi("scores", T.FLOAT, [1, 4, 8, 8]), vi("hits", T.INT64, ["n", 4])],
        inits,
        ir_version=8,
    )


def _refused(argv: list[str], folder: Path, capsys, *names: str) -> str:
    before = _digest(folder)
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(lines) == 1, (argv, err)
    for name in names:
        assert name in lines[0], (argv, lines[0])
    assert _digest(folder) == before, argv  # every input keeps its bytes, nothing was added
    return lines[0]


def test_output_onto_external_data_with_any_name(work, capsys):
    # issue 11: exit 0, weights.bin replaced, `surgery check` still passed
    p, m = str(work / "passes.toml"), str(work / "model.onnx")
    line = _refused(
        ["apply", p, m, "-o", str(work / "weights.bin")], work, capsys, "weights.bin", "model.onnx"
    )
    assert "external data" in line


def test_output_onto_the_model_and_the_pipeline(work, capsys):
    p, m = str(work / "passes.toml"), str(work / "model.onnx")
    _refused(
        ["apply", p, m, "-o", m], work, capsys, "the output path is the input model", "--in-place"
    )
    _refused(["apply", p, m, "-o", p], work, capsys, "passes.toml", "the pipeline")
    _refused(
        [
            "apply",
            p,
            m,
            "-o",
            str(work / "out.onnx"),
            "--data",
            str(work / "inputs.npz"),
            "--report",
            str(work / "inputs.npz"),
        ],
        work,
        capsys,
        "--report",
        "inputs.npz",
    )


def test_report_onto_any_input_or_the_output(work, capsys):
    p, m, o = str(work / "passes.toml"), str(work / "model.onnx"), str(work / "out.onnx")
    _refused(["apply", p, m, "-o", o, "--report", m], work, capsys, "--report", "the input model")
    _refused(["apply", p, m, "-o", o, "--report", p], work, capsys, "--report", "the pipeline")
    _refused(
        ["apply", p, m, "-o", o, "--report", str(work / "weights.bin")], work, capsys, "weights.bin"
    )
    # issue 11: `--report out.onnx` turned the result into JSON
    _refused(["apply", p, m, "-o", o, "--report", o], work, capsys, "are the same file")


def test_symlink_and_hard_link_variants(work, capsys):
    p, m = str(work / "passes.toml"), str(work / "model.onnx")
    os.symlink(work / "model.onnx", work / "link.onnx")
    os.symlink(work / "weights.bin", work / "link.bin")
    os.link(work / "model.onnx", work / "hard.onnx")
    os.link(work / "weights.bin", work / "hard.bin")
    os.link(work / "passes.toml", work / "hard.toml")
    for target in ("link.onnx", "hard.onnx"):
        _refused(["apply", p, m, "-o", str(work / target)], work, capsys, target, "model.onnx")
    for target in ("link.bin", "hard.bin"):
        _refused(["apply", p, m, "-o", str(work / target)], work, capsys, target, "weights.bin")
    _refused(
        ["apply", p, m, "-o", str(work / "out.onnx"), "--report", str(work / "hard.toml")],
        work,
        capsys,
        "hard.toml",
        "passes.toml",
    )
    _refused(
        ["check", m, "--report", str(work / "hard.bin")], work, capsys, "hard.bin", "weights.bin"
    )


def test_repro_folder_must_be_new_or_empty(work, capsys, test_passes):
    # issue 11: `--repro .` after a gate failure replaced the user's model.onnx and passes.toml
    (work / "bad.toml").write_text(
        '[[pass]]\nname = "remove-dropout"\n[[pass]]\nname = "test-perturb-weight"\n'
        'weight = "fc.weight"\n'
    )
    b, m, o = str(work / "bad.toml"), str(work / "model.onnx"), str(work / "out.onnx")
    _refused(
        ["apply", b, m, "-o", o, "--repro", str(work)], work, capsys, "--repro", "new or empty"
    )
    (work / "full").mkdir()
    (work / "full" / "notes.txt").write_text("mine\n")
    _refused(["apply", b, m, "-o", o, "--repro", str(work / "full")], work, capsys, "notes.txt")
    # a new folder is fine: the gate fails (exit 1) and the reproducer lands there
    assert main(["apply", b, m, "-o", o, "--repro", str(work / "repro"), "-q"]) == 1
    assert (work / "repro" / "model.onnx").is_file() and not (work / "out.onnx").exists()


def test_artifact_named_like_an_input(tmp_path, capsys):
    # issue 11: OUT.tail.onnx overwrote an input of that name
    onnx.save(_split_net(), tmp_path / "out.tail.onnx")
    (tmp_path / "split.toml").write_text('[[pass]]\nname = "split-postprocess"\n')
    _refused(
        [
            "apply",
            str(tmp_path / "split.toml"),
            str(tmp_path / "out.tail.onnx"),
            "-o",
            str(tmp_path / "out.onnx"),
        ],
        tmp_path,
        capsys,
        "out.tail.onnx",
        "the tail model",
        "the input model",
    )


def test_bucket_output_named_like_an_input(work, capsys):
    # issue 11: OUT.batch1.onnx overwrote an input of that name
    shutil.move(work / "model.onnx", work / "out.batch1.onnx")
    _refused(
        [
            "apply",
            str(work / "passes.toml"),
            str(work / "out.batch1.onnx"),
            "-o",
            str(work / "out.onnx"),
            "--buckets",
            "batch=1,2",
        ],
        work,
        capsys,
        "out.batch1.onnx",
        "bucket batch1",
    )


def test_json_and_emitted_files_onto_inputs(work, capsys):
    m, data = str(work / "model.onnx"), str(work / "weights.bin")
    _refused(["check", m, "--report", m], work, capsys, "--report", "the input model")
    _refused(["doctor", m, "--report", data], work, capsys, "--report", "weights.bin")
    _refused(["doctor", m, "--emit-pipeline", m], work, capsys, "--emit-pipeline", "model.onnx")
    _refused(
        ["doctor", m, "--report", str(work / "x.json"), "--emit-pipeline", str(work / "x.json")],
        work,
        capsys,
        "are the same file",
    )
    shutil.copy(work / "model.onnx", work / "b.onnx")
    _refused(
        ["compare", m, str(work / "b.onnx"), "--report", str(work / "b.onnx")],
        work,
        capsys,
        "--report",
        "model B",
    )
    _refused(["compare", m, str(work / "b.onnx"), "--report", data], work, capsys, "weights.bin")


def test_split_and_extract_outputs_onto_inputs(tmp_path, capsys):
    onnx.save(
        _split_net(),
        tmp_path / "net.onnx",
        save_as_external_data=True,
        location="w.bin",
        size_threshold=0,
    )
    net = str(tmp_path / "net.onnx")
    head, tail = str(tmp_path / "head.onnx"), str(tmp_path / "tail.onnx")
    _refused(
        ["split", net, "--head", head, "--tail", tail, "--manifest", net],
        tmp_path,
        capsys,
        "--manifest",
        "net.onnx",
    )
    _refused(
        ["split", net, "--head", str(tmp_path / "w.bin"), "--tail", tail],
        tmp_path,
        capsys,
        "--head",
        "w.bin",
    )
    _refused(
        ["split", net, "--head", head, "--tail", tail, "--manifest", head],
        tmp_path,
        capsys,
        "are the same file",
    )
    _refused(
        [
            "extract",
            net,
            "--inputs",
            "images",
            "--outputs",
            "scores",
            "-o",
            str(tmp_path / "w.bin"),
        ],
        tmp_path,
        capsys,
        "w.bin",
    )


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["-o", ""], "empty path"),
        (["-o", "OUTDIR"], "is a folder"),
        (["-o", "newdir/"], "names a folder"),
        (["-o", "missing/out.onnx"], "does not exist"),
        (["-o", "out.onnx", "--report", "OUTDIR"], "is a folder"),
        (["-o", "out.onnx", "--report", ""], "empty path"),
    ],
)
def test_unusable_output_paths(work, capsys, argv_tail, message, monkeypatch):
    (work / "OUTDIR").mkdir()
    monkeypatch.chdir(work)
    argv = ["apply", "passes.toml", "model.onnx"] + [
        a.replace("OUTDIR", str(work / "OUTDIR")) for a in argv_tail
    ]
    before = _digest(work)
    with pytest.raises(SystemExit) if argv_tail[-1] in ("", "newdir/") else _nothing():
        code = main(argv)
        assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert _digest(work) == before


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_read_only_folder_is_exit_2(work, tmp_path, capsys):
    """A folder nobody may write into: immutable (chattr +i), which holds even for root (as here)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
        if os.geteuid() == 0:
            pytest.skip("chattr +i is not available here")
        os.chmod(ro, 0o555)
    try:
        _refused(
            [
                "apply",
                str(work / "passes.toml"),
                str(work / "model.onnx"),
                "-o",
                str(ro / "out.onnx"),
            ],
            work,
            capsys,
            f"the output folder {ro} is not writable",
        )
        _refused(
            ["check", str(work / "model.onnx"), "--report", str(ro / "c.json")],
            work,
            capsys,
            "not writable",
        )
        assert list(ro.iterdir()) == []
    finally:
        subprocess.run(["chattr", "-i", str(ro)], capture_output=True)
        os.chmod(ro, 0o755)


def test_in_place_replaces_the_model_and_its_data_together(tmp_path, capsys):
    proto = onnx.load(EXAMPLE / "model.onnx")
    onnx.save(
        proto,
        tmp_path / "model.onnx",
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    shutil.copy(EXAMPLE / "passes.toml", tmp_path / "passes.toml")
    expected = ort_run(str(tmp_path / "model.onnx"), {"images": IMAGES})
    assert (
        main(
            [
                "apply",
                str(tmp_path / "passes.toml"),
                str(tmp_path / "model.onnx"),
                "--in-place",
                "-q",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    data = [n for n in names if n.startswith("model.onnx.") and n.endswith(".data")]
    # the new weights have a name the old model never used; the old data file is gone once replaced
    assert len(data) == 1 and data[0] != "model.onnx.data", names
    assert not [n for n in names if n.startswith(".surgery-staging-")]
    saved = onnx.load(tmp_path / "model.onnx", load_external_data=False)
    assert {
        e.value for t in saved.graph.initializer for e in t.external_data if e.key == "location"
    } == {data[0]}
    assert "Dropout" not in {n.op_type for n in saved.graph.node}
    np.testing.assert_allclose(
        ort_run(str(tmp_path / "model.onnx"), {"images": IMAGES})["logits"],
        expected["logits"],
        rtol=1e-5,
        atol=1e-6,
    )
    # a second in-place run goes back to the default name and removes the token one
    assert (
        main(
            [
                "apply",
                str(tmp_path / "passes.toml"),
                str(tmp_path / "model.onnx"),
                "--in-place",
                "-q",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.onnx",
        "model.onnx.data",
        "passes.toml",
    ]


def test_in_place_leaves_a_data_file_it_did_not_name(work, capsys):
    # weights.bin may be shared with another model: only files named OUT.onnx[.<token>].data are removed
    assert (
        main(["apply", str(work / "passes.toml"), str(work / "model.onnx"), "--in-place", "-q"])
        == 0
    )
    assert (work / "weights.bin").exists() and (work / "model.onnx.data").exists()
    np.testing.assert_allclose(
        ort_run(str(work / "model.onnx"), {"images": IMAGES})["logits"],
        ort_run(str(EXAMPLE / "model.onnx"), {"images": IMAGES})["logits"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_rerun_onto_the_same_output_keeps_one_data_file(work, capsys):
    p, m, o = str(work / "passes.toml"), str(work / "model.onnx"), str(work / "out.onnx")
    for _ in range(3):
        assert main(["apply", p, m, "-o", o, "-q", "--report", str(work / "r.json")]) == 0
        outs = sorted(n.name for n in work.iterdir() if n.name.startswith("out.onnx"))
        assert len(outs) == 2, outs  # out.onnx and exactly one data file
        ort_run(o, {"images": IMAGES})


# -- signals during a save of a ~200 MB model (subprocess) -----------------------------------------

ROWS = 800_000  # 800000 x 64 float32 = 205 MB of external weights


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    table = onnx.TensorProto(
        name="table", data_type=T.FLOAT, dims=[ROWS, 64], data_location=T.EXTERNAL
    )
    for key, value in (
        ("location", "big.onnx.data"),
        ("offset", "0"),
        ("length", str(ROWS * 64 * 4)),
    ):
        entry = table.external_data.add()
        entry.key, entry.value = key, value
    with open(folder / "big.onnx.data", "wb") as f:
        block = np.arange(64 * 16384, dtype=np.float32).tobytes()
        for _ in range(ROWS // 16384):
            f.write(block)
        f.write(block[: (ROWS % 16384) * 64 * 4])
    graph = h.make_graph(
        [
            h.make_node("Gather", ["table", "ids"], ["y"], name="gather"),
            h.make_node("Identity", ["y"], ["dead"], name="dead_identity"),
        ],
        "big",
        [vi("ids", T.INT64, [1, 4])],
        [vi("y", T.FLOAT, [1, 4, 64])],
        [table],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "big.onnx")
    (folder / "cleanup.toml").write_text(
        '[verify]\nchecker = "off"\nort = "off"\nparity = "off"\n[[pass]]\nname = "cleanup"\n'
    )
    return folder


def _start_and_signal(big: Path, out: Path, signum: int) -> tuple[subprocess.Popen, bool]:
    """Start `surgery apply`, send ``signum`` as soon as its staging folder exists; True if it was caught there."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "surgery",
            "apply",
            str(big / "cleanup.toml"),
            str(big / "big.onnx"),
            "-o",
            str(out),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=big,
    )  # not the checkout: its surgery/ folder would shadow the installed package
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        staged = (
            [
                p
                for p in out.parent.iterdir()
                if p.name.startswith(".surgery-staging-")
                and any(f.name.endswith(".data") for f in p.iterdir())
            ]
            if out.parent.exists()
            else []
        )
        if staged:
            proc.send_signal(signum)
            return proc, True
        time.sleep(0.0005)
    return proc, False


@pytest.mark.parametrize(
    "signum, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_interrupt_during_save_writes_nothing_and_says_so(big, tmp_path, signum, code, name):
    for _ in range(
        5
    ):  # the save of 205 MB takes a fraction of a second: catch it while it is staged
        out_dir = tmp_path / f"run{_}"
        out_dir.mkdir()
        proc, caught = _start_and_signal(big, out_dir / "out.onnx", signum)
        _, err = proc.communicate(timeout=120)
        if caught and proc.returncode == code:
            break
    else:
        pytest.fail(f"never caught the save in flight (last exit {proc.returncode}: {err})")
    assert err.strip().splitlines() == [
        f"surgery: interrupted by {name}: no output was written (inputs untouched)"
    ]
    assert list(out_dir.iterdir()) == []  # no model, no data, no staging folder


def test_sigkill_during_save_leaves_a_staging_folder_the_next_run_removes(big, tmp_path):
    for i in range(5):
        out_dir = tmp_path / f"run{i}"
        out_dir.mkdir()
        proc, caught = _start_and_signal(big, out_dir / "out.onnx", signal.SIGKILL)
        proc.communicate(timeout=120)
        if caught and proc.returncode == -signal.SIGKILL:
            break
    else:
        pytest.fail("never caught the save in flight")
    left = [p.name for p in out_dir.iterdir()]
    assert len(left) == 1 and left[0].startswith(".surgery-staging-"), (
        left
    )  # nothing visible, only staging
    code = subprocess.run(
        [
            sys.executable,
            "-m",
            "surgery",
            "apply",
            str(big / "cleanup.toml"),
            str(big / "big.onnx"),
            "-o",
            str(out_dir / "out.onnx"),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=big,
    )
    assert code.returncode == 0, code.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["out.onnx", "out.onnx.data"]
    assert (out_dir / "out.onnx.data").stat().st_size == ROWS * 64 * 4
    ids = np.array([[0, 1, ROWS - 2, ROWS - 1]], np.int64)
    np.testing.assert_array_equal(
        ort_run(str(out_dir / "out.onnx"), {"ids": ids})["y"],
        ort_run(str(big / "big.onnx"), {"ids": ids})["y"],
    )


def test_prepare_outputs_onto_inputs(work, capsys):
    m = str(work / "model.onnx")
    shape = ["--input-shape", "images:1,3,32,32", "-q"]
    os.symlink(work / "model.onnx", work / "link.onnx")
    _refused(
        ["prepare", m, "-o", str(work / "weights.bin"), *shape],
        work,
        capsys,
        "weights.bin",
        "external data",
    )
    _refused(
        ["prepare", m, "-o", str(work / "link.onnx"), *shape],
        work,
        capsys,
        "prepare never overwrites its input",
    )
    # OUT.passes.toml is written too: it may not be an input either
    shutil.copy(work / "passes.toml", work / "out.passes.toml")
    _refused(
        [
            "prepare",
            m,
            "-o",
            str(work / "out.onnx"),
            "--data",
            str(work / "out.passes.toml"),
            *shape,
        ],
        work,
        capsys,
        "out.passes.toml",
        "the pipeline it ran",
    )
    _refused(
        [
            "prepare",
            m,
            "-o",
            str(work / "out.onnx"),
            "--report",
            str(work / "passes.toml"),
            "--data",
            str(work / "passes.toml"),
            *shape,
        ],
        work,
        capsys,
        "passes.toml",
    )
