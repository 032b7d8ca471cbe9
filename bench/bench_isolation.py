"""Cost of running ONNX Runtime in a worker process (issue 11 item 7), on the decoder benchmark.

The decoder of ``bench_static.py`` (GPT-like, dynamic batch and sequence) goes through
``surgery.apply`` with fix-shapes + make-static and every gate on (checker, ORT, parity after each
pass: three ORT sessions of the whole model plus the oracle's), once with ORT in process
(``SURGERY_ORT_ISOLATION=0``) and once in the worker, alternating, each run in a fresh
subprocess. Printed: the median wall time of each mode, the cost of isolation in percent, and
peak RSS (``VmHWM``) of the run's process and of its worker. Two layouts: weights
inline in the .onnx (the worker maps spill files written once) and in an external-data file (the
worker maps the user's file). Not part of CI::

    python bench/bench_isolation.py --decoder-mb 400 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_static import decoder


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _work(model: str, shapes: dict[str, list[int]], out: str) -> dict[str, object]:
    import surgery
    from surgery.passes.fix_shapes import FixShapes
    from surgery.passes.make_static import MakeStatic

    t0 = time.perf_counter()
    _, report = surgery.apply(model, [FixShapes(shapes=shapes), MakeStatic()], output=out)
    seconds = time.perf_counter() - t0
    assert all(s.parity_status == "ok" for s in report.steps if s.modified), report.table()
    own = _hwm_mb()  # ru_maxrss would carry the bench parent's peak over exec
    from surgery.verify import worker

    child = worker.last_peak_rss_mb or 0.0
    return {"seconds": seconds, "rss_mb": own, "worker_rss_mb": child}


def _run(model: Path, shapes: dict[str, list[int]], out: Path, isolated: bool) -> dict[str, object]:
    env = {**os.environ, "SURGERY_ORT_ISOLATION": "1" if isolated else "0"}
    cmd = [sys.executable, __file__, "--worker", str(model), json.dumps(shapes), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--worker":
        print(json.dumps(_work(argv[1], json.loads(argv[2]), argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoder-mb", type=int, default=400, help="decoder weight size in MB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode (alternating)")
    parser.add_argument(
        "--layouts", nargs="*", default=["inline", "external"], choices=["inline", "external"]
    )
    parser.add_argument(
        "--workdir", type=Path, help="where models are written (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_isolation_"))
    work.mkdir(parents=True, exist_ok=True)
    inline = work / "decoder.onnx"
    shapes = decoder(inline, args.decoder_mb)
    models = {"inline": inline}
    if "external" in args.layouts:
        import onnx

        external = work / "decoder_ext.onnx"
        onnx.save(
            onnx.load(inline),
            external,
            save_as_external_data=True,
            location="decoder_ext.onnx.data",
        )
        models["external"] = external
    print(
        f"# decoder {inline.stat().st_size / 2**20:.0f} MB, fix-shapes + make-static, gates each, median of {args.repeat}"
    )
    print(f"{'layout':<10} {'mode':<12} {'time s':>8} {'RSS MB':>8} {'worker MB':>10}")
    for layout in args.layouts:
        model = models[layout]
        runs: dict[bool, list[dict[str, object]]] = {False: [], True: []}
        for _ in range(args.repeat):
            for isolated in (False, True):
                runs[isolated].append(_run(model, shapes, work / f"out_{layout}.onnx", isolated))
        medians = {}
        for isolated, results in runs.items():
            seconds = statistics.median(float(r["seconds"]) for r in results)
            rss = max(float(r["rss_mb"]) for r in results)
            child = max(float(r["worker_rss_mb"]) for r in results)
            medians[isolated] = seconds
            mode = "worker" if isolated else "in-process"
            print(
                f"{layout:<10} {mode:<12} {seconds:>8.2f} {rss:>8.0f} {child if isolated else 0:>10.0f}"
            )
        cost = 100 * (medians[True] - medians[False]) / medians[False]
        print(
            f"{layout:<10} {'cost':<12} {cost:>+7.1f} %  (worker vs in-process wall time; target <= 10 %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
