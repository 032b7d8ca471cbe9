"""What ATC's default float16 mode does to the zoo's prepared models: overflows and keep-lists.

    python bench/zoo/precision.py [--only NAME ...] [--mode fp16] [--jobs N] [--timeout S]
                                  [--json OUT.json] [--markdown OUT.md] [--cache DIR]

Run after ``bench/zoo/run.py``: for every row whose ``out.onnx`` (surgery's compiler-ready model)
is in the cache, ``surgery precision out.onnx --data sample1.npz --mode fp16 --report r.json`` is
run as a user would (the zoo's own parity sample, so the values are the table's realistic feeds),
and the table gives, per model: whether the mode meets tolerance, how many tensors overflow
float16 (|x| > 65504), the first tensor past tolerance, how many nodes the greedy plan keeps in
float32 and whether the plan, re-emulated, meets tolerance. Each model runs in its own process with
a timeout; a timeout or a crash is a row, never a lost table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench/zoo is not a package: run.py's table, cache and child runner
from run import DEFAULT_CACHE, _last_line, _surgery, load_table  # noqa: E402


def run_one(name: str, cache: Path, mode: str, timeout: float) -> dict[str, Any]:
    """``surgery precision`` on one prepared model; the row of the table."""
    work = cache / "runs" / name
    model, sample = work / "out.onnx", work / "sample1.npz"
    row: dict[str, Any] = {"name": name}
    if not model.exists():
        row["error"] = "no out.onnx (the zoo row did not produce one)"
        return row
    report = work / f"precision-{mode}.json"
    report.unlink(missing_ok=True)
    argv = ["precision", str(model), "--mode", mode, "--report", str(report)]
    if sample.exists():
        argv += ["--data", str(sample)]
    started = time.perf_counter()
    try:
        proc = _surgery(argv, timeout)  # as a user runs it: outside the checkout, one thread
    except subprocess.TimeoutExpired:
        row["error"] = f"timed out after {timeout:.0f} s"
        return row
    row["seconds"] = round(time.perf_counter() - started, 1)
    if proc.returncode not in (0, 1) or not report.exists():
        row["error"] = f"exit {proc.returncode}: {_last_line(proc.stderr) or 'no output'}"
        return row
    data = json.loads(report.read_text())
    emulation, plan = data["emulation"], data.get("plan")
    row.update(
        nodes=data["node_count"],
        fp16_nodes=emulation["fp16_nodes"],
        ok=data["ok"],
        overflows=len(emulation["overflows"]),
        flushes=len(emulation["flushes"]),
        first_break=(
            f"{emulation['first_break']['op']} '{emulation['first_break']['node']}'"
            if emulation.get("first_break")
            else ""
        ),
        keep=len(plan["keep"]) if plan else 0,
        plan_ok=(plan["after"]["ok"] if plan else data["ok"]),
        keep_dtype=list(data.get("keep_dtype") or []),
    )
    return row


def render(rows: list[dict[str, Any]], mode: str) -> str:
    head = (
        f"| model | nodes | {mode} | overflows | flushes | first past tolerance | plan keeps (fp32) | plan meets "
        "tolerance | seconds |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | - | error: {row['error']} | | | | | | |")
            continue
        lines.append(
            f"| {row['name']} | {row['nodes']} | {'ok' if row['ok'] else 'BREAKS'} | {row['overflows']} | "
            f"{row['flushes']} | {row['first_break'] or '-'} | {row['keep']} | "
            f"{'yes' if row['plan_ok'] else 'NO'} | {row['seconds']} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]], mode: str) -> str:
    done = [r for r in rows if "error" not in r]
    breaks = [r for r in done if not r["ok"]]
    overflow = [r for r in done if r["overflows"]]
    fixed = [r for r in breaks if r["plan_ok"]]
    keeps = sorted(r["keep"] for r in breaks)
    return (
        f"{len(done)}/{len(rows)} models emulated in {mode}: {len(breaks)} break tolerance, {len(overflow)} "
        f"overflow float16; the keep-list fixes {len(fixed)}/{len(breaks)} "
        f"(nodes kept in float32: {', '.join(map(str, keeps)) or 'none'})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME")
    parser.add_argument("--mode", default="fp16", choices=("fp16", "mixed_float16"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per model (default 900)"
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    names = [e["name"] for e in load_table()]
    if args.only:
        unknown = [n for n in args.only if n not in names]
        if unknown:
            parser.error(f"unknown model(s): {', '.join(unknown)}")
        names = [n for n in names if n in args.only]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda n: run_one(n, args.cache, args.mode, args.timeout), names))
    table = render(rows, args.mode)
    print(table)
    print()
    print(summary(rows, args.mode))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(table + "\n\n" + summary(rows, args.mode) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
