"""Cost of the gates: the default gated run (every gate on) beside onnxsim, wall time and peak RSS.

The same models and passes as ``bench_static.py`` (its builders are reused): the GPT-like decoder
and the synthetic 100k-node chain, each run through ``fix-shapes`` + ``make-static`` with
``surgery.apply``'s DEFAULT verification (checker, signature, ORT load, parity on several samples,
branch coverage, fingerprints) and saved, and through ``onnxsim.simplify`` (which checks nothing)
and saved. Each tool runs in a fresh subprocess. Targets (issue 10): decoder ratio <= 1.0 and
chain ratio <= 0.5 (gated / onnxsim), for both wall time and peak RSS. onnxsim needs a long time on
the chain (one block folded per fixed-point iteration): ``--peer-timeout T`` stops it after T s and
prints the ratios as upper bounds (its wall time is > T; its peak RSS is at least what it had reached,
read from ``/proc`` before the kill). Not part of CI::

    python bench/bench_gates.py --decoder-mb 1400 --chains 100000 --peer-timeout 900
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_static import _peak_rss_mb, chain, decoder


def _work(tool: str, model: str, shapes: dict[str, list[int]], out: str) -> dict[str, object]:
    import onnx

    t0 = time.perf_counter()
    extra: dict[str, object] = {}
    if tool == "gated":
        import surgery
        from surgery.passes.fix_shapes import FixShapes
        from surgery.passes.make_static import MakeStatic

        _, report = surgery.apply(model, [FixShapes(shapes=shapes), MakeStatic()], output=out)
        step = report.step("make-static")
        extra = {
            "parity": step.parity_status,
            "samples": len(step.gates["parity"].samples) if "parity" in step.gates else 0,
            "gate_s": round(
                sum(v for s in report.steps for k, v in s.timings.items() if k != "pass"), 2
            ),
            "setup_s": round(sum(report.gate_setup.values()), 2),
        }
    elif tool == "onnxsim":
        import onnxsim

        simplified, ok = onnxsim.simplify(model, overwrite_input_shapes=shapes)
        onnx.save(simplified, out, save_as_external_data=simplified.ByteSize() > 1.9 * 2**30)
        extra = {"check": bool(ok)}
    else:
        raise SystemExit(f"unknown tool {tool}")
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(), **extra}


def _vmhwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _run(
    tool: str, model: Path, shapes: dict[str, list[int]], out: Path, timeout: float
) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--worker", tool, str(model), json.dumps(shapes), str(out)]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, text=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            peak = _vmhwm_mb(proc.pid)  # its peak so far: a lower bound of its peak RSS
            proc.kill()
            proc.wait()
            r: dict[str, object] = {"error": f"timeout after {timeout:.0f} s"}
            if peak is not None:
                r["peak_rss_at_timeout_mb"] = peak
            return r
        stdout.seek(0)
        stderr.seek(0)
        out_text, err_text = stdout.read(), stderr.read()
    if proc.returncode != 0:
        return {"error": (err_text.strip().splitlines() or ["failed"])[-1][:160]}
    return json.loads(out_text.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--worker":
        print(json.dumps(_work(argv[1], argv[2], json.loads(argv[3]), argv[4])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--decoder-mb", type=int, default=1400, help="decoder weight size in MB (0: skip)"
    )
    parser.add_argument("--chains", type=int, nargs="*", default=[100000], help="chain node counts")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=None,
        help="stop onnxsim after this many seconds and print the ratio as a bound (onnxsim > T s)",
    )
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_gates_"))
    work.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, Path, dict[str, list[int]], float]] = []
    if args.decoder_mb:
        path = work / "decoder.onnx"
        shapes = decoder(path, args.decoder_mb)
        cases.append((f"decoder {path.stat().st_size / 2**20:.0f} MB", path, shapes, 1.0))
    for count in args.chains:
        path = work / f"chain{count}.onnx"
        shapes = chain(path, count, "slice")
        cases.append((f"chain {count} nodes", path, shapes, 0.5))
    print(f"{'model':<22} {'tool':<8} {'time s':>8} {'peak RSS MB':>12}  notes", flush=True)
    for label, path, shapes, target in cases:
        results = {}
        for tool in ("gated", "onnxsim"):
            limit = args.peer_timeout if tool == "onnxsim" and args.peer_timeout else args.timeout
            r = _run(tool, path, shapes, work / f"{path.stem}.{tool}.out.onnx", limit)
            if tool == "onnxsim" and "error" in r and r["error"].startswith("timeout"):
                r["bound"] = limit  # onnxsim ran longer than this: the ratio is an upper bound
            results[tool] = r
            notes = r.get("error") or ", ".join(
                f"{k}={v}" for k, v in r.items() if k not in ("seconds", "peak_rss_mb")
            )
            if "peak_rss_at_timeout_mb" in r:
                notes += f" (peak RSS {r['peak_rss_at_timeout_mb']:.0f} MB when stopped)"
            secs = f"{r['seconds']:.1f}" if "seconds" in r else "-"
            rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
            print(f"{label:<22} {tool:<8} {secs:>8} {rss:>12}  {notes}", flush=True)
        a, b = results["gated"], results["onnxsim"]
        if "seconds" in a and "seconds" in b:
            wall, rss = a["seconds"] / b["seconds"], a["peak_rss_mb"] / b["peak_rss_mb"]
            verdict = "meets" if wall <= target and rss <= target else "MISSES"
            print(
                f"{label:<22} {'ratio':<8} {wall:>8.2f} {rss:>12.2f}  gated / onnxsim ({verdict} target {target})",
                flush=True,
            )
        elif "seconds" in a and "bound" in b:
            # onnxsim was stopped: its wall time is > bound and its peak RSS >= its peak so far
            wall = a["seconds"] / b["bound"]
            peak = b.get("peak_rss_at_timeout_mb")
            rss = a["peak_rss_mb"] / peak if peak else None
            verdict = "meets" if wall <= target and (rss is None or rss <= target) else "MISSES"
            rss_text = "<" + format(rss, ".2f") if rss is not None else "-"
            print(
                f"{label:<22} {'ratio':<8} {'<' + format(wall, '.2f'):>8} {rss_text:>12}  gated / onnxsim stopped at "
                f"{b['bound']:.0f} s (upper bounds; {verdict} target {target})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
