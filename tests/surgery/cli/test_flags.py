"""One flag per concept: -v/-q before or after the subcommand, --progress, -q never hides atc lines."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from surgery.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "examples" / "40_doctor" / "model.onnx"


@pytest.mark.parametrize(
    "argv",
    [
        ["-q", "apply", "make-static", "M", "-o", "o.onnx"],
        ["apply", "make-static", "M", "-o", "o.onnx", "-q"],
    ],
)
def test_quiet_before_or_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).quiet is True


def test_verbose_after_the_subcommand():
    args = build_parser().parse_args(["doctor", "m.onnx", "-vv"])
    assert args.verbose == 2
    assert build_parser().parse_args(["-v", "doctor", "m.onnx"]).verbose == 1
    assert build_parser().parse_args(["doctor", "m.onnx"]).verbose == 0


def test_quiet_keeps_the_atc_line(tmp_path, capsys):
    assert (
        main(
            [
                "-q",
                "apply",
                "make-static",
                str(MODEL),
                "-o",
                str(tmp_path / "o.onnx"),
                "--input-shape",
                "images:1,3,32,32",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("atc: atc --model=") and "parity" not in out


def _run(*argv, cwd):
    return subprocess.run(
        [sys.executable, "-m", "surgery", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_progress_always_prints_steps_into_a_pipe(tmp_path):
    proc = _run(
        "apply",
        "make-static",
        str(MODEL),
        "-o",
        "o.onnx",
        "--input-shape",
        "images:1,3,32,32",
        "--progress",
        "always",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    steps = [line for line in proc.stderr.splitlines() if line.startswith("surgery: [")]
    assert steps == ["surgery: [1/2] fix-shapes", "surgery: [2/2] make-static"]


def test_progress_auto_is_silent_in_a_pipe_and_never_is_silent(tmp_path):
    for mode in ("auto", "never"):
        proc = _run(
            "apply",
            "make-static",
            str(MODEL),
            "-o",
            "o.onnx",
            "--input-shape",
            "images:1,3,32,32",
            "--progress",
            mode,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        assert not [line for line in proc.stderr.splitlines() if line.startswith("surgery: [")], (
            proc.stderr
        )


def test_deprecated_spelling_prints_one_note(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "in.npz", images=np.zeros((1, 3, 32, 32), np.float32))
    main(["compare", str(MODEL), str(MODEL), "--inputs", str(tmp_path / "in.npz")])
    err = capsys.readouterr().err
    assert err.count("deprecated") == 1 and "use --data" in err


def test_a_closed_pipe_is_not_an_internal_error(tmp_path):
    proc = subprocess.run(
        f"{sys.executable} -m surgery passes list | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.count("\n") == 1


# --- one vocabulary in every subcommand (issue 15, item 3) -------------------------------------------

OLD = ("--json", "--soc-version", "--no-verify")


def _subcommands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[f"{prefix}{name}"] = sub
                out.update(_subcommands(sub, f"{prefix}{name} "))
    return out


def _visible(sub: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in sub._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def test_every_subcommand_speaks_one_vocabulary():
    subs = _subcommands(build_parser())
    assert {
        "apply",
        "check",
        "compare",
        "doctor",
        "extract",
        "split",
        "prepare",
        "precision",
        "passes show",
    } <= set(subs)
    for name, sub in subs.items():
        flags = _visible(sub)
        help_text = sub.format_help()
        for old in OLD:
            assert old not in flags and old not in help_text, (name, old)
        if "--verify" in flags:
            assert tuple(flags["--verify"].choices) == ("each", "end", "off"), name
        if "--inputs" in flags:  # tensor names only (extract), never an NPZ file
            assert name == "extract" and flags["--inputs"].type.__name__ == "tensor_names", name
        if "--data" in flags:
            assert flags["--data"].metavar == "NPZ", name
    for name in ("apply", "doctor", "prepare", "precision"):
        assert "--soc" in _visible(subs[name]), name
    for name in ("apply", "check", "doctor", "compare", "split", "extract", "prepare", "precision"):
        assert "--report" in _visible(subs[name]), name
    for name in ("apply", "prepare", "split", "extract"):
        assert "--verify" in _visible(subs[name]), name
    for name in ("apply", "prepare"):
        assert {"--html", "--plugin", "--data"} <= set(_visible(subs[name])), name


@pytest.mark.parametrize(
    "old, new, argv, attr, value",
    [
        (
            "--soc-version",
            "--soc",
            ["apply", "make-static", "m.onnx", "-o", "o.onnx", "--soc-version", "Ascend310"],
            "soc",
            "Ascend310",
        ),
        (
            "--soc-version",
            "--soc",
            ["prepare", "m.onnx", "-o", "o.onnx", "--soc-version", "Ascend310"],
            "soc",
            "Ascend310",
        ),
        (
            "--soc-version",
            "--soc",
            ["doctor", "m.onnx", "--soc-version", "Ascend310"],
            "soc",
            "Ascend310",
        ),
        ("--json", "--report", ["check", "m.onnx", "--json", "c.json"], "report", "c.json"),
        ("--json", "--report", ["doctor", "m.onnx", "--json", "-"], "report", "-"),
        (
            "--json",
            "--report",
            ["compare", "a.onnx", "b.onnx", "--json", "c.json"],
            "report",
            "c.json",
        ),
        (
            "--no-verify",
            "--verify off",
            ["extract", "m.onnx", "--inputs", "a", "--outputs", "b", "-o", "p.onnx", "--no-verify"],
            "verify",
            "off",
        ),
        (
            "--no-verify",
            "--verify off",
            ["apply", "make-static", "m.onnx", "-o", "o.onnx", "--no-verify"],
            "verify",
            "off",
        ),
        (
            "--inputs",
            "--data",
            ["apply", "make-static", "m.onnx", "-o", "o.onnx", "--inputs", "d.npz"],
            "data",
            Path("d.npz"),
        ),
    ],
)
def test_old_spellings_still_work_with_one_note(capsys, old, new, argv, attr, value):
    args = build_parser().parse_args(argv)
    assert getattr(args, attr) == value
    err = capsys.readouterr().err
    assert err == f"surgery: note: {old} is deprecated; use {new}\n"


def test_report_dash_prints_json_on_stdout_for_check_and_doctor(capsys):
    import json

    for command in (
        ["check", str(MODEL), "--report", "-"],
        ["doctor", str(MODEL), "--report", "-"],
    ):
        main(command)
        out = capsys.readouterr().out
        assert isinstance(json.loads(out), dict), command  # stdout is the JSON alone
    assert not Path("-").exists()


def test_output_naming_a_folder_is_refused(tmp_path, capsys):
    (tmp_path / "outdir").mkdir()
    for target in (str(tmp_path / "newdir") + "/", str(tmp_path / "outdir")):
        code = (
            main(
                [
                    "apply",
                    "make-static",
                    str(MODEL),
                    "-o",
                    target,
                    "--input-shape",
                    "images:1,3,32,32",
                ]
            )
            if not target.endswith("/")
            else None
        )
        if code is None:
            with pytest.raises(SystemExit) as exc:
                main(
                    [
                        "apply",
                        "make-static",
                        str(MODEL),
                        "-o",
                        target,
                        "--input-shape",
                        "images:1,3,32,32",
                    ]
                )
            code = exc.value.code
        assert code == 2
        assert "folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir"] and not any(
        (tmp_path / "outdir").iterdir()
    )
